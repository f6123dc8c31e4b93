"""Placing a weight matrix on twin-column tiles: the cell grid, target conductances, tile counts.

A layer's weights ``W`` (``K`` neurons x ``N`` rows; a convolution unrolled to ``C_in*k*k`` rows)
go onto tiles of ``R`` rows x ``C`` columns, each tile holding ``C/2`` twin column pairs. Neuron
``k`` owns a pair: the ``G+`` column carries its positive weights, the ``G-`` column its negative
ones. Row tiles of one neuron sum their currents into the same integrator, so a layer has ``K``
neurons whatever its row tiling.

**The cell grid** (:func:`cell_grid`). A cell holds one of ``L = cell_levels`` conductances
``G_off + l * (G_on - G_off) / (L - 1)``, ``l = 0 .. L-1``. A weight's ``G+`` (and ``G-``) is
``m = cells_per_weight`` cells on parallel columns into the same integrator (unary slicing:
``m (L - 1)`` levels a side, ``2m`` columns per neuron); pair ``k`` realises ``w = (l+ - l-) * step_k``
with ``l`` the summed level of the cells. Each pair has its own ``step_k`` (per-column scale: the pair's
ramp rows and its firing threshold are set for it, see ``docs/hardware-model.md``):

- if the column's weights already sit on a uniform grid of at most ``m (L - 1)`` steps a side (a
  network quantized to k bits with ``2^(k-1) - 1 <= m (L - 1)``, per tensor or per output channel,
  e.g. by ``spikec compress --bits k``), the cell grid is that grid, refined by the largest whole
  factor that keeps the column's largest weight within ``m (L - 1)`` levels: the weights map exactly;
- otherwise ``step_k = max_i |W_ki| / (m (L - 1))`` and weights round to the nearest level.

Biases do not set the scale: they go on as many bias rows as their level count needs (one
bias current of many cells), rounded to the same grid. Per-layer scaling let one large bias or
weight set the step of the whole layer, which rounded most weights of a CIFAR network to zero.

**Tiles.** Tile ``(r, c)`` holds rows ``r*R ..`` of column pairs ``c*C/2 ..``. A tile whose cells
would all hold weight zero is not allocated (no cells, no leakage; its rows' drivers do not
reach it), so pruned or grouped layers use fewer tiles. Within a tile, a row whose segment (its
cells in that column tile) holds only zeros is not driven there (a per-tile row-enable bit): its
cells conduct nothing and its driver is not charged. With ``row_packing`` each column tile holds
only its rows with a nonzero segment, packed (a row address table, read per drive, routes the input
spikes), so rows pruned per column tile (``tile-row`` groups) free tiles too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spikec.hardware.config import HardwareConfig

# a column whose largest weight is below this fraction of the layer's largest gets this floor as
# its full scale (its pair's threshold/ramp setting has a limited range, and the ramp rows grow as 1/step)
MIN_COLUMN_SCALE = 1.0 / 64
_GRID_TOL = 1e-4  # |w/step - round(w/step)| below this counts as on the grid (float32 weights)


@dataclass(frozen=True)
class CellGrid:
    """Per twin pair, the weight of one conductance level, and whether the weights sit on it exactly."""

    step: torch.Tensor  # [K] SNN units per level
    levels: int  # conductance levels of one cell
    on_grid: torch.Tensor  # [K] bool: every weight of the column is a whole number of steps within range
    cells: int = 1  # cells per weight and sign (parallel columns into the same integrator)

    @property
    def max_level(self) -> int:
        return self.cells * (self.levels - 1)

    @property
    def exact(self) -> bool:
        return bool(self.on_grid.all())

    def levels_of(self, w: torch.Tensor) -> torch.Tensor:
        """Signed integer levels of ``w [K, rows]`` (rounded to the grid, clipped to ``±(L-1)``)."""
        q = torch.round(w.to(torch.float64) / self.step.view(-1, 1))
        return q.clamp(-self.max_level, self.max_level)


def grid_step(weight: torch.Tensor, max_level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(step [K], on_grid [K])``: the coarsest uniform grid each row of ``weight [K, N]`` sits on.

    A grid of at most ``max_level`` steps a side that holds a column puts its largest weight on a
    whole level ``n <= max_level``, so its step is ``max |w| / n``, and every ratio ``|w| / max |w|``
    is a fraction ``p / d`` with ``d`` dividing ``n``. The smallest such ``d`` of each weight is a
    convergent denominator of its continued fraction (convergents are the best approximations), so
    the coarsest grid has ``n = lcm`` of those denominators: found in a few dozen vectorised steps,
    however many levels the cells have. The grid is then checked (all weights whole multiples of the
    step within ``1e-4`` of a step). Columns on none get ``step = 0`` and ``on_grid = False``; all-zero
    columns too.
    """
    w = weight.detach().to(torch.float64).abs()
    K = w.shape[0]
    col_max = w.amax(1) if w.shape[1] else torch.zeros(K, dtype=torch.float64)
    step = torch.zeros(K, dtype=torch.float64)
    live = col_max > 0
    if not bool(live.any()):
        return step, torch.zeros(K, dtype=torch.bool)
    r = w[live] / col_max[live].view(-1, 1)  # in [0, 1]
    denom = _smallest_denominators(r, max_level)  # [K', N] int64, 0 where none <= max_level
    while denom.shape[1] > 1:  # pairwise lcm down the row: log2(N) steps
        if denom.shape[1] % 2:
            denom = torch.cat([denom, torch.ones_like(denom[:, :1])], 1)
        denom = torch.lcm(denom[:, 0::2], denom[:, 1::2])
        denom = torch.where(denom > max_level, torch.zeros_like(denom), denom)  # lcm(0, d) = 0: off grid
    n = denom[:, 0]
    ok = n > 0
    s = col_max[live] / n.clamp(min=1).to(torch.float64)
    q = r * n.to(torch.float64).view(-1, 1)
    ok &= ((q - torch.round(q)).abs() <= _GRID_TOL).all(1)
    idx = live.nonzero().squeeze(1)
    step[idx[ok]] = s[ok]
    found = torch.zeros(K, dtype=torch.bool)
    found[idx[ok]] = True
    return step, found


