"""Max pooling of spike trains.

A rate-coded max pool should pass on as many spikes as its busiest input. Two spike-based rules,
both driven by the spikes each input has accumulated so far:

- ``"count"`` (default): emit a spike whenever the largest accumulated count in the window grows.
  After ``T`` steps the output has fired exactly ``max_i count_i`` times, the max of the input
  rates, so it matches the ANN's max pool of rates.
- ``"gate"`` (Rueckauer et al. 2017): pass the current spikes of the input with the largest count
  before this step (the first one on ties). When the leader changes, spikes of both inputs may pass,
  so the output can overshoot the largest rate.

The pool holds its counts between calls like a neuron does; :func:`spikec.reset` clears them. It
owns no neurons, so :func:`spikec.record` lists it with zero neurons and zero spikes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spikec.module import SpikeStats, SpikingModule

METHODS = ("count", "gate")
_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


class SpikeMaxPool(SpikingModule):
    """Spike-based max pooling over time-first input ``[T, B, C, ...]`` (1, 2 or 3 spatial dims)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
                 spatial_dims: int = 2, method: str = "count"):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"SpikeMaxPool method must be one of {METHODS}, got {method!r}")
        if spatial_dims not in _POOL:
            raise ValueError(f"SpikeMaxPool supports 1 to 3 spatial dims, got {spatial_dims}")
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode, self.spatial_dims, self.method = dilation, bool(ceil_mode), spatial_dims, method
        self.counts: torch.Tensor | None = None
        self.emitted: torch.Tensor | None = None

    @classmethod
    def like(cls, pool, method: str = "count") -> "SpikeMaxPool":
        """The spike version of an ``nn.MaxPool{1,2,3}d``."""
        dims = int(type(pool).__name__[-2])
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, dims, method)

    def reset_state(self) -> None:
        self.counts = None
        self.emitted = None

    def _pool(self, x: torch.Tensor, return_indices: bool = False):
        return _POOL[self.spatial_dims](x, self.kernel_size, self.stride, self.padding, self.dilation,
                                        self.ceil_mode, return_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 3:
            raise ValueError(f"SpikeMaxPool expects [T, B, C, ...] with {self.spatial_dims} spatial dims, "
                             f"got shape {tuple(x.shape)}")
        counts = self.counts if self.counts is not None else torch.zeros_like(x[0])
        out = []
        if self.method == "count":
            emitted = self.emitted if self.emitted is not None else self._pool(counts)
            for t in range(x.shape[0]):
                counts = counts + x[t]
                running_max = self._pool(counts)
                out.append(running_max - emitted)
                emitted = running_max
            self.emitted = emitted.detach()
        else:
            for t in range(x.shape[0]):
                _, leader = self._pool(counts.detach(), return_indices=True)
                out.append(x[t].flatten(2).gather(2, leader.flatten(2)).view_as(leader))
                counts = counts + x[t]
        self.counts = counts.detach()
        return torch.stack(out)

    def spike_stats(self, output: torch.Tensor) -> SpikeStats:
        """A pool owns no neurons: no counts, no first-spike times."""
        empty = output.new_zeros(output.shape[1], 0)
        return SpikeStats(counts=empty, first_times=empty)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"method={self.method!r}")
