"""Tiling counts and target conductances."""
import math

import pytest
import torch
from torch import nn

from spikec.conversion.ttfs import convert_ttfs
from spikec.hardware.crossbar import make_chips, program_crossbar
from spikec.hardware.extract import PELayer, pe_program
from spikec.hardware.timing import RunOptions, run_layer

INF = float("inf")

from spikec.hardware.config import HardwareConfig
from spikec.hardware.mapping import cell_grid, effective_weight, grid_step, level_conductances, tile_layer


@pytest.mark.parametrize("rows, neurons, row_tiles, col_tiles", [
    (128, 64, 1, 1), (129, 64, 2, 1), (128, 65, 1, 2), (1, 1, 1, 1), (257, 129, 3, 3), (300, 10, 3, 1),
])
def test_tiles_default_128x128(rows, neurons, row_tiles, col_tiles):
    t = tile_layer(rows, neurons, HardwareConfig(cells_per_weight=1))
    assert (t.row_tiles, t.col_tiles, t.tiles, t.runs) == (row_tiles, col_tiles, row_tiles * col_tiles, 1)


def test_tiles_odd_tile_shape_and_copies():
    cfg = HardwareConfig(tile_rows=5, tile_cols=6, conv_copies=3, cells_per_weight=1)
    t = tile_layer(11, 7, cfg, positions=10)  # 3 row tiles, 3 pairs per tile -> 3 column tiles, 3 copies
    assert (t.row_tiles, t.col_tiles, t.copies, t.tiles, t.runs, t.cells) == (3, 3, 3, 27, 4, 2 * 11 * 7 * 3)
    t = tile_layer(11, 7, cfg, positions=2)  # never more copies than positions
    assert (t.copies, t.runs) == (2, 1)
    assert tile_layer(11, 7, cfg).copies == 1  # a linear layer has one position


def test_weights_on_a_4bit_grid_map_exactly_per_column():
    """Column k holds q * s_k with |q| <= 7 (a 4-bit per-channel grid): it maps without rounding. The cell
    grid is refined by floor(15 / max|q|), so the largest weight uses the full 15 levels, as far as the
    layer's ramp allows: column 0 unrefined already needs the most ramp, 1 / (15 * 0.05) = 4/3 rows,
    and refining it by 2 would need 8/3, so it stays at 0.05; columns 1 and 2 refine by 2 within it."""
    cfg = HardwareConfig(cell_levels=16, cells_per_weight=1)
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(-7, 8, (3, 20), generator=gen).to(torch.float64)
    q[:, 0] = torch.tensor([7.0, -5.0, 3.0])  # max |q| per column: 7, 5 (or more), 3 (or more)
    s = torch.tensor([0.05, 0.2, 3.0], dtype=torch.float64)
    w = q * s.view(-1, 1)
    grid = cell_grid(w, cfg)
    assert grid.exact
    max_q = q.abs().amax(1)
    bound = 1 / (15 * 0.05)
    refine = torch.minimum(torch.floor(15 / max_q), torch.floor(bound * s * 15 * (1 + 1e-9)))
    assert refine.tolist() == [1.0, 2.0, 2.0]
    assert torch.allclose(grid.step, s / refine, rtol=1e-12)
    g_pos, g_neg = level_conductances(grid.levels_of(w).t(), cfg)
    assert torch.allclose(effective_weight(g_pos, g_neg, cfg, grid.step).t(), w, rtol=0, atol=1e-12)