def _smallest_denominators(r: torch.Tensor, max_level: int, iterations: int = 64) -> torch.Tensor:
    """Per element of ``r`` (in ``[0, 1]``) the smallest ``d <= max_level`` with ``|d r - round(d r)| <= 1e-4``; 0 if none."""
    x = r.clone()
    p_prev, p = torch.zeros_like(r), torch.ones_like(r)  # p_{-2}, p_{-1}
    q_prev, q = torch.ones_like(r), torch.zeros_like(r)  # q_{-2}, q_{-1}
    result = torch.zeros(r.shape, dtype=torch.int64)
    todo = torch.ones(r.shape, dtype=torch.bool)
    for _ in range(iterations):
        a = torch.floor(x)
        p_prev, p = p, a * p + p_prev
        q_prev, q = q, a * q + q_prev
        hit = todo & (q >= 1) & ((q * r - p).abs() <= _GRID_TOL)
        result = torch.where(hit, q.to(torch.int64), result)
        todo &= ~hit & (q <= max_level)
        if not bool(todo.any()):
            break
        frac = x - a
        x = torch.where(frac > 1e-12, 1.0 / frac.clamp(min=1e-12), torch.full_like(x, 1e12))
    return torch.where(result <= max_level, result, torch.zeros_like(result))


def cell_grid(weight: torch.Tensor, config: HardwareConfig, scale_rows: torch.Tensor | None = None,
              row_budget: int | None = None) -> CellGrid:
    """The cell grid of a layer with weights ``[K, rows]`` (SNN units) on ``config``'s cells.

    The one definition shared by the mapping and by tools that quantize for the PE: a network whose
    every column sits on a uniform grid of at most ``cell_levels - 1`` steps a side maps exactly.
    ``scale_rows`` (``[rows]`` bool) picks the rows that set the scale; the crossbar spreads the
    others (identity shortcuts, whose one gain per neuron would otherwise coarsen the whole column)
    over as many replayed rows as they need.

    A column on an exact grid is refined to the finest grid that still holds its largest weight,
    but only as far as the ramp rows the layer needs anyway allow: a weak column (its largest weight one
    4-bit step) refined to full range would need ``max_level`` times the ramp of its unrefined grid,
    and every column of the layer would pay for those rows in leakage.

    An all-zero column (a pruned neuron) has no weight to set its scale: it takes the coarsest
    step of the layer's other columns (full scale 1 if there are none), so it never needs more
    ramp rows (``1 / (step m (L - 1))``) than they do; its bias rounds to that step.

    ``row_budget`` (``config.max_row_copies``): each step is at least ``max(1, |gain|) / (m (L-1) row_budget)``,
    so the pair's slope-1 ramp and its largest non-scale weight (a shortcut gain) fit in that many rows.
    An exact column is refined only down to that floor (it stays exact); a column whose own grid is
    finer than the floor is coarsened to it and is no longer on an exact grid.
    """
    L = config.cells_per_weight * (config.cell_levels - 1) + 1  # levels of one weight sign
    w = weight.detach().to(torch.float64)
    if scale_rows is not None and bool(scale_rows.any()):
        w = w[:, scale_rows]
    col_max = w.abs().amax(1) if w.shape[1] else torch.zeros(w.shape[0], dtype=torch.float64)
    layer_max = float(col_max.max()) if col_max.numel() else 0.0
    layer_max = layer_max if layer_max > 0 else 1.0
    scaled = torch.clamp(col_max, min=MIN_COLUMN_SCALE * layer_max) / (L - 1)
    exact_step, on_grid = grid_step(w, L - 1)
    on_grid &= col_max >= MIN_COLUMN_SCALE * layer_max  # its grid is within the pair's range
    zero = col_max == 0
    floor = None  # with a row budget: the finest step whose ramp and shortcut fit in it
    if row_budget is not None:
        others = weight.detach().to(torch.float64)
        if scale_rows is not None and bool(scale_rows.any()):
            others = others[:, ~scale_rows]
        need = others.abs().amax(1).clamp(min=1.0) if others.shape[1] else torch.ones_like(col_max)
        floor = need / ((L - 1) * int(row_budget))
    # an exact grid is refined to the finest one that still holds the column's largest weight (full
    # range), but no further than the ramp rows the layer needs anyway (see _ramp_bound_refinement)
    # and than the row budget allows (a column refined past it would be coarsened off its grid)
    refine = torch.floor((L - 1) * exact_step / col_max.clamp(min=1e-300) + 1e-9).clamp(min=1)
    refine = _ramp_bound_refinement(refine, exact_step, on_grid, scaled if floor is None else torch.maximum(scaled, floor),
                                    col_max, L - 1)
    if floor is not None:
        fits = torch.floor(exact_step / floor + 1e-9).clamp(min=1)
        fits = torch.where(exact_step / fits < floor * (1 - 1e-12), (fits - 1).clamp(min=1), fits)
        refine = torch.minimum(refine, fits)
    step = torch.where(on_grid, exact_step / refine, scaled)
    if bool(zero.any()):
        coarsest = float(step[~zero].max()) if bool((~zero).any()) else 1.0 / (L - 1)
        step = torch.where(zero, torch.full_like(step, coarsest), step)
    if floor is not None:
        coarsened = step < floor * (1 - 1e-12)
        step = torch.where(coarsened, floor, step)
        on_grid = on_grid & ~coarsened
    return CellGrid(step, config.cell_levels, on_grid | zero, config.cells_per_weight)


