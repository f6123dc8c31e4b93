"""Placing a weight matrix on twin-column tiles: tile counts and target conductances.

A layer's weights ``W`` (``K`` neurons x ``N`` rows; a convolution unrolled to ``C_in*k*k`` rows)
go onto tiles of ``R`` rows x ``C`` columns, each tile holding ``C/2`` twin column pairs. Neuron
``k`` owns a pair: the ``G+`` column carries its positive weights, the ``G-`` column its negative
ones. Row tiles of one neuron sum their currents into the same integrator, so a layer has ``K``
neurons whatever its row tiling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spikec.hardware.config import HardwareConfig


@dataclass(frozen=True)
class Tiling:
    """How one layer occupies the PE."""

    rows: int  # crossbar rows used (unrolled inputs plus auxiliary rows)
    neurons: int  # twin pairs = neurons
    row_tiles: int
    col_tiles: int
    copies: int  # tile copies (conv positions in parallel)
    positions: int  # output positions evaluated per inference (1 for a linear layer)

    @property
    def tiles(self) -> int:
        return self.row_tiles * self.col_tiles * self.copies

    @property
    def runs(self) -> int:
        """Sequential window runs per inference: positions shared out over copies."""
        return math.ceil(self.positions / self.copies)

    @property
    def cells(self) -> int:
        """Programmed cells (two per weight) in all copies."""
        return 2 * self.rows * self.neurons * self.copies

    def as_dict(self) -> dict:
        return {"rows": self.rows, "neurons": self.neurons, "row_tiles": self.row_tiles,
                "col_tiles": self.col_tiles, "copies": self.copies, "positions": self.positions,
                "tiles": self.tiles, "runs": self.runs}


def tile_layer(rows: int, neurons: int, config: HardwareConfig, positions: int = 1) -> Tiling:
    """Tile counts for ``rows`` x ``neurons`` on ``tile_rows`` x ``tile_cols`` tiles.

    Conv layers (``positions > 1``) get ``min(conv_copies, positions)`` copies of their tiles.
    """
    if rows < 1 or neurons < 1 or positions < 1:
        raise ValueError(f"a layer needs rows, neurons and positions >= 1, got {rows}, {neurons}, {positions}")
    copies = min(config.conv_copies, positions) if positions > 1 else 1
    return Tiling(
        rows=rows,
        neurons=neurons,
        row_tiles=math.ceil(rows / config.tile_rows),
        col_tiles=math.ceil(neurons / config.pairs_per_tile),
        copies=copies,
        positions=positions,
    )


def quantize_unit(x: torch.Tensor, levels: int) -> torch.Tensor:
    """``q(x)``: round ``x`` in ``[0, 1]`` to the nearest of ``levels`` evenly spaced values ``0 .. 1``."""
    steps = levels - 1
    return torch.round(x.clamp(0.0, 1.0) * steps) / steps


def weight_scale(weight: torch.Tensor) -> float:
    """``w_max``: the largest magnitude of the layer's weights (1 for an all-zero layer)."""
    m = float(weight.abs().max()) if weight.numel() else 0.0
    return m if m > 0 else 1.0


def conductances(weight: torch.Tensor, config: HardwareConfig, w_max: float | None = None):
    """Target conductances of the twin columns, ``(g_pos, g_neg)``, each ``[rows, neurons]`` in siemens.

    ``G± = G_off + (G_on - G_off) * q(max(±w, 0) / w_max)`` for ``weight`` of shape
    ``[neurons, rows]``; ``w_max`` defaults to :func:`weight_scale`.
    """
    w = weight.detach().to(torch.float64).t()
    scale = weight_scale(weight) if w_max is None else float(w_max)
    span = config.g_on - config.g_off
    g_pos = config.g_off + span * quantize_unit(w.clamp(min=0) / scale, config.cell_levels)
    g_neg = config.g_off + span * quantize_unit((-w).clamp(min=0) / scale, config.cell_levels)
    return g_pos, g_neg


def effective_weight(g_pos: torch.Tensor, g_neg: torch.Tensor, config: HardwareConfig, w_max: float) -> torch.Tensor:
    """The weight a twin pair realises: ``w = (G+ - G-) * w_max / (G_on - G_off)``, shape ``[..., rows, neurons]``.

    With programmed (unvaried) conductances ``G_off`` cancels and this is the quantized weight.
    """
    return (g_pos - g_neg) * (w_max / (config.g_on - config.g_off))
