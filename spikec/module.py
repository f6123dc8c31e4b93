"""What every stateful spiking layer shares: a state to clear and a way to report its spikes.

``spikec.reset(model)`` and ``spikec.record(model)`` find layers by walking ``model.modules()``
and checking for :class:`SpikingModule`; nothing is kept in a global registry.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SpikeStats:
    """Per sample and neuron: how many spikes, and when the first one came (``inf`` if none).

    ``counts`` and ``first_times`` have shape ``[B, N]``; times are in the layer's time steps.
    """

    counts: torch.Tensor
    first_times: torch.Tensor


class SpikingModule(nn.Module):
    """Base of stateful spiking layers. Subclasses override ``reset_state`` and may override ``spike_stats``."""

    def reset_state(self) -> None:
        """Forget the membrane state so the next call starts fresh."""

    def spike_stats(self, output: torch.Tensor) -> SpikeStats:
        """Statistics of a spike train output ``[T, B, ...]``."""
        s = output.detach()
        T, B = s.shape[0], s.shape[1]
        s = s.reshape(T, B, -1)
        counts = s.sum(0)
        fired = s > 0
        steps = torch.arange(T, device=s.device, dtype=torch.float32).view(T, 1, 1)
        first = torch.where(fired, steps, torch.full_like(steps, float("inf")).expand_as(s)).amin(0)
        return SpikeStats(counts=counts, first_times=first)


def reset(model: nn.Module) -> nn.Module:
    """Clear the state of every spiking layer in ``model``; returns ``model``."""
    for m in model.modules():
        if isinstance(m, SpikingModule):
            m.reset_state()
    return model