def _ramp_need(step: torch.Tensor, max_level: int) -> torch.Tensor:
    """Ramp rows (before rounding up) a pair of grid ``step`` needs for its slope-1 ramp."""
    return 1.0 / (step * max_level)


def _ramp_bound_refinement(refine: torch.Tensor, exact_step: torch.Tensor, on_grid: torch.Tensor,
                           scaled: torch.Tensor, col_max: torch.Tensor, max_level: int) -> torch.Tensor:
    """The refinement of each exact column, capped so that it needs no more ramp than the layer has.

    The ramp rows are shared by every pair of the layer and each of them leaks through every column's
    cells, so the layer pays for the pair that needs the most. Refining a column whose largest weight
    is one 4-bit step to full range multiplies its ramp by up to ``max_level``: on a channel-pruned,
    4-bit digits VGG those columns set up to 390 ramp rows per layer (at most 77 before compression) and
    the network cost 25% more energy than the dense one. An exact grid holds its weights at any
    refinement, so refining stops at the ramp the layer needs anyway: that of its off-grid columns, of
    its exact columns unrefined, and of its strongest exact column refined to full range. The bound is
    taken before rounding up to whole rows, so the grid scales with the weights (a quantizer that sees
    the weights before an average pool is folded into them finds the same refinements).
    """
    live = col_max > 0
    exact = live & on_grid
    if not bool(exact.any()):
        return refine
    need = [_ramp_need(exact_step[exact], max_level)]  # unrefined: the coarsest exact grid
    off = live & ~on_grid
    if bool(off.any()):
        need.append(_ramp_need(scaled[off], max_level))
    strongest = int(torch.where(exact, col_max, torch.zeros_like(col_max)).argmax())
    need.append(_ramp_need(exact_step[strongest:strongest + 1] / refine[strongest], max_level))
    bound = float(torch.cat(need).max()) * (1 + 1e-9)
    cap = torch.floor(bound * exact_step * max_level).clamp(min=1)
    return torch.where(exact, torch.minimum(refine, cap), refine)


