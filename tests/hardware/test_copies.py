"""Spare tiles of a chip spent on conv copies: the greedy rule by hand, and latency and static energy
following the copies while every spike and every other energy term stays the same."""
import math

import pytest
import torch

from spikec.errors import UsageError
from spikec.hardware.config import HardwareConfig
from spikec.hardware.copies import assign_copies
from spikec.hardware.evaluate import PEModel
from spikec.hardware.mapping import Tiling
from spikec.hardware.timing import RunOptions


def _tiling(positions: int, tiles: int) -> Tiling:
    return Tiling(rows=tiles * 8, neurons=4, row_tiles=tiles, col_tiles=1, copies=1, positions=positions)


def test_greedy_rule_by_hand():
    # A: 16 positions on 1 tile; B: 4 positions on 2 tiles; C: a linear layer on 3 tiles. 6 tiles spare.
    # A 1->2 saves 8 runs per tile, then 2->3 and 3->4 save 2 runs per tile each (B 1->2: 2 runs for 2 tiles,
    # ratio 1); then A 4->6 saves 1 run for 2 tiles (0.5) against B's 1, so B takes 2 tiles; 1 tile is
    # left, which neither A (needs 2) nor B (needs 4) can use.
    layers = [_tiling(16, 1), _tiling(4, 2), _tiling(1, 3)]
    assert assign_copies(layers, 12) == [4, 2, 1]
    # B's runs weighed 10x: B 1->2 first (20 cycles for 2 tiles), then B 2->4 (2.5) loses to A 1->2 (8), and
    # after A's 2->3 and 3->4 only 1 tile is left; weighed 100x, B 2->4 (25 per tile) takes all 6 tiles
    assert assign_copies(layers, 12, run_cycles=[1, 10, 1]) == [4, 2, 1]
    assert assign_copies(layers, 12, run_cycles=[1, 100, 1]) == [1, 4, 1]
    # no spare tile: everyone keeps one copy; a budget below the need names the largest layer
    assert assign_copies(layers, 6) == [1, 1, 1]
    with pytest.raises(UsageError, match=r"smaller than the 6 tiles .*'c'"):
        assign_copies(layers, 5, names=["a", "b", "c"])


def test_copies_cut_latency_and_static_energy_and_change_nothing_else(lenet_snn, digits):
    cfg = HardwareConfig(tile_rows=16, tile_cols=16, cells_per_weight=1, tta=False, power_gating=True)
    x, y = digits[1].tensors
    x, y = x[:24].double(), y[:24]
    base = PEModel.from_snn(lenet_snn, cfg)
    need = sum(xb.tiling.tiles for xb in base.crossbars)
    budget = need + 12
    spread = PEModel.from_snn(lenet_snn, cfg.replace(tile_budget=budget))
    copies = [xb.tiling.copies for xb in spread.crossbars]
    S = 2 ** cfg.window_bits
    cycles = [(3 if xb.layer.readout else 2) * S for xb in base.crossbars]
    assert copies == assign_copies([xb.tiling for xb in base.crossbars], budget, cycles)
    assert max(copies) > 1 and sum(xb.tiling.tiles for xb in spread.crossbars) <= budget

    opts = RunOptions.from_config(cfg)
    r0 = base.evaluate(base.nominal(), x, y, opts)
    r1 = spread.evaluate(spread.nominal(), x, y, opts)
    assert r1.accuracy == r0.accuracy and r1.spikes == pytest.approx(r0.spikes)
    for xb, c in zip(spread.crossbars, copies):
        name, t = xb.layer.name, xb.tiling
        l0, l1 = r0.layers[name], r1.layers[name]
        # without TTA every run lasts the window: ceil(P / copies) runs of 2S (3S for the readout) steps
        runs = math.ceil(xb.layer.positions / c)
        latency = runs * (3 if xb.layer.readout else 2) * S * cfg.cycle_s
        assert l1["latency_s"] == pytest.approx(latency, rel=1e-12)
        static = (t.tiles * cfg.tile_leakage_w + cfg.control_power_w) * latency
        assert l1["energy_per_inference_j"]["static"] == pytest.approx(static, rel=1e-9)
        for k in ("crossbar", "neuron", "driver", "buffer"):
            assert l1["energy_per_inference_j"][k] == pytest.approx(l0["energy_per_inference_j"][k], rel=1e-9)
    assert r1.latency_s < r0.latency_s and r1.energy["static"] < r0.energy["static"]


def test_budget_below_the_network_is_a_usage_error(lenet_snn):
    cfg = HardwareConfig(tile_rows=16, tile_cols=16, cells_per_weight=1)
    with pytest.raises(UsageError, match=r"tile budget 1 \(--tile-budget, tile_budget\) is smaller"):
        PEModel.from_snn(lenet_snn, cfg.replace(tile_budget=1))
    with pytest.raises(ValueError, match="tile_budget must be >= 1"):
        cfg.replace(tile_budget=0)
