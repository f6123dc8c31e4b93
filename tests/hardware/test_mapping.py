"""Tiling counts and target conductances."""
import pytest
import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.mapping import conductances, effective_weight, quantize_unit, tile_layer


@pytest.mark.parametrize("rows, neurons, row_tiles, col_tiles", [
    (128, 64, 1, 1), (129, 64, 2, 1), (128, 65, 1, 2), (1, 1, 1, 1), (257, 129, 3, 3), (300, 10, 3, 1),
])
def test_tiles_default_128x128(rows, neurons, row_tiles, col_tiles):
    t = tile_layer(rows, neurons, HardwareConfig())
    assert (t.row_tiles, t.col_tiles, t.tiles, t.runs) == (row_tiles, col_tiles, row_tiles * col_tiles, 1)


def test_tiles_odd_tile_shape_and_copies():
    cfg = HardwareConfig(tile_rows=5, tile_cols=6, conv_copies=3)
    t = tile_layer(11, 7, cfg, positions=10)  # 3 row tiles, 3 pairs per tile -> 3 column tiles, 3 copies
    assert (t.row_tiles, t.col_tiles, t.copies, t.tiles, t.runs, t.cells) == (3, 3, 3, 27, 4, 2 * 11 * 7 * 3)
    t = tile_layer(11, 7, cfg, positions=2)  # never more copies than positions
    assert (t.copies, t.runs) == (2, 1)
    assert tile_layer(11, 7, cfg).copies == 1  # a linear layer has one position


def test_quantize_levels():
    q = quantize_unit(torch.tensor([0.0, 0.1, 0.126, 0.3, 0.5, 1.0, 1.7, -0.2]), 5)
    assert q.tolist() == [0.0, 0.0, 0.25, 0.25, 0.5, 1.0, 1.0, 0.0]


def test_conductances_of_quantized_weights():
    cfg = HardwareConfig(cell_levels=5)
    g_off, span = cfg.g_off, cfg.g_on - cfg.g_off
    w = torch.tensor([[0.5, -1.0, 0.3, 0.0, -0.1]])  # [1 neuron, 5 rows], w_max = 1
    g_pos, g_neg = conductances(w, cfg)
    assert g_pos.shape == (5, 1)
    assert g_pos[:, 0].tolist() == pytest.approx([g_off + 0.5 * span, g_off, g_off + 0.25 * span, g_off, g_off])
    assert g_neg[:, 0].tolist() == pytest.approx([g_off, g_off + span, g_off, g_off, g_off])
    assert g_neg.max() == pytest.approx(1 / 100e3) and g_pos.min() == pytest.approx(1 / 1.7e6)
    # the pair realises the quantized weight: G_off cancels in the difference
    w_q = effective_weight(g_pos, g_neg, cfg, 1.0)[:, 0]
    assert w_q.tolist() == pytest.approx([0.5, -1.0, 0.25, 0.0, 0.0])


def test_many_levels_reproduce_weights():
    cfg = HardwareConfig(cell_levels=2**20)
    w = torch.randn(7, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g_pos, g_neg = conductances(w, cfg)
    w_max = float(w.abs().max())
    assert torch.allclose(effective_weight(g_pos, g_neg, cfg, w_max).t(), w, atol=2e-6 * w_max)
