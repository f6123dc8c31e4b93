"""Pure neuron updates with explicit state: ``spikes, v = f(x, v, ...)``."""
from spikec.functional.neurons import if_multistep, if_step, lif_multistep, lif_step

__all__ = ["if_step", "lif_step", "if_multistep", "lif_multistep"]