def on_cell_grid(weight: torch.Tensor, config: HardwareConfig) -> bool:
    """Whether ``weight [K, rows]`` maps onto ``config``'s cells without rounding."""
    return cell_grid(weight, config).exact


def bias_rows_needed(bias_levels: torch.Tensor, max_level: int) -> int:
    """Bias rows for integer bias levels ``[K]``: each row's cell holds at most ``max_level`` of them."""
    m = float(bias_levels.abs().max()) if bias_levels.numel() else 0.0
    return int(math.ceil(m / max_level - 1e-12)) if m > 0 else 0


def split_levels(levels: torch.Tensor, rows: int, max_level: int) -> torch.Tensor:
    """Integer levels ``[K]`` spread over ``rows`` cells each (``[rows, K]``), as evenly as whole levels allow."""
    if rows == 0:
        return torch.zeros(0, levels.numel(), dtype=torch.float64)
    mag = levels.abs()
    base = torch.floor(mag / rows)
    extra = mag - base * rows  # the first `extra` rows get one level more
    r = torch.arange(rows, dtype=torch.float64).view(-1, 1)
    parts = base.view(1, -1) + (r < extra.view(1, -1)).to(torch.float64)
    return parts * torch.sign(levels).view(1, -1)


def level_conductances(levels: torch.Tensor, config: HardwareConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g_pos, g_neg)`` of signed integer levels (any shape): ``m G_off + l (G_on - G_off) / (L - 1)``.

    With ``m = cells_per_weight`` cells a side the conductance is their sum (they share row and integrator).
    """
    unit = (config.g_on - config.g_off) / (config.cell_levels - 1)
    base = config.cells_per_weight * config.g_off
    g_pos = base + unit * levels.clamp(min=0)
    g_neg = base + unit * (-levels).clamp(min=0)
    return g_pos, g_neg


def effective_weight(g_pos: torch.Tensor, g_neg: torch.Tensor, config: HardwareConfig, step) -> torch.Tensor:
    """The weight a twin pair realises: ``w = (G+ - G-) * step_k * (L - 1) / (G_on - G_off)``, ``[..., rows, K]``.

    ``G+`` and ``G-`` are the summed conductances of a weight's cells.

    ``step``: a number or ``[K]``. With programmed (unvaried) conductances ``G_off`` cancels and
    this is the level difference times the step.
    """
    s = torch.as_tensor(step, dtype=torch.float64)
    return (g_pos - g_neg) * (s * ((config.cell_levels - 1) / (config.g_on - config.g_off)))


# ---------------------------------------------------------------- tiles

@dataclass(frozen=True)
class Tiling:
    """How one layer occupies the PE."""

    rows: int  # crossbar rows used (unrolled inputs plus auxiliary rows)
    neurons: int  # twin pairs = neurons
    row_tiles: int
    col_tiles: int
    copies: int  # tile copies (conv positions in parallel)
    positions: int  # output positions evaluated per inference (1 for a linear layer)
    occupied: int = -1  # tiles of one copy holding a nonzero cell (-1: all row_tiles * col_tiles)
    allocated_cells: int = -1  # cells in allocated tiles, all copies (-1: every cell of the dense layout)
    address_bits: int = 0  # bits of a row address table entry, read per drive of a packed input row (0: fixed layout)

    @property
    def tiles_per_copy(self) -> int:
        return self.row_tiles * self.col_tiles if self.occupied < 0 else self.occupied

    @property
    def tiles(self) -> int:
        return self.tiles_per_copy * self.copies

    @property
    def runs(self) -> int:
        """Sequential window runs per inference: positions shared out over copies."""
        return math.ceil(self.positions / self.copies)

    @property
    def cells(self) -> int:
        """Programmed cells (two per weight and cell slice) in all copies, allocated tiles only."""
        if self.allocated_cells < 0:
            return 2 * self.rows * self.neurons * self.copies
        return self.allocated_cells

    def as_dict(self) -> dict:
        return {"rows": self.rows, "neurons": self.neurons, "row_tiles": self.row_tiles,
                "col_tiles": self.col_tiles, "copies": self.copies, "positions": self.positions,
                "tiles": self.tiles, "dense_tiles": self.row_tiles * self.col_tiles * self.copies, "runs": self.runs,
                "address_bits": self.address_bits}


def tile_layer(rows: int, neurons: int, config: HardwareConfig, positions: int = 1) -> Tiling:
    """Tile counts for ``rows`` x ``neurons`` on ``tile_rows`` x ``tile_cols`` tiles, every tile allocated.

    Conv layers (``positions > 1``) get ``min(conv_copies, positions)`` copies of their tiles.
    """
    if rows < 1 or neurons < 1 or positions < 1:
        raise ValueError(f"a layer needs rows, neurons and positions >= 1, got {rows}, {neurons}, {positions}")
    copies = min(config.conv_copies, positions) if positions > 1 else 1
    return Tiling(
        rows=rows,
        neurons=neurons,
        row_tiles=math.ceil(rows / config.tile_rows),
        col_tiles=math.ceil(neurons / config.neurons_per_tile),
        copies=copies,
        positions=positions,
    )


def occupied_tiles(nonzero: torch.Tensor, config: HardwareConfig) -> torch.Tensor:
    """``[row_tiles, col_tiles]`` bool: which tiles hold a nonzero cell, from ``nonzero [rows, K]``."""
    return _any_per_row_tile(row_segments(nonzero, config), config.tile_rows)


def row_segments(nonzero: torch.Tensor, config: HardwareConfig) -> torch.Tensor:
    """``[rows, col_tiles]`` bool: row ``i`` holds a nonzero cell among column tile ``c``'s neurons (its
    segment there is driven; an all-zero segment's driver stays off)."""
    rows, K = nonzero.shape
    C = config.neurons_per_tile
    ct = math.ceil(K / C)
    padded = torch.zeros(rows, ct * C, dtype=torch.bool)
    padded[:, :K] = nonzero
    return padded.view(rows, ct, C).any(2)


