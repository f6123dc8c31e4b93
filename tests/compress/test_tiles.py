"""Pruning groups aligned with the crossbar tiles: which tile rows, columns and tiles end up empty."""
import pytest
import torch
from torch import nn

from spikec.compress import groups
from spikec.compress.config import DNRConfig, PruneConfig
from spikec.compress.dnr import DynamicRewiring
from spikec.compress.groups import TileShape, grouping
from spikec.compress.masks import get_mask
from spikec.compress.prune import magnitude_masks, prune_

TILE = TileShape(rows=8, pairs=2)  # a conv of 2 x 3 x 3 = 18 rows, 3 neurons: 3 x 2 tiles (rows 8, 8, 2; pairs 2, 1)


def _conv(small: dict) -> nn.Conv2d:
    """A 2 -> 3 conv whose unrolled weight ``[3, 18]`` is 1 except ``small[(k, r)]``."""
    conv = nn.Conv2d(2, 3, 3, bias=False)
    w = torch.ones(3, 18)
    for (k, r), v in small.items():
        w[k, r] = v
    with torch.no_grad():
        conv.weight.copy_(w.reshape(3, 2, 3, 3))
    return conv


def _unrolled_mask(conv) -> torch.Tensor:
    return get_mask(conv).reshape(3, 18)


def test_tile_groups_index_the_pe_layout():
    g = grouping((3, 2, 3, 3), "tile", TILE)
    assert g.count == 6
    assert g.sizes.tolist() == [16, 8, 16, 8, 4, 2]  # (row tile, neuron tile) in row-tile-major order
    index = g.index.reshape(3, 18)
    assert index[2, 17] == 2 * 2 + 1 and index[0, 0] == 0 and index[1, 9] == 2
    assert grouping((3, 2, 3, 3), "tile-row", TILE).count == 18 * 2
    assert grouping((3, 2, 3, 3), "tile-col", TILE).count == 3 * 3


def test_whole_tiles_are_pruned_where_their_weights_are_smallest():
    small = {(k, r): 0.01 for k in (0, 1) for r in range(8, 16)}  # tile (row tile 1, neuron tile 0)
    small.update({(2, r): 0.02 for r in (16, 17)})  # tile (2, 1)
    conv = _conv(small)
    model = nn.Sequential(conv)
    prune_(model, PruneConfig(density=36 / 54, granularity="tile", tile_rows=8, tile_cols=4, cells_per_weight=1))
    mask = _unrolled_mask(conv)
    empty = torch.zeros(3, 18, dtype=torch.bool)
    for k, r in small:
        empty[k, r] = True
    assert torch.equal(mask, ~empty)


def test_tile_rows_are_one_input_row_of_one_neuron_tile():
    conv = _conv({(0, 5): 0.01, (1, 5): 0.01, (2, 17): 0.02})
    masks = magnitude_masks({"c": conv}, 51 / 54, "tile-row", tile=TILE)
    mask = masks["c"].reshape(3, 18)
    assert not mask[0, 5] and not mask[1, 5] and not mask[2, 17]
    assert int(mask.sum()) == 54 - 3


def test_tile_cols_are_one_neuron_in_one_row_tile():
    small = {(1, r): 0.01 for r in range(8, 16)}
    small.update({(2, 16): 0.02, (2, 17): 0.02})
    conv = _conv(small)
    mask = magnitude_masks({"c": conv}, 42 / 54, "tile-col", tile=TILE)["c"].reshape(3, 18)
    expected = torch.ones(3, 18, dtype=torch.bool)
    for k, r in small:
        expected[k, r] = False
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("granularity", ["tile-row", "tile-col", "tile"])
def test_rewiring_moves_whole_tile_groups(granularity):
    torch.manual_seed(0)
    convs = {"a": nn.Conv2d(2, 3, 3), "b": nn.Conv2d(3, 5, 3)}
    model = nn.Sequential(convs["a"], nn.ReLU(), convs["b"])
    tile = TileShape(8, 2)
    prune_(model, PruneConfig(density=0.4, granularity=granularity, tile_rows=8, tile_cols=4, cells_per_weight=1))
    dnr = DynamicRewiring(convs, DNRConfig(), granularity, tile)
    held = dnr.active_weights()
    for m in convs.values():
        m.weight.grad = torch.randn_like(m.weight)
    dnr.accumulate()
    pruned, regrown = dnr.rewire(0.5)
    assert sum(pruned.values()) > 0
    for name, m in convs.items():
        g = grouping(m.weight.shape, granularity, tile)
        mask = get_mask(m)
        per_group = torch.zeros(g.count).index_add_(0, g.index.flatten(), mask.flatten().float())
        assert torch.all((per_group == 0) | (per_group == g.sizes.float()))  # every group all in or all out
    assert abs(dnr.active_weights() - held) <= max(int(s.max()) for s in dnr.sizes.values())


