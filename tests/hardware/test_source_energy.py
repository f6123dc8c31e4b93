"""The PE's accounting from source spike times equals layer_energy on the unrolled rows, term by term."""
import pytest
import torch

import spikec.hardware.timing as timing
from spikec.hardware.config import HardwareConfig
from spikec.hardware.evaluate import PEModel
from spikec.hardware.simulate import run_program
from spikec.hardware.source_energy import source_layer_energy

KEYS = ("crossbar", "neuron", "driver", "buffer", "static", "total", "opamp", "comparator", "spike", "wakeup",
        "row_table", "latency_s", "spikes_in", "spikes_out")


def _compare_every_layer(monkeypatch, snn, x, config, options, chips):
    calls, reads = [], {}

    def both(chip, steps_in, m, stop, cfg, power_gating):
        fast = source_layer_energy(chip, steps_in, m, stop, cfg, power_gating)
        ref = timing.unrolled_energy(chip, steps_in, m, stop, cfg, options.replace(power_gating=power_gating))
        for k in KEYS:
            assert torch.allclose(fast[k], ref[k], rtol=1e-10, atol=0), (chip.crossbar.layer.name, k)
        calls.append(float(ref["total"].sum()))
        reads[chip.crossbar.layer.name] = float(ref["spikes_in"].sum())
        return fast

    monkeypatch.setattr(timing, "source_layer_energy", both)
    model = PEModel.from_snn(snn, config)
    chip_set = model.chips(chips) if chips > 1 else model.nominal()
    run_program(model.program, chip_set, x, config, options, with_energy=True)
    assert len(calls) == len(model.crossbars) and all(c > 0 for c in calls)
    return reads