def test_off_grid_columns_scale_to_their_own_largest_weight():
    cfg = HardwareConfig(cell_levels=5, cells_per_weight=1)
    w = torch.tensor([[0.5, -1.0, 0.3, 0.0, -0.1], [0.01, 0.005, -0.0065, 0.0, 0.0]], dtype=torch.float64)
    grid = cell_grid(w, cfg)
    assert not bool(grid.on_grid[0]) and grid.step[0] == pytest.approx(1.0 / 4, rel=1e-9, abs=0)
    assert grid.levels_of(w)[0].tolist() == [2.0, -4.0, 1.0, 0.0, -0.0]  # 0.5/0.25, -1/0.25, round(1.2), 0, round(-0.4)
    # column 1 is 100x smaller than column 0: its scale is floored at 1/64 of the layer's
    assert grid.step[1] == pytest.approx(1.0 / 64 / 4, rel=1e-9, abs=0)
    assert grid_step(torch.tensor([[0.3, 0.6, -0.9]], dtype=torch.float64), 15)[1].tolist() == [True]
    assert grid_step(torch.tensor([[0.3, 0.61, -0.9]], dtype=torch.float64), 15)[1].tolist() == [False]


def test_bias_goes_on_its_own_rows_and_does_not_set_the_scale():
    """bias 3.2 on a column of step 0.5/15: 96 levels over ceil(96/15) = 7 bias rows."""
    cfg = HardwareConfig(cell_levels=16, cells_per_weight=1)
    layer = PELayer("fc", "linear", torch.tensor([[0.5, -0.3]], dtype=torch.float64),
                    torch.tensor([3.2], dtype=torch.float64), (2,), (1,), None, False, 1.0)
    xb = program_crossbar(layer, cfg)
    step = 0.5 / 15
    assert xb.bias_rows == 7 and float(xb.step[0]) == pytest.approx(step, rel=1e-9, abs=0)
    chip = make_chips(xb, cfg, 1, 0)
    assert float(chip.bias[0, 0, 0]) == pytest.approx(round(3.2 / step) * step, rel=1e-12, abs=0)
    assert float(chip.ramp[0, 0, 0]) == pytest.approx(1.0, rel=1e-12, abs=0)
    assert xb.ramp_rows == math.ceil(1 / 0.5)


def test_empty_tiles_are_not_allocated_and_cost_nothing_by_hand():
    """8 input rows x 4 neurons on 4-row x 2-pair tiles: rows 0-3 feed neurons 0-1, rows 4-7 neurons 2-3.

    Tiles (row block, column block): (0,0) and (1,1) hold weights, (0,1) and (1,0) are empty and not
    allocated; the ramp rows' block (2,*) is. So 4 tiles instead of 6, a spike on an input row drives one
    column tile, a ramp row two, and an input row conducts only through its own neurons' cells.
    """
    cfg = HardwareConfig(cell_levels=5, tile_rows=4, tile_cols=4, window_bits=3, cells_per_weight=1)
    w = torch.zeros(4, 8, dtype=torch.float64)
    w[0:2, 0:4] = torch.tensor([[1.0, -1.0, 0.5, 0.0], [0.25, 0.75, -0.5, 1.0]])
    w[2:4, 4:8] = torch.tensor([[1.0, 0.5, 0.0, -0.25], [-1.0, 0.25, 0.5, 0.75]])
    layer = PELayer("fc", "linear", w, None, (8,), (4,), None, False, 1.0)
    xb = program_crossbar(layer, cfg)
    assert xb.ramp_rows == 1
    assert (xb.tiling.row_tiles, xb.tiling.col_tiles, xb.tiling.tiles) == (3, 2, 4)
    assert xb.tiling.as_dict()["dense_tiles"] == 6 and xb.tiling.cells == 2 * (4 * 2 + 4 * 2 + 1 * 4)  # two cells per weight of the used rows
    assert xb.row_col_tiles.tolist() == [1.0] * 8 + [2.0]
    assert float(xb.g_pos[0, 2]) == 0 and float(xb.g_neg[5, 0]) == 0  # no cells in the empty tiles
    chip = make_chips(xb, cfg, 1, 0)
    steps_in = torch.tensor([[[0.0, 2.0, INF, 5.0, 1.0, INF, 7.0, 3.0]]])  # [chips, batch, rows]
    run = run_layer(chip, steps_in, cfg, RunOptions(power_gating=True, tta=False))
    e = {k: float(v[0, 0]) for k, v in run.energy.items()}
    S = 8
    g = xb.g_pos + xb.g_neg
    t = steps_in[0, 0]
    crossbar_inputs = sum(float(S - t[i]) * float(g[i].sum()) for i in range(8) if math.isfinite(t[i]))
    m = run.steps[0, 0]  # firing steps in the own window
    ramp = sum(float(g[8, k]) * (min(S + float(m[k]) + 1, 2 * S) - S) for k in range(4))
    assert e["crossbar"] == pytest.approx(cfg.v_read ** 2 / cfg.clock_hz * (crossbar_inputs + ramp), rel=1e-12, abs=0)
    assert e["driver"] == pytest.approx(cfg.driver_energy_j * (6 * 1 + 1 * 2), rel=1e-12, abs=0)  # 6 input spikes, 1 ramp row
    assert e["static"] == pytest.approx((4 * cfg.tile_leakage_w + cfg.control_power_w) * e["latency_s"], rel=1e-12, abs=0)