def test_weight_tile_count_matches_the_hardware_layout():
    from spikec.compress.tiles import weight_tiles
    from spikec.hardware.config import HardwareConfig

    config = HardwareConfig(tile_rows=8, tile_cols=4, cells_per_weight=1)  # 2 neurons per 4-column tile
    w = torch.zeros(3, 18)
    w[0, 0] = 1.0  # tile (0, 0)
    w[2, 9] = -1.0  # tile (1, 1)
    # all-zero rows are dropped: the two nonzero rows pack into row tile 0; nothing else is occupied
    assert weight_tiles(w, False, config) == (3 * 2, 2)
    w2 = torch.ones(3, 18)
    w2[:, 8:16] = 0  # 8 zero rows dropped: 10 rows left, 2 row tiles x 2 neuron tiles
    assert weight_tiles(w2, False, config) == (6, 4)
    assert weight_tiles(w2, True, config) == (6, 4)  # 11 rows with the bias row: still 2 row tiles


def test_tile_groups_and_counts_hold_cells_per_weight_neurons_per_tile():
    """Two cells per weight and sign: an 8-column tile holds 2 neurons, not 4 (the PE's neurons_per_tile)."""
    from spikec.compress.tiles import weight_tiles
    from spikec.hardware.config import HardwareConfig

    hw = HardwareConfig(tile_rows=8, tile_cols=8, cells_per_weight=2)
    cfg = PruneConfig(tile_rows=8, tile_cols=8, cells_per_weight=2)
    assert cfg.tile == TileShape(8, hw.neurons_per_tile) == TileShape(8, 2)
    w = torch.ones(3, 18)
    w[0:2, 8:16] = 0  # tile (row tile 1, neuron tile 0) empty; no row all-zero
    assert weight_tiles(w, False, hw) == (3 * 2, 5)
    assert grouping((3, 2, 3, 3), "tile", cfg.tile).count == 3 * 2
    one_cell = HardwareConfig(tile_rows=8, tile_cols=8, cells_per_weight=1)  # 4 neurons: one column of tiles
    assert weight_tiles(w, False, one_cell) == (3, 3)
    with pytest.raises(ValueError, match="cells_per_weight"):
        PruneConfig(tile_cols=4, cells_per_weight=3)


def test_layer_scope_keeps_its_weight_budget_with_small_edge_tiles():
    """Tiles at the layout's edge are small; the layer keeps the budget's weights (to within half a
    tile), not ``budget / mean tile size`` tiles, which with large-valued small edge tiles kept far fewer."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 64, 3)  # 144 rows x 64 neurons on 128 x 21 tiles: rows 128 + 16, neurons 21 x 3 + 1
    with torch.no_grad():
        conv.weight.mul_(0.1)
        conv.weight.reshape(64, -1)[:, 128:] = 1.0  # the small edge tiles hold the largest weights
        conv.weight.reshape(64, -1)[63, :] = 1.0
    tile = TileShape(rows=128, pairs=21)
    mask = magnitude_masks({"c": conv}, 0.4, "tile", "layer", tile)["c"]
    g = grouping(conv.weight.shape, "tile", tile)
    assert bool(g.any(mask)[g.index.reshape(64, -1)[0, 143]])  # an edge tile with large weights
    assert abs(int(mask.sum()) - 0.4 * mask.numel()) <= g.sizes.max() / 2


def test_gradual_shrinking_and_regrowth_count_weights_of_uneven_tiles():
    """A layer's share of a shrink (and of the regrowth) is in weights: the small edge tiles do not
    make it remove (or regrow) far more or less than its budget."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 64, 3)  # 144 rows x 64 neurons on 128 x 21 tiles
    with torch.no_grad():
        conv.weight.mul_(0.1)
        conv.weight.reshape(64, -1)[:, 128:] = 1.0  # the small edge tiles score highest
    tile = TileShape(rows=128, pairs=21)
    prune_(conv, PruneConfig(density=1.0, granularity="tile", tile_rows=128, tile_cols=126, cells_per_weight=3))
    dnr = DynamicRewiring({"c": conv}, DNRConfig(), "tile", tile)
    biggest = int(dnr.sizes["c"].max())
    target = int(0.4 * conv.weight.numel())
    dnr.shrink_to(target, "layer")
    assert abs(dnr.active_weights() - target) <= biggest / 2
    held = dnr.active_weights()
    conv.weight.grad = torch.randn_like(conv.weight)
    dnr.accumulate()
    dnr.rewire(0.5)
    assert abs(dnr.active_weights() - held) <= biggest / 2
