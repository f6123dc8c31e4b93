"""The two small layers a rate-converted network adds besides pooling: balanced IF neurons and spike scales."""
from __future__ import annotations

import torch
from torch import nn

from spikec.neurons import IF
from spikec.surrogate import Surrogate, relative_to_threshold


class BalancedIF(IF):
    """IF neuron of a converted layer: threshold = the layer's activation scale, reset by subtraction
    (default) or to zero (``reset="zero"``, the neuron NIR and most neuromorphic chips have).

    The initial membrane ``v_init_fraction * threshold`` (default one half, Bu et al. 2022) is a
    buffer, so it follows the threshold through ``state_dict``. Its surrogate gradient is measured
    in thresholds (:func:`~spikec.surrogate.relative_to_threshold`). The threshold may be a scalar or
    hold one value per channel.
    """

    def __init__(self, threshold: torch.Tensor | float, v_init_fraction: float = 0.5, surrogate: Surrogate | None = None,
                 reset: str = "subtract"):
        threshold = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        super().__init__(threshold=threshold, reset=reset, v_init=0.0, surrogate=surrogate)
        del self.v_init
        self.register_buffer("v_init", float(v_init_fraction) * self.threshold.detach().clone())

    def step_surrogate(self, threshold: torch.Tensor) -> Surrogate:
        """The surrogate in units of the threshold: the thresholds of a converted network are its
        activation scales, and fine-tuning needs the same relative gradient width in every layer."""
        return relative_to_threshold(self.surrogate, threshold)


class SpikeScale(nn.Module):
    """Multiply spikes by the activation scale they stand for, turning them into a current.

    Used where spikes meet something that cannot absorb the scale into its weights: a residual
    addition, a neuron fed by another neuron, the network output.
    """

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype)