def test_pruned_rows_and_channels_leave_the_crossbar():
    """An MLP whose fc1 ignores half its inputs: those rows are dropped; a pruned neuron empties its tiles."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 10)).double()
    with torch.no_grad():
        ann[1].weight[:, 32:] = 0
    snn = convert_ttfs(ann, torch.rand(64, 1, 8, 8, dtype=torch.float64) + 0.1)
    layer = pe_program(snn).layers[0]
    assert layer.rows == 32 and layer.dense_rows == 64
    cfg = HardwareConfig(tile_rows=16, tile_cols=64, cells_per_weight=1)
    xb = program_crossbar(layer, cfg)
    assert xb.tiling.tiles == xb.tiling.row_tiles * xb.tiling.col_tiles  # every remaining tile holds weights
    with torch.no_grad():
        ann[3].weight[:, 32:64] = 0  # the readout ignores fc1's neurons 32..63: one tile row of 32 pairs
    layer = pe_program(convert_ttfs(ann, torch.rand(64, 1, 8, 8, dtype=torch.float64) + 0.1)).layers[1]
    assert layer.rows == 64


def test_two_cells_per_weight_double_levels_columns_and_conductance():
    """m = 2 cells a side: 2 * 15 levels, 4 columns per neuron (32 neurons per 128-column tile), and a weight's
    conductance is the sum of its two cells (2 G_off at level 0)."""
    one, two = HardwareConfig(cells_per_weight=1), HardwareConfig(cells_per_weight=2)
    w = torch.tensor([[0.3, -0.9, 0.45]], dtype=torch.float64)  # off the 15-level grid of 0.06, on 30 levels of 0.03
    g1, g2 = cell_grid(w, one), cell_grid(w, two)
    assert (g1.max_level, g2.max_level) == (15, 30) and float(g2.step[0]) == pytest.approx(0.9 / 30, rel=1e-9, abs=0)
    assert g2.levels_of(w)[0].tolist() == [10.0, -30.0, 15.0]
    g_pos, g_neg = level_conductances(g2.levels_of(w).t(), two)
    unit = (two.g_on - two.g_off) / 15
    assert g_pos[:, 0].tolist() == pytest.approx([2 * two.g_off + 10 * unit, 2 * two.g_off, 2 * two.g_off + 15 * unit], rel=1e-9, abs=0)
    assert torch.allclose(effective_weight(g_pos, g_neg, two, g2.step).t(), w, atol=1e-12)
    assert tile_layer(10, 33, two).col_tiles == 2 and tile_layer(10, 33, one).col_tiles == 1
    layer = PELayer("fc", "linear", w, None, (3,), (1,), None, False, 1.0)
    assert program_crossbar(layer, two).tiling.cells == 2 * 2 * (3 + 2)  # 3 inputs + ceil(1/0.9) = 2 ramp rows


def test_a_sparse_column_whose_smallest_level_is_large_maps_exactly():
    """Levels 5, 7, -10 of step 0.02 (no weight at 1..4 levels): the grid is max|w| / 10, found exactly."""
    w = torch.tensor([[0.10, 0.14, -0.20], [0.0, 0.26, 0.0]], dtype=torch.float64)  # column 1: one weight, 13 levels
    step, on = grid_step(w, 15)
    assert on.tolist() == [True, True]
    assert step.tolist() == pytest.approx([0.02, 0.26], rel=1e-12, abs=0)
    cfg = HardwareConfig(cell_levels=16, cells_per_weight=1)
    grid = cell_grid(w, cfg)
    assert grid.exact and grid.step.tolist() == pytest.approx([0.02, 0.26 / 15], rel=1e-12, abs=0)  # 15 // 10 = 1, 15 // 1 = 15
    assert grid.levels_of(w).tolist() == [[5.0, 7.0, -10.0], [0.0, 15.0, 0.0]]
    assert grid_step(torch.tensor([[0.10, 0.14, -0.20]], dtype=torch.float64), 9)[1].tolist() == [False]  # 10 > 9 levels
    assert grid_step(torch.tensor([[0.10, 0.141, -0.20]], dtype=torch.float64), 30)[1].tolist() == [False]


def test_a_pruned_column_does_not_set_the_ramp():
    """Neuron 1 of a hand-made layer is pruned (all weights 0, bias 0.3). Steps on 5-level cells:
    neuron 0 (1.0, -0.5) sits on a grid of 1/2, refined to full range 1/4 (a ramp of 1 / (4/4) = 1 row);
    neuron 2 (0.25, 0.5) sits on 1/4, which needs 1 ramp row too; refining it to 1/8 would need 2, so
    it stays at 1/4. The pruned one takes the coarsest, 1/4: 1 ramp row, as without the pruned neuron;
    its bias 0.3 rounds to one level of 1/4. The old floor (step (1/64) / 4) needed 64 ramp rows."""
    cfg = HardwareConfig(cell_levels=5, cells_per_weight=1, tile_rows=4, tile_cols=6)
    w = torch.tensor([[1.0, -0.5], [0.0, 0.0], [0.25, 0.5]], dtype=torch.float64)
    bias = torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64)
    layer = PELayer("fc", "linear", w, bias, (2,), (3,), None, False, 1.0)
    xb = program_crossbar(layer, cfg)
    assert xb.step.tolist() == [0.25, 0.25, 0.25]
    assert (xb.bias_rows, xb.ramp_rows) == (1, 1)
    assert (xb.tiling.row_tiles, xb.tiling.col_tiles, xb.tiling.tiles) == (1, 1, 1)  # 2 + 1 + 1 = 4 rows of 4
    unpruned = program_crossbar(PELayer("fc", "linear", w[[0, 2]], None, (2,), (2,), None, False, 1.0), cfg)
    assert unpruned.ramp_rows == xb.ramp_rows
    chip = make_chips(xb, cfg, 1, 0)
    assert chip.bias[0, 0].tolist() == [0.0, 0.25, 0.0]
    assert chip.ramp[0, 0].tolist() == pytest.approx([1.0, 1.0, 1.0], rel=1e-12, abs=0)
    assert chip.weight[0, 0].t().tolist() == w.tolist()
    assert cell_grid(torch.zeros(2, 3, dtype=torch.float64), cfg).step.tolist() == [0.25, 0.25]  # nothing to scale by


def test_a_weak_exact_column_does_not_multiply_the_ramp():
    """A 4-bit layer (step 0.01) on 3 cells of 16 levels (45 levels a side): column 0's largest weight is
    7 steps, column 1's one step. Refined to full range, column 0 needs floor(45 / 7) = 6, a ramp of
    1 / (45 * 0.01 / 6) = 13.3 rows, and column 1 would need 45, a ramp of 100 rows that every column's
    cells would leak through. Bounded by the 13.3 rows the layer needs anyway, column 1 refines by
    floor(13.33 * 45 * 0.01) = 6 too: 14 ramp rows, and both columns still map exactly."""
    cfg = HardwareConfig(cell_levels=16, cells_per_weight=3)
    w = torch.tensor([[7.0, -3.0, 2.0], [1.0, 0.0, -1.0]], dtype=torch.float64) * 0.01
    layer = PELayer("fc", "linear", w, None, (3,), (2,), None, False, 1.0)
    xb = program_crossbar(layer, cfg)
    assert xb.step.tolist() == pytest.approx([0.01 / 6, 0.01 / 6], rel=1e-12, abs=0)
    assert xb.ramp_rows == 14
    chip = make_chips(xb, cfg, 1, 0)
    assert torch.allclose(chip.weight[0, 0].t(), w, rtol=0, atol=1e-12)
    assert chip.ramp[0, 0].tolist() == pytest.approx([1.0, 1.0], rel=1e-12, abs=0)
    alone = program_crossbar(PELayer("fc", "linear", w[1:], None, (3,), (1,), None, False, 1.0), cfg)
    assert alone.step.tolist() == pytest.approx([0.01 / 45], rel=1e-12, abs=0)  # on its own: full range
    assert alone.ramp_rows == 100


def test_an_exact_column_refines_only_down_to_the_row_budget():
    """Row budget 4 on 3 cells of 16 levels (45 a side): the floor step is 1 / (45 * 4) = 1/180. Column 0
    (4-bit, step 0.01, largest 7 steps) refined to full range (by 6) would need a 13.3-row ramp and be
    coarsened off its grid; it refines by floor(0.01 * 180) = 1 instead and stays exact (2.2 rows).
    Column 1 (off any grid, far below the layer's scale) is coarsened to the floor: 4 ramp rows."""
    cfg = HardwareConfig(cell_levels=16, cells_per_weight=3, max_row_copies=4)
    w = torch.tensor([[7.0, -3.0, 2.0], [0.01, 0.01 / math.pi, 0.0]], dtype=torch.float64) * 0.01
    xb = program_crossbar(PELayer("fc", "linear", w, None, (3,), (2,), None, False, 1.0), cfg)
    assert xb.step.tolist() == pytest.approx([0.01, 1 / 180], rel=1e-12, abs=0)
    assert xb.grid.on_grid.tolist() == [True, False]
    assert xb.ramp_rows == 4
    chip = make_chips(xb, cfg, 1, 0)
    assert torch.allclose(chip.weight[0, 0, :, 0], w[0], rtol=0, atol=1e-12)  # column 0 maps exactly


def _segment_layer():
    """8 input rows x 4 neurons on 4-row x 2-pair tiles (two column tiles of 2 neurons).

    Row segments (a row's weights in one column tile) with a nonzero weight: column tile 0 holds rows
    0, 1, 4, 7; column tile 1 rows 2, 3, 5, 6, 7. Every one of the 4 weight tiles holds some weight, so
    the fixed layout allocates them all, but rows 2, 3 (5, 6) hold only zeros in column tile 0 (1).
    """
    w = torch.zeros(4, 8, dtype=torch.float64)
    w[0:2, [0, 1, 4, 7]] = torch.tensor([[1.0, -0.5, 0.25, 0.75], [0.5, 0.0, -1.0, 0.25]], dtype=torch.float64)
    w[2:4, [2, 3, 5, 6, 7]] = torch.tensor([[0.5, 1.0, -0.25, 0.0, 0.5], [-1.0, 0.25, 0.75, 0.5, -0.5]], dtype=torch.float64)
    return PELayer("fc", "linear", w, None, (8,), (4,), None, False, 1.0)


@pytest.mark.parametrize("packing", [False, True])
def test_all_zero_row_segments_are_not_driven_and_packing_frees_their_tiles_by_hand(packing):
    cfg = HardwareConfig(cell_levels=5, tile_rows=4, tile_cols=4, window_bits=3, cells_per_weight=1, row_packing=packing)
    xb = program_crossbar(_segment_layer(), cfg)
    assert xb.ramp_rows == 1
    segments = {0: [0, 1, 4, 7, 8], 1: [2, 3, 5, 6, 7, 8]}  # row 8: the ramp row, in both
    # fixed: tiles (0,0), (0,1), (1,0), (1,1) and the ramp row's two; packed: column tile 0 holds 5 rows
    # (2 row tiles of 4), column tile 1 holds 6 (2 row tiles)
    assert xb.tiling.tiles == (4 if packing else 6)
    expected = torch.zeros(9, 4, dtype=torch.bool)
    for c, rows in segments.items():
        expected[rows, 2 * c:2 * c + 2] = True
    assert torch.equal(xb.connected, expected)
    assert xb.row_col_tiles.tolist() == [1.0] * 7 + [2.0, 2.0]
    assert bool((xb.g_pos[~expected] == 0).all()) and bool((xb.g_neg[~expected] == 0).all())
    # a zero weight of a driven segment (row 1, neuron 1) keeps its two G_off cells
    assert float(xb.g_pos[1, 1]) == pytest.approx(cfg.g_off, rel=1e-12) and float(xb.g_neg[1, 1]) == pytest.approx(cfg.g_off, rel=1e-12)
    present = 5 * 2 + 6 * 2 if packing else 9 * 4  # packed: the kept segments; fixed: every cell of the 6 tiles
    assert xb.tiling.cells == 2 * present
    varied = make_chips(xb, cfg.replace(sigma=0.3), 2, 0)
    assert bool((varied.g_pos[..., ~expected] == 0).all()) and bool((varied.g_neg[..., ~expected] == 0).all())

    chip = make_chips(xb, cfg, 1, 0)
    steps_in = torch.tensor([[[0.0, 2.0, INF, 5.0, 1.0, INF, 7.0, 3.0]]])
    run = run_layer(chip, steps_in, cfg, RunOptions(power_gating=True, tta=False))
    e = {k: float(v[0, 0]) for k, v in run.energy.items()}
    S = 8
    g = xb.g_pos + xb.g_neg
    t = steps_in[0, 0]
    m = run.steps[0, 0]
    crossbar = 0.0
    for c, rows in segments.items():
        for k in (2 * c, 2 * c + 1):
            end = min(S + float(m[k]) + 1, 2 * S)  # powered until it fires (power gating)
            for i in rows:
                start = S if i == 8 else float(t[i])  # the ramp row is on from the own window's opening
                if math.isfinite(start):
                    stop = end if i == 8 else min(S, end)  # input rows are switched off when the input window closes
                    crossbar += float(g[i, k]) * max(stop - start, 0.0)
    assert e["crossbar"] == pytest.approx(cfg.v_read ** 2 / cfg.clock_hz * crossbar, rel=1e-12, abs=0)
    drives = sum(1 for i in range(8) if math.isfinite(t[i]) and i != 7) + 2 + 2  # row 7 reaches two column tiles, the ramp row too
    assert e["driver"] == pytest.approx(cfg.driver_energy_j * drives, rel=1e-12, abs=0)
    assert e["static"] == pytest.approx((xb.tiling.tiles * cfg.tile_leakage_w + cfg.control_power_w) * e["latency_s"], rel=1e-12, abs=0)
    # packed: a row address table entry per drive of an input row, the column tile (1 bit of 2 tiles) and
    # the slot there (5 and 6 rows kept: 3 bits); the ramp row's slots are fixed
    assert xb.tiling.address_bits == (1 + 3 if packing else 0)
    reads = sum(1 for i in range(8) if math.isfinite(t[i]))
    fired = int(torch.isfinite(m).sum())
    table = (4 if packing else 0) * cfg.buffer_energy_per_bit_j * (drives - 2)
    assert e["buffer"] == pytest.approx(cfg.spike_bits * cfg.buffer_energy_per_bit_j * (reads + fired) + table, rel=1e-12, abs=0)
