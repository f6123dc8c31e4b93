"""The two small layers a rate-converted network adds besides pooling: balanced IF neurons and spike scales."""
from __future__ import annotations

import torch
from torch import nn

from spikec.neurons import IF
from spikec.surrogate import Surrogate


class BalancedIF(IF):
    """IF neuron of a converted layer: threshold = the layer's activation scale, reset by subtraction.

    The initial membrane ``v_init_fraction * threshold`` (default one half, Bu et al. 2022) is a
    buffer, so it follows the threshold through ``state_dict``. The threshold may be a scalar or
    hold one value per channel.
    """

    def __init__(self, threshold: torch.Tensor | float, v_init_fraction: float = 0.5, surrogate: Surrogate | None = None):
        threshold = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        super().__init__(threshold=threshold, reset="subtract", v_init=0.0, surrogate=surrogate)
        del self.v_init
        self.register_buffer("v_init", float(v_init_fraction) * self.threshold.detach().clone())


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
