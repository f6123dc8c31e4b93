"""The multi-step LIF implementations the kernel benchmark times, each mapping ``x [T, N]`` to spikes.

spikec's backends and the peers (snntorch, norse, spikingjelly 2.0) run the same neuron:
``v <- 0.9 v + x``, spike at ``v >= 1``, subtract reset, from a zero membrane. A peer that is not
installed, or cannot run on this device, is left out with the reason, never silently.
spikingjelly 2.0 picks its CUDA implementation once per process from ``SJ_LIF_CUDA_IMPLEMENTATION``;
to time its Triton and torch implementations in one process, :class:`SpikingjellyChoice` swaps
the choice around each call (private attributes of spikingjelly 2.0.0, checked at start).
"""
from __future__ import annotations

import warnings

import torch

import spikec
from spikec.kernels.dispatch import backend_unavailable_reason

BETA, THRESHOLD = 0.9, 1.0

warnings.filterwarnings("ignore", category=FutureWarning)  # peers' deprecated torch.jit use


def _spikec(backend: str, device: torch.device):
    reason = backend_unavailable_reason(backend, device)
    if reason:
        return reason
    neuron = spikec.LIF(beta=BETA, threshold=THRESHOLD, backend=backend).to(device)

    def run(x):
        spikec.reset(neuron)
        return neuron(x)

    return run


def _snntorch(device: torch.device):
    try:
        import snntorch
    except ImportError as err:
        return f"snntorch is not installed ({err})"
    leaky = snntorch.Leaky(beta=BETA, threshold=THRESHOLD, reset_mechanism="subtract").to(device)

    def run(x):  # its documented idiom: a Python loop over time steps
        mem = leaky.init_leaky()
        spikes = []
        for t in range(x.shape[0]):
            spk, mem = leaky(x[t], mem)
            spikes.append(spk)
        return torch.stack(spikes)

    return run


def _norse(device: torch.device):
    try:
        import norse.torch as norse
    except ImportError as err:
        return f"norse is not installed ({err})"
    module = norse.LIF(norse.LIFParameters(v_th=torch.tensor(THRESHOLD))).to(device)

    def run(x):  # norse's multi-step LIF has a current-based synapse: its closest module to ours
        return module(x)[0]

    return run


class SpikingjellyChoice:
    """Within ``with``, spikingjelly's LIF runs its ``name`` CUDA implementation ("triton" or "torch")."""

    def __init__(self, name: str):
        import spikingjelly._ops.lif as sj_lif

        self.selection = sj_lif._selection
        if not (hasattr(self.selection, "_requested") and isinstance(getattr(self.selection, "_selections", None),
                                                                       dict)):
            raise RuntimeError("spikingjelly's implementation choice is not where 2.0.0 keeps it")
        self.name = name
        self.cache: dict = {}

    def __enter__(self):
        self.saved = (self.selection._requested, self.selection._selections)
        self.selection._requested, self.selection._selections = self.name, self.cache
        return self

    def __exit__(self, *exc):
        self.selection._requested, self.selection._selections = self.saved
        return False


def spikingjelly_lif(x: torch.Tensor) -> torch.Tensor:
    """spikingjelly's fused multi-step LIF on ``x [T, ...]``: ``decay_input=False``, ``v_reset=None`` is
    ``v <- (1 - 1/tau) v + x`` with subtract reset; the membrane in float32 (what its fused paths take)."""
    from spikingjelly.activation_based import functional, surrogate

    v = torch.zeros(x.shape[1:], dtype=torch.float32, device=x.device)
    spikes, _, _ = functional.lif_multi_step(x, v, 1 / (1 - BETA), False, THRESHOLD, None, surrogate.ATan(), False)
    return spikes


def _spikingjelly(name: str, device: torch.device):
    try:
        import spikingjelly  # noqa: F401
        from spikingjelly.activation_based import functional  # noqa: F401
        from spikingjelly.logger import logger
    except ImportError as err:
        return f"spikingjelly is not installed ({err})"
    logger.disable("spikingjelly")  # it logs every implementation choice
    if device.type != "cuda":
        if name == "triton":
            return "spikingjelly runs its Triton kernels on CUDA tensors only"
        return spikingjelly_lif  # on CPU it has one implementation
    try:
        choice = SpikingjellyChoice(name)
    except (ImportError, AttributeError, RuntimeError) as err:
        return f"cannot choose spikingjelly's {name} implementation: {err}"

    def run(x):
        with choice:
            return spikingjelly_lif(x)

    return run


def lif_methods(device: torch.device) -> tuple[dict, dict]:
    """``(methods, skipped)``: name -> callable, and name -> why it is not timed."""
    device = torch.device(device)
    makers = {
        "spikec[triton]": lambda: _spikec("triton", device),
        "spikec[cpu]": lambda: _spikec("cpu", device) if device.type == "cpu" else "the C++ kernel takes CPU tensors",
        "spikec[torch]": lambda: _spikec("torch", device),
        "snntorch Leaky loop": lambda: _snntorch(device),
        "norse LIF": lambda: _norse(device),
        "spikingjelly[triton]": lambda: _spikingjelly("triton", device),
        "spikingjelly[torch]": lambda: _spikingjelly("torch", device),
    }
    methods, skipped = {}, {}
    for name, make in makers.items():
        made = make()
        if isinstance(made, str):
            skipped[name] = made
        else:
            methods[name] = made
    return methods, skipped
