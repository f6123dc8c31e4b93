"""Spare tiles spent on copies of conv layers: the same chip area, fewer sequential runs.

A conv layer with ``P`` output positions and ``c`` copies of its tiles takes ``ceil(P / c)``
sequential window runs (position ``p`` on copy ``p % c``). On a chip of ``tile_budget`` tiles, the
tiles a network does not need at its base copies (``conv_copies``) can hold more copies, which cuts
latency and with it the control and leakage energy that scale with it. A compressed network
that frees tiles thereby turns its freed area into speed on the chip the dense network needed.

:func:`assign_copies` hands the spare tiles out greedily: each step gives the layer whose next
saving step (the fewest added copies that remove a run) saves the most run cycles per added tile
the copies it needs, while they fit. Greedy by ratio is not the knapsack optimum; it is the rule a
mapper can state and a reader can check by hand (``tests/hardware/test_copies.py``).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from spikec.errors import UsageError
from spikec.hardware.config import HardwareConfig
from spikec.hardware.mapping import Tiling


def _next_saving(positions: int, copies: int) -> int | None:
    """The fewest copies above ``copies`` that remove at least one run (``None``: one run already)."""
    runs = math.ceil(positions / copies)
    if runs <= 1:
        return None
    return math.ceil(positions / (runs - 1))


def assign_copies(tilings: Sequence[Tiling], budget: int, run_cycles: Sequence[float] | None = None,
                  names: Sequence[str] | None = None) -> list[int]:
    """Copies per layer that fit ``budget`` tiles, starting from each tiling's own copies.

    ``run_cycles``: cycles of one run of each layer (default 1 each: runs are weighed alike).
    Layers with one position (linear layers) keep their copies. Raises ``UsageError`` when the
    network does not fit the budget at its base copies.
    """
    copies = [t.copies for t in tilings]
    per_copy = [t.tiles_per_copy for t in tilings]
    cycles = [1.0] * len(tilings) if run_cycles is None else [float(c) for c in run_cycles]
    used = sum(c * t for c, t in zip(copies, per_copy))
    if used > budget:
        names = names or [str(i) for i in range(len(tilings))]
        big = max(range(len(tilings)), key=lambda i: copies[i] * per_copy[i]) if tilings else 0
        raise UsageError(f"tile budget {budget} (--tile-budget, tile_budget) is smaller than the {used} tiles the network needs at conv_copies "
                         f"(largest layer {names[big]!r}: {copies[big] * per_copy[big]} tiles)")
    spare = budget - used
    while True:
        best, best_ratio = None, 0.0
        for i, t in enumerate(tilings):
            if t.positions <= 1 or per_copy[i] == 0:
                continue
            nxt = _next_saving(t.positions, copies[i])
            if nxt is None:
                continue
            cost = (nxt - copies[i]) * per_copy[i]
            if cost > spare:
                continue
            saved = (math.ceil(t.positions / copies[i]) - math.ceil(t.positions / nxt)) * cycles[i]
            ratio = saved / cost
            if ratio > best_ratio:
                best, best_ratio = (i, nxt, cost), ratio
        if best is None:
            return copies
        i, nxt, cost = best
        copies[i] = nxt
        spare -= cost


def with_copies(crossbar, copies: int):
    """``crossbar`` with ``copies`` copies of its tiles (cells and tiles scale with them)."""
    t = crossbar.tiling
    if copies == t.copies:
        return crossbar
    cells = t.allocated_cells if t.allocated_cells < 0 else t.allocated_cells // t.copies * copies
    return dataclasses.replace(crossbar, tiling=dataclasses.replace(t, copies=int(copies), allocated_cells=cells))


def program_network(layers, config: HardwareConfig) -> list:
    """Every layer programmed (:func:`~spikec.hardware.crossbar.program_crossbar`), then, with a
    ``config.tile_budget``, the spare tiles spent on conv copies (:func:`assign_copies`, runs weighed
    by their window: ``2 S`` steps, ``3 S`` for the readout)."""
    from spikec.hardware.crossbar import program_crossbar

    xbs = [program_crossbar(layer, config) for layer in layers]
    if config.tile_budget is None:
        return xbs
    S = 2 ** config.window_bits
    cycles = [(3 if xb.layer.readout else 2) * S for xb in xbs]
    copies = assign_copies([xb.tiling for xb in xbs], int(config.tile_budget), cycles,
                           [xb.layer.name for xb in xbs])
    return [with_copies(xb, c) for xb, c in zip(xbs, copies)]
