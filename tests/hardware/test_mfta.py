"""MFTA: never worse than no compensation on a fixed chip; exact for a pure gain error."""
import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.evaluate import PEModel
from spikec.hardware.mfta import best_scale, best_scale_from_charges, compensate, threshold_levels, timing_error
from spikec.hardware.simulate import run_program
from spikec.hardware.timing import RunOptions


def test_levels_include_nominal():
    levels = threshold_levels(HardwareConfig(mfta_levels=8, mfta_step=0.1))
    assert len(levels) == 8 and 1.0 in levels.tolist()
    assert torch.allclose(torch.log(levels[1:] / levels[:-1]), torch.full((7,), 0.1, dtype=torch.float64))


def test_mfta_timing_error_never_above_none(lenet_snn, digits):
    model = PEModel.from_snn(lenet_snn, HardwareConfig())
    calib = model.calibrate(digits[0].tensors[0][:32])
    chips = model.chips(3, sigma=0.2)
    for chip, cal in zip(chips, calib):
        none = timing_error(chip, cal, None)
        mfta = timing_error(chip, cal, compensate(chip, cal, model.config, "mfta"))
        ideal = timing_error(chip, cal, compensate(chip, cal, model.config, "ideal"))
        assert bool((mfta <= none + 1e-9).all())
        assert bool((ideal <= mfta + 1e-9).all())
        assert float(mfta.sum()) < float(none.sum())


def test_mfta_accuracy_on_fixed_chips(lenet_snn, digits):
    """Chips with sigma = 0.2: MFTA is at least as accurate as no compensation on each chip."""
    x, y = digits[1].tensors
    model = PEModel.from_snn(lenet_snn, HardwareConfig())
    calib = model.calibrate(digits[0].tensors[0][:32])
    chips = model.chips(3, sigma=0.2)
    opts = RunOptions.from_config(model.config)
    acc = {}
    for mode in ("none", "mfta", "ideal"):
        pred = model.predict(chips, x, opts, model.thresholds(chips, calib, mode))
        acc[mode] = (pred == y).double().mean(1)
    assert bool((acc["mfta"] >= acc["none"]).all()), acc


def test_pure_gain_is_cancelled_exactly(mlp_snn, digits):
    """A chip-wide gain g scales charge and ramp alike: the ideal threshold is g and restores every spike."""
    x = digits[1].tensors[0][:60]
    cfg = HardwareConfig(cell_levels=2**20, sigma_chip=0.3)
    model = PEModel.from_snn(mlp_snn, cfg)
    calib = model.calibrate(digits[0].tensors[0][:32])
    chips = model.chips(2, sigma=0.0)
    gains = [float(chips[0].ramp[c, 0, 0]) for c in range(2)]
    assert abs(gains[0] - 1) > 0.05  # the chips really are off
    s, points = best_scale(chips[0], calib[0])
    live = points[0] > 0  # neurons that fire inside their window on some calibration input
    assert int(live.sum()) > 10
    expected = torch.tensor(gains, dtype=torch.float64).view(2, 1).expand_as(s[:, 0, :])
    assert torch.allclose(s[:, 0, :], expected, rtol=1e-4)
    nominal = run_program(model.program, model.nominal(), x, cfg, RunOptions(tta=False), with_energy=False)
    thr = model.thresholds(chips, calib, "ideal")
    fixed = run_program(model.program, chips, x, cfg, RunOptions(tta=False), thr, with_energy=False)
    for name, layer in nominal.layers.items():
        same = (fixed.layers[name].steps == layer.steps).double().mean()
        assert float(same) > 0.995, name


def test_best_scale_from_read_sums_equals_the_charges_of_every_point(lenet_snn, small_resnet, digits):
    """The read's sums give the same s* as integrating every chip's charge on every calibration point,
    with one copy of the cells and with four (positions on different cells), with stuck cells."""
    checked = 0
    for snn, x_cal, copies in ((lenet_snn, digits[0].tensors[0][:24], 1), (lenet_snn, digits[0].tensors[0][:24], 4),
                               (small_resnet, torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2)), 1)):
        cfg = HardwareConfig(sigma=0.2, sigma_chip=0.1, stuck_off_rate=0.02, conv_copies=copies)
        model = PEModel.from_snn(snn, cfg)
        calib = model.calibrate(x_cal)
        for chip, cal in zip(model.chips(3), calib):
            s, points = best_scale(chip, cal)
            s_ref, points_ref = best_scale_from_charges(chip, cal)
            assert s.shape == s_ref.shape and torch.equal(points, points_ref), chip.crossbar.layer.name
            assert torch.allclose(s, s_ref, rtol=1e-10, atol=1e-12), chip.crossbar.layer.name
            checked += int(chip.weight.shape[1] == copies)
    assert checked >= 6