@pytest.mark.parametrize("gating, tta, wakeup, late_bias", [
    (True, True, False, 1), (False, False, False, 1), (True, False, True, 4), (False, True, True, 16),
])
def test_residual_network_on_varied_chips(monkeypatch, small_resnet, gating, tta, wakeup, late_bias):
    config = HardwareConfig(window_bits=4, tile_rows=64, tile_cols=32, sigma=0.1, power_gating=gating,
                            wakeup_on_input=wakeup, late_bias=late_bias)
    x = torch.rand(5, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    options = timing.RunOptions(power_gating=gating, tta=tta, tta_fraction=0.5)
    _compare_every_layer(monkeypatch, small_resnet, x, config, options, chips=3)


@pytest.mark.parametrize("packing", [False, True])
def test_lenet_with_position_copies(monkeypatch, lenet_snn, digits, packing):
    # four copies of each conv layer: positions run on different (varied) conductances; packed rows read
    # their address table entries
    config = HardwareConfig(tile_rows=32, tile_cols=32, conv_copies=4, sigma=0.2, row_packing=packing)
    x = digits[1].tensors[0][:6].double()
    _compare_every_layer(monkeypatch, lenet_snn, x, config, timing.RunOptions(), chips=2)


def test_rows_that_round_to_zero_cost_what_pruned_rows_cost(monkeypatch, lenet_snn, digits):
    """Extraction drops rows whose weights are all zero; rows whose weights only round to level 0 on
    the cell grid stay, but reach no tile: neither accounting reads their spikes, as if pruned."""
    import copy

    def with_rows(scale):
        snn = copy.deepcopy(lenet_snn)
        conv = [m for m in snn.modules() if getattr(m, "weight", None) is not None and m.weight.dim() == 4][1]
        with torch.no_grad():
            conv.weight[:, ::2, 0, :] = scale * conv.weight.abs().max()  # first kernel row of every other input channel
        return snn

    config = HardwareConfig(tile_rows=32, tile_cols=32, sigma=0.0)  # with variation the extra rows shift the cells' draws
    x = digits[1].tensors[0][:6].double()
    dense = _compare_every_layer(monkeypatch, lenet_snn, x, config, timing.RunOptions(), chips=2)
    pruned = _compare_every_layer(monkeypatch, with_rows(0.0), x, config, timing.RunOptions(), chips=2)
    rounded = _compare_every_layer(monkeypatch, with_rows(1e-6), x, config, timing.RunOptions(), chips=2)
    second = list(dense)[1]
    assert 0 < pruned[second] < dense[second]
    assert rounded == pruned


def test_conv_charge_equals_the_unrolled_product(small_resnet, lenet_snn):
    from spikec.hardware.extract import unroll_inputs

    used = taps = 0
    for snn, shape in ((small_resnet, (3, 8, 8)), (lenet_snn, (1, 8, 8))):
        model = PEModel.from_snn(snn, HardwareConfig(window_bits=4, sigma=0.2))
        for chip in model.chips(3):
            layer = chip.crossbar.layer
            v = torch.rand(3, 4, *layer.in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
            v = v * (v > 0.3)  # silent sources read zero
            fast = timing.conv_charge(chip, v)
            if fast is None:
                continue
            used += 1
            split = timing._conv_split(layer)
            taps += int(split[2] is not None and split[1].numel() > 0)  # skip rows folded into the kernel
            ref = timing.chip_charge(chip, unroll_inputs(layer, v, 0.0))
            assert fast.shape == ref.shape and torch.allclose(fast, ref, rtol=1e-12, atol=1e-12), layer.name
    assert used >= 10  # the convolutions of both networks took the fast path
    assert taps >= 3  # and the residual layers' replayed skip rows went into the convolution's kernel


def test_accountings_of_one_run_equal_separate_runs(lenet_snn, digits):
    import dataclasses

    config = HardwareConfig(sigma=0.1)
    model = PEModel.from_snn(lenet_snn, config)
    chips = model.chips(2)
    x, y = digits[1].tensors[0][:12].double(), digits[1].tensors[1][:12]
    pairs = ((False, False), (True, True), (False, True))
    opts = timing.RunOptions(tta_fraction=0.6)
    results = model.evaluate_accountings(chips, x, y, opts.replace(extra_accountings=pairs), batch_size=5)
    assert len(results) == 4
    for (pg, wake), got in zip(((True, False),) + pairs, results):
        alone = dataclasses.replace(model, config=config.replace(wakeup_on_input=wake))
        want = alone.evaluate(chips, x, y, opts.replace(power_gating=pg), batch_size=5)
        assert got.accuracy == want.accuracy
        for k in want.energy:
            assert got.energy[k] == pytest.approx(want.energy[k], rel=1e-12, abs=0), (pg, wake, k)
        assert torch.equal(got.per_sample["energy_j"], want.per_sample["energy_j"])
    assert results[0].energy["total"] < results[1].energy["total"]  # gating saves


def test_nominal_chip_products_on_whole_levels_equal_the_float64_ones(small_resnet, lenet_snn):
    """On a chip without variation the float64 crossbar product runs on whole levels in float32
    (exact integer sums): equal to the unrolled float64 product; varied chips keep float64."""
    from spikec.hardware.extract import unroll_inputs

    S = 16
    integer = 0
    for snn in (small_resnet, lenet_snn):
        model = PEModel.from_snn(snn, HardwareConfig(window_bits=4))
        for chip, varied in zip(model.nominal(), PEModel.from_snn(snn, HardwareConfig(window_bits=4, sigma=0.2)).chips(2)):
            layer = chip.crossbar.layer
            m = torch.randint(0, S + 4, (1, 5, *layer.in_shape), generator=torch.Generator().manual_seed(1)).double()
            v = timing.input_values(torch.where(m >= S, torch.full_like(m, float("inf")), m), S)
            fast = timing.conv_charge(chip, v, S)
            if fast is None:
                continue
            integer += int(timing.grid_levels(chip, S) is not None)
            ref = timing.chip_charge(chip, unroll_inputs(layer, v, 0.0))
            assert torch.allclose(fast, ref, rtol=1e-12, atol=1e-12), layer.name
            assert timing.grid_levels(varied, S) is None  # off the grid: float64 products
    assert integer >= 10
