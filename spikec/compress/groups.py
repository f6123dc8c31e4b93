"""Pruning granularities as groups of weights: a mask is chosen per group and expanded to weights.

"weight": every weight is its own group. "row": one row (the last dimension, 1 x k) of a
convolution kernel, a block fine enough to prune almost like single weights yet indexed k times
more cheaply (single weights for a linear layer). "kernel": the k x k kernel joining one input
channel to one output channel of a convolution (single weights for a linear layer). "channel": a
whole output channel (a row of a linear layer).

Tile granularities follow how ``spikec.hardware`` lays a layer on crossbar tiles (see
``hardware/mapping.py``): the weight unrolled to ``[K, rows]`` (a convolution's rows are its
``C_in * kh * kw`` taps in ``unfold`` order, i.e. ``weight.reshape(K, -1)``), rows cut into tiles of
``tile_rows``, neurons into tiles of ``pairs`` twin column pairs. "tile-row": one row across one
tile's pairs (an input line the tile need not drive); "tile-col": one neuron's column pair within
one row tile; "tile": a whole tile. Groups at the edges of the layout are smaller.
:class:`Grouping` holds any granularity as a group index per weight.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TILE_GRANULARITIES = ("tile-row", "tile-col", "tile")


@dataclass(frozen=True)
class TileShape:
    """Crossbar tile geometry: ``rows`` input rows by ``pairs`` neurons (the hardware's ``neurons_per_tile``)."""

    rows: int = 128
    pairs: int = 64


@dataclass(frozen=True)
class Grouping:
    """The groups of one weight tensor: ``index`` (weight-shaped, long) names each weight's group."""

    index: torch.Tensor
    count: int

    @property
    def sizes(self) -> torch.Tensor:
        return torch.bincount(self.index.flatten(), minlength=self.count)

    def any(self, mask: torch.Tensor) -> torch.Tensor:
        """``[count]`` bool: the group holds a true entry of ``mask``."""
        out = torch.zeros(self.count, dtype=torch.float32, device=mask.device)
        return out.index_add_(0, self.index.flatten(), mask.flatten().to(torch.float32)) > 0

    def mean_abs(self, t: torch.Tensor) -> torch.Tensor:
        """``[count]`` mean absolute value of ``t`` per group."""
        out = torch.zeros(self.count, dtype=torch.float32, device=t.device)
        out.index_add_(0, self.index.flatten(), t.detach().abs().float().flatten())
        return out / self.sizes.clamp(min=1).to(out)

    def norms(self, t: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
        """``[count]`` L2 norm of ``t`` per group (differentiable; ``eps`` inside the root keeps the
        gradient finite at zero)."""
        sq = torch.zeros(self.count, dtype=t.dtype, device=t.device).index_add(0, self.index.flatten(), t.flatten() ** 2)
        return torch.sqrt(sq + eps)

    def expand(self, group_mask: torch.Tensor) -> torch.Tensor:
        """A per-group bool mask ``[count]`` as a weight-shaped mask."""
        return group_mask[self.index]


def grouping(shape, granularity: str, tile: TileShape | None = None) -> Grouping:
    """The :class:`Grouping` of a weight of ``shape`` (tile granularities use ``tile``, default 128 x 64)."""
    shape = torch.Size(shape)
    if granularity not in TILE_GRANULARITIES:
        g = group_size(shape, granularity)
        return Grouping(torch.arange(shape.numel()).reshape(shape) // g, shape.numel() // g)
    tile = tile or TileShape()
    K = shape[0]
    rows = shape[1:].numel()
    rt, kt = math.ceil(rows / tile.rows), math.ceil(K / tile.pairs)
    k = torch.arange(K).view(K, 1)
    r = torch.arange(rows).view(1, rows)
    if granularity == "tile-row":  # row r of neuron tile k // pairs
        index, count = r * kt + k // tile.pairs, rows * kt
    elif granularity == "tile-col":  # neuron k in row tile r // rows
        index, count = k * rt + r // tile.rows, K * rt
    else:
        index, count = (r // tile.rows) * kt + k // tile.pairs, rt * kt
    return Grouping(index.expand(K, rows).reshape(shape).contiguous(), int(count))


def group_size(shape: torch.Size | tuple, granularity: str) -> int:
    if granularity == "weight":
        return 1
    if granularity == "channel":
        return int(torch.Size(shape)[1:].numel())
    if granularity == "row":
        return int(torch.Size(shape)[-1]) if len(shape) > 2 else 1
    if granularity == "kernel":
        return int(torch.Size(shape)[2:].numel()) if len(shape) > 2 else 1
    raise ValueError(f"unknown granularity {granularity!r}")


def as_groups(t: torch.Tensor, granularity: str) -> torch.Tensor:
    """``t`` (a weight-shaped tensor) reshaped to ``[groups, group size]``."""
    return t.reshape(-1, group_size(t.shape, granularity))


def group_scores(t: torch.Tensor, granularity: str) -> torch.Tensor:
    """Mean absolute value of each group of ``t``."""
    return as_groups(t.detach().abs().float(), granularity).mean(1)


def expand(group_mask: torch.Tensor, shape, granularity: str) -> torch.Tensor:
    """A per-group bool mask ``[groups]`` as a weight-shaped mask."""
    g = group_size(shape, granularity)
    return group_mask.reshape(-1, 1).expand(-1, g).reshape(shape)


def prefix_within(sizes: torch.Tensor, budget: int) -> int:
    """How many leading groups (of ``sizes``, in order) fit ``budget`` weights, each to within half its
    own size. Budgets count weights, not groups: tiles at a layout's edge are small, and converting
    by the mean tile size starved a CIFAR VGG layer to 7% of its weights while its budget was 40%."""
    if budget <= 0 or sizes.numel() == 0:
        return 0
    cum = torch.cumsum(sizes.long(), 0)
    fits = 2 * cum <= 2 * int(budget) + sizes.long()
    return int(torch.cumprod(fits.long(), 0).sum())


def largest_remainder(total: int, shares: torch.Tensor, caps: torch.Tensor) -> torch.Tensor:
    """Integers ``k_i <= caps_i`` summing to ``min(total, sum caps)``, as close as possible to
    ``total * shares_i / sum(shares)``; what a capped entry cannot take goes to the others."""
    shares = shares.double().clamp(min=0)
    caps = caps.long()
    total = int(min(total, int(caps.sum())))
    out = torch.zeros_like(caps)
    free = caps > 0
    left = total
    while left > 0 and bool(free.any()):
        s = torch.where(free, shares, torch.zeros_like(shares))
        if float(s.sum()) <= 0:
            s = free.double()
        ideal = left * s / s.sum()
        room = (caps - out).double()
        take = torch.minimum(ideal, room)
        base = take.floor().long()
        rest = left - int(base.sum())
        if rest > 0:
            frac = torch.where(free & (base.double() < room), take - base.double(), torch.full_like(take, -1.0))
            order = torch.argsort(frac, descending=True, stable=True)
            extra = torch.zeros_like(base)
            eligible = order[(frac[order] >= 0)][:rest]
            extra[eligible] = 1
            base = base + extra
        out = out + base
        left = total - int(out.sum())
        free = out < caps
        if int(base.sum()) == 0:  # nothing more fits where the shares point: spread evenly
            shares = free.double()
    return out