def _any_per_row_tile(seg: torch.Tensor, R: int) -> torch.Tensor:
    """``[row_tiles, col_tiles]``: some row of the row tile has its segment set."""
    rows, ct = seg.shape
    rt = math.ceil(rows / R)
    padded = torch.zeros(rt * R, ct, dtype=torch.bool)
    padded[:rows] = seg
    return padded.view(rt, R, ct).any(1)


def _block_sizes(n: int, block: int) -> torch.Tensor:
    """Sizes of the blocks of ``block`` that cover ``n`` (the last may be short)."""
    return (n - torch.arange(0, n, block)).clamp(max=block)


def tile_sparse(nonzero: torch.Tensor, config: HardwareConfig, positions: int = 1):
    """``(Tiling, connected [rows, K] bool, col_tiles_per_row [rows])`` for the nonzero pattern ``[rows, K]``.

    A row's driver reaches only the column tiles where its segment holds a nonzero cell, so
    ``connected`` (the cell exists and is driven) is the nonzero segments; the other cells conduct
    nothing. Tiles: with the fixed layout (tile ``(r, c)`` holds rows ``r*R ..``) the tiles holding a
    nonzero cell; with ``config.row_packing`` each column tile keeps only its nonzero segments,
    packed into ``ceil(n_c / R)`` row tiles, and the layer needs a row address table (:func:`row_address_bits`).
    """
    rows, K = nonzero.shape
    base = tile_layer(rows, K, config, positions)
    R, C = config.tile_rows, config.neurons_per_tile
    seg = row_segments(nonzero, config)
    connected = seg.repeat_interleave(C, 1)[:, :K]
    per_row = seg.sum(1).to(torch.float64)
    neurons = _block_sizes(K, C)  # per column tile
    if config.row_packing:  # cells only where a segment is kept
        kept = seg.sum(0)
        occupied = int(((kept + R - 1) // R).sum())
        present = int((kept * neurons).sum())
        table = row_address_bits(kept)
    else:  # every cell of a tile holding a nonzero cell
        occ = _any_per_row_tile(seg, R)
        occupied = int(occ.sum())
        present = int((occ * _block_sizes(rows, R).unsqueeze(1) * neurons.unsqueeze(0)).sum())
        table = 0
    cells = 2 * config.cells_per_weight * present * base.copies
    tiling = Tiling(base.rows, base.neurons, base.row_tiles, base.col_tiles, base.copies, base.positions,
                    occupied, cells, table)
    return tiling, connected, per_row


def row_address_bits(kept: torch.Tensor) -> int:
    """Bits of one entry of a packed layer's row address table, from ``kept [col_tiles]`` (rows each column
    tile keeps).

    Packing puts a row in a different slot of each column tile it reaches, so a spike on that row is
    routed by a lookup: the row's entries, one per column tile it reaches, each the column tile's index and
    the slot there (``ceil(log2 col_tiles) + ceil(log2 max kept)`` bits). Every drive of a packed input row
    reads its entry, at the buffer's energy per bit; bias and ramp rows sit at slots the controller knows.
    """
    if kept.numel() == 0:
        return 0
    return (kept.numel() - 1).bit_length() + max(int(kept.max()) - 1, 0).bit_length()
