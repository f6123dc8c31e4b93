"""Programmed crossbars: the rows of one layer, their target conductances, and per-chip copies.

A layer's crossbar rows are, in order:

1. ``N`` input rows (the unrolled weight ``W``, skip-connection rows included): row ``i`` is
   switched on at its input spike's step and off when the source window closes, so it
   integrates ``w * (1 - tau)`` (the TTFS neuron of ``docs/ttfs.md``);
2. ``n_b`` bias rows (if the layer has a bias), on for the whole source window: together they
   integrate ``b``, rounded to the pair's cell grid and spread over as many cells as its level
   count needs (:func:`~spikec.hardware.mapping.split_levels`);
3. ``n_r = max_k ceil(1 / (step_k m (L - 1)))`` ramp rows (``m = cells_per_weight``), on from the opening of the layer's own
   window until the layer stops (or, with power gating, until the pair's neuron fired). Together
   they are the slope-1 ramp of the output phase. Each is programmed to the analog target
   ``G+ = m G_off + (G_on - G_off) / (n_r step_k (L - 1))``, ``G- = m G_off`` (assumption: ramp cells are
   written with program-and-verify to that value rather than to a weight level), so the ramp
   passes through the same column pair, and a gain error of the pair scales charge and ramp alike.

4. copies of identity-shortcut rows: a shortcut's gain (one weight per neuron, often far larger
   than the conv weights beside it) does not set the pair's scale; it is spread over the row and
   ``n - 1`` copies driven by the same replayed spike (one buffer read, one drive per row), ``n``
   chosen per row by the one neuron it reaches.

Weights map to levels of the layer's :func:`~spikec.hardware.mapping.cell_grid`. Cells of tiles
that hold only zero weights are not allocated, and a row's segment of only zero weights in a
column tile is not driven there: conductance 0 (they conduct nothing, vary nothing, and no driver
reaches them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.extract import PELayer
from spikec.hardware.mapping import (
    CellGrid, Tiling, bias_rows_needed, cell_grid, effective_weight, level_conductances, split_levels, tile_sparse,
)
from spikec.hardware.variation import vary_conductances


@dataclass(frozen=True)
class Crossbar:
    """Target (programmed) conductances of one layer, ``[rows, K]`` each, and its tiling."""

    layer: PELayer
    g_pos: torch.Tensor
    g_neg: torch.Tensor
    grid: CellGrid
    bias_rows: int
    ramp_rows: int
    tiling: Tiling
    connected: torch.Tensor  # [rows, K] bool: the cell exists and is driven (its row segment in its column tile holds a nonzero weight)
    row_col_tiles: torch.Tensor  # [rows] column tiles each row's drive reaches (those where its segment holds a nonzero weight)
    dup_of: torch.Tensor  # [D] input row each replayed copy row (after the ramp rows) repeats

    @property
    def input_rows(self) -> int:
        return self.layer.rows

    @property
    def step(self) -> torch.Tensor:
        return self.grid.step

    @property
    def w_max(self) -> float:
        """Largest weight a cell of the layer can hold (the coarsest pair's full scale)."""
        return float(self.grid.step.max()) * self.grid.max_level


@dataclass(frozen=True)
class ChipLayer:
    """One layer on ``chips`` chips: conductances ``[chips, copies, rows, K]`` and what they realise.

    ``weight`` ``[chips, copies, N, K]``, ``bias`` ``[chips, copies, K]`` (zeros without a bias row)
    and ``ramp`` ``[chips, copies, K]`` (slope of the output-phase ramp; 1 on an ideal chip) are in
    SNN units.
    """

    crossbar: Crossbar
    g_pos: torch.Tensor
    g_neg: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    ramp: torch.Tensor

    @property
    def chips(self) -> int:
        return self.g_pos.shape[0]


def _gain_rows(layer: PELayer) -> torch.Tensor:
    """``[rows]`` bool: the rows of identity (gain) synapses."""
    mask = torch.zeros(layer.rows, dtype=torch.bool)
    for g in layer.groups:
        if g.kind == "gain":
            mask[g.start:g.stop] = True
    return mask


def _spread_gain_rows(levels: torch.Tensor, w: torch.Tensor, gain: torch.Tensor, step: torch.Tensor,
                      max_level: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(levels, dup_of, dup_levels)`` with each identity row's levels spread over its own copies.

    A gain row reads one source channel and reaches one neuron per position, so each row gets as
    many copies as *its* level count needs: a column with a fine step (small conv weights) no
    longer multiplies the copies of every other channel.
    """
    rows = gain.nonzero().squeeze(1)
    q = torch.round(w[:, rows].t() / step)  # [g, K]
    need = torch.ceil(q.abs().amax(1) / max_level - 1e-12).clamp(min=1).to(torch.long)  # [g]
    levels = levels.clone()
    dup_of, dup_levels = [], []
    for n in need.unique().tolist():
        pick = (need == n).nonzero().squeeze(1)
        parts = split_levels(q[pick].reshape(-1), n, max_level).reshape(n, pick.numel(), q.shape[1])
        levels[rows[pick]] = parts[0]
        if n > 1:
            dup_of.append(rows[pick].repeat(n - 1))
            dup_levels.append(parts[1:].reshape(-1, q.shape[1]))
    if not dup_of:
        return levels, torch.zeros(0, dtype=torch.long), torch.zeros(0, q.shape[1], dtype=torch.float64)
    return levels, torch.cat(dup_of), torch.cat(dup_levels)


def program_crossbar(layer: PELayer, config: HardwareConfig) -> Crossbar:
    """Rows and target conductances of ``layer`` (see the module docstring)."""
    w = layer.weight.to(torch.float64)
    gain = _gain_rows(layer)
    grid = cell_grid(w, config, ~gain if bool(gain.any()) else None, config.max_row_copies)
    step = grid.step
    levels = grid.levels_of(w).t()  # [N, K]
    dup_of = torch.zeros(0, dtype=torch.long)
    dup_levels = torch.zeros(0, layer.neurons, dtype=torch.float64)
    if bool(gain.any()):  # identity shortcuts: a gain of many levels spread over replayed copies of its row
        levels, dup_of, dup_levels = _spread_gain_rows(levels, w, gain, step, grid.max_level)
    bias_rows = 0
    parts = [levels]
    if layer.bias is not None:
        b_levels = torch.round(layer.bias.to(torch.float64) * config.late_bias / step)  # on for 1/late_bias of the window
        bias_rows = max(1, bias_rows_needed(b_levels, grid.max_level))
        parts.append(split_levels(b_levels, bias_rows, grid.max_level))
    g_pos, g_neg = level_conductances(torch.cat(parts), config)
    ramp_rows = max(1, int(math.ceil(float((1.0 / (step * grid.max_level)).max()) - 1e-12)))
    span = config.g_on - config.g_off
    base = config.cells_per_weight * config.g_off  # a ramp row has a cell in each of the pair's columns too
    unit = span / (config.cell_levels - 1)
    ramp_pos = (base + unit / (ramp_rows * step)).expand(ramp_rows, layer.neurons)
    ramp_neg = torch.full((ramp_rows, layer.neurons), base, dtype=torch.float64)
    dup_pos, dup_neg = level_conductances(dup_levels, config)
    g_pos = torch.cat([g_pos, ramp_pos, dup_pos])
    g_neg = torch.cat([g_neg, ramp_neg, dup_neg])
    nonzero = torch.cat([levels != 0, torch.ones(bias_rows + ramp_rows, layer.neurons, dtype=torch.bool),
                         dup_levels != 0])
    tiling, connected, per_row = tile_sparse(nonzero, config, layer.positions)
    zero = torch.zeros((), dtype=torch.float64)
    g_pos = torch.where(connected, g_pos, zero)
    g_neg = torch.where(connected, g_neg, zero)
    return Crossbar(layer, g_pos, g_neg, grid, bias_rows, ramp_rows, tiling, connected, per_row, dup_of)


def make_chips(crossbar: Crossbar, config: HardwareConfig, chips: int, layer_index: int,
               sigma: float | None = None) -> ChipLayer:
    """``chips`` fabricated copies of ``crossbar`` (variation from ``config``; ``sigma`` overrides it)."""
    sigma = config.sigma if sigma is None else float(sigma)
    copies = crossbar.tiling.copies
    ideal = sigma == 0 and config.sigma_chip == 0 and config.stuck_on_rate == 0 and config.stuck_off_rate == 0
    if ideal:
        shape = (chips, copies) + tuple(crossbar.g_pos.shape)
        g_pos = crossbar.g_pos.expand(shape)
        g_neg = crossbar.g_neg.expand(shape)
    else:
        g_pos, g_neg = vary_conductances(crossbar.g_pos, crossbar.g_neg, config, chips, layer_index, copies, sigma)
        zero = torch.zeros((), dtype=torch.float64)
        g_pos = torch.where(crossbar.connected, g_pos, zero)  # cells not there or not driven stay 0
        g_neg = torch.where(crossbar.connected, g_neg, zero)
    return chip_layer(crossbar, g_pos, g_neg, config)


def chip_layer(crossbar: Crossbar, g_pos: torch.Tensor, g_neg: torch.Tensor, config: HardwareConfig) -> ChipLayer:
    """The weights, bias and ramp slope realised by conductances ``[chips, copies, rows, K]``."""
    w = effective_weight(g_pos, g_neg, config, crossbar.step)
    n = crossbar.input_rows
    nb = crossbar.bias_rows
    weight = w[..., :n, :]
    bias = w[..., n:n + nb, :].sum(-2) / config.late_bias if nb else torch.zeros_like(w[..., 0, :])
    nr = crossbar.ramp_rows
    ramp = w[..., n + nb:n + nb + nr, :].sum(-2)
    if crossbar.dup_of.numel():  # copies read the same input as their row: their weights add up
        weight = weight.clone().index_add_(-2, crossbar.dup_of, w[..., n + nb + nr:, :])
    return ChipLayer(crossbar, g_pos, g_neg, weight, bias, ramp)


def ideal_chip(crossbar: Crossbar, config: HardwareConfig) -> ChipLayer:
    """One chip that realises the layer's software weights exactly (unquantized, no variation, ramp 1).

    Used for calibration targets and as the reference the hardware is checked against.
    """
    layer = crossbar.layer
    K = layer.neurons
    weight = layer.weight.to(torch.float64).t().reshape(1, 1, layer.rows, K)
    bias = (layer.bias.to(torch.float64) if layer.bias is not None else torch.zeros(K, dtype=torch.float64)).reshape(1, 1, K)
    shape = (1, 1) + tuple(crossbar.g_pos.shape)
    return ChipLayer(crossbar, crossbar.g_pos.expand(shape), crossbar.g_neg.expand(shape), weight, bias,
                     torch.ones(1, 1, K, dtype=torch.float64))
