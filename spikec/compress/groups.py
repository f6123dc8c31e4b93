"""Pruning granularities as groups of weights: a mask is chosen per group and expanded to weights.

"weight": every weight is its own group. "row": one row (the last dimension, 1 x k) of a
convolution kernel, a block fine enough to prune almost like single weights yet indexed k times
more cheaply (single weights for a linear layer). "kernel": the k x k kernel joining one input
channel to one output channel of a convolution (single weights for a linear layer). "channel": a
whole output channel (a row of a linear layer).
"""
from __future__ import annotations

import torch


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
