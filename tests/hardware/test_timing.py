"""Spike times on the chip: an ideal chip reproduces the TTFS SNN exactly; TTA and ramp rules by hand."""
import math

import pytest
import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.evaluate import PEModel
from spikec.hardware.simulate import run_program
from spikec.hardware.timing import RunOptions, fire_steps, kth_firing_step, tta_stop

INF = math.inf


def _snn_steps(snn, x, steps=64):
    snn.set_simulation("stepped", 6)
    with torch.no_grad():
        out = snn.run(x.double())
    snn.set_simulation("analytic", 6)
    return {k: torch.where(v < 1, torch.round(v * steps), torch.full_like(v, INF)) for k, v in out.items()
            if k not in ("encoder", "readout")}, out["readout"]


@pytest.mark.parametrize("name", ["lenet_snn", "mlp_snn"])
@pytest.mark.parametrize("levels", [None, 2**20])
def test_chip_reproduces_snn_spike_times(request, digits, name, levels):
    """Software weights (ideal chip), or 20-bit cells on a nominal chip: every spike at the SNN's step."""
    snn = request.getfixturevalue(name)
    x, y = digits[1].tensors
    x = x[:100]
    model = PEModel.from_snn(snn, HardwareConfig() if levels is None else HardwareConfig(cell_levels=levels))
    chips = model.ideal() if levels is None else model.nominal()
    run = run_program(model.program, chips, x, model.config, RunOptions(tta=False), with_energy=False)
    expected, scores = _snn_steps(snn, x)
    for layer, result in run.layers.items():
        if layer == "readout":
            continue
        steps, got = expected[layer], result.steps[0]
        same = float((got == steps).double().mean())
        assert same == 1.0 if levels is None else same > 0.995, (layer, same)
    # first-spike readout: the chosen class is within one time step of the best score
    charge = scores / snn.readout.scale
    picked = charge.gather(1, run.predictions[0].clamp(min=0).unsqueeze(1)).squeeze(1)
    assert bool((run.predictions[0] >= 0).all())
    assert float((charge.max(1).values - picked).max()) <= 1.0 / 64 + 1e-12


def test_tta_stop_rule():
    steps = torch.tensor([[2.0, INF, 5.0, 3.0]])
    assert tta_stop(steps, 0.5, 8).tolist() == [4.0]  # 2 of 4 fired by the end of step 3
    assert tta_stop(steps, 0.75, 8).tolist() == [6.0]  # 3 of 4 by the end of step 5
    assert tta_stop(steps, 1.0, 8).tolist() == [8.0]  # never all: the window closes
    assert tta_stop(steps, 1.0, 8, first=True).tolist() == [3.0]
    assert tta_stop(steps, 0.75, 8, tta_time=4).tolist() == [4.0]


def test_ramp_slope_and_dead_ramp():
    charge = torch.tensor([0.25, 0.25, 1.2, 0.5], dtype=torch.float64)
    ramp = torch.tensor([1.0, 0.5, -0.1, -0.1], dtype=torch.float64)
    theta = torch.ones(4, dtype=torch.float64)
    one = fire_steps(charge, ramp, theta, 8)
    two = fire_steps(charge, ramp, theta, 8, windows=2)
    # slope 1: 0.25 + (m+1)/8 >= 1 + 1/16 first at m = 6; slope 1/2 needs 12 steps (second window)
    assert one.tolist() == [6.0, INF, 0.0, INF]
    assert two.tolist() == [6.0, 12.0, 0.0, INF]


def test_tta_silences_late_neurons_and_saves(mlp_snn, digits):
    x, y = digits[1].tensors
    model = PEModel.from_snn(mlp_snn, HardwareConfig())
    chips = model.nominal()
    full = model.evaluate(chips, x[:80], y[:80], RunOptions(tta=False))
    cut = model.evaluate(chips, x[:80], y[:80], RunOptions(tta=True, tta_fraction=0.3))
    assert cut.spikes < full.spikes
    assert cut.latency_s < full.latency_s
    assert cut.energy["total"] < full.energy["total"]
    gated = model.evaluate(chips, x[:80], y[:80], RunOptions(power_gating=True, tta=False))
    ungated = model.evaluate(chips, x[:80], y[:80], RunOptions(power_gating=False, tta=False))
    assert gated.energy["crossbar"] < ungated.energy["crossbar"]
    assert gated.energy["neuron"] < ungated.energy["neuron"]
    assert gated.accuracy == ungated.accuracy and gated.latency_s == ungated.latency_s


def test_conv_copies_run_positions_in_parallel(lenet_snn, digits):
    x, y = digits[1].tensors[0][:50], digits[1].tensors[1][:50]
    one = PEModel.from_snn(lenet_snn, HardwareConfig())
    four = PEModel.from_snn(lenet_snn, HardwareConfig(conv_copies=4))
    a = one.evaluate(one.nominal(), x, y, RunOptions(tta=False))
    b = four.evaluate(four.nominal(), x, y, RunOptions(tta=False))
    first = one.layer_names[0]
    assert b.layers[first]["tiles"]["tiles"] == 4 * a.layers[first]["tiles"]["tiles"]
    assert b.layers[first]["latency_s"] == pytest.approx(a.layers[first]["latency_s"] / 4, rel=1e-9, abs=0)
    assert b.accuracy == a.accuracy and b.spikes == a.spikes
    assert b.energy["crossbar"] == pytest.approx(a.energy["crossbar"], rel=1e-9, abs=0)
    # each copy is its own set of cells: under variation the copies differ
    chips = four.chips(1, sigma=0.1)
    assert not torch.equal(chips[0].g_pos[0, 0], chips[0].g_pos[0, 1])
    assert four.predict(chips, x, RunOptions()).shape == (1, 50)


def _stepped_reference(charge, ramp, theta, steps, windows=1):
    """The firing rule as the TTFS neuron states it (``fire_stepped`` per window), for comparison."""
    from spikec.conversion.ttfs_neuron import fire_stepped

    good = ramp > 0
    r = torch.where(good, ramp, torch.ones_like(ramp))
    c, th = charge / r, theta / r
    out = torch.full_like(charge, INF)
    for w in range(windows):
        tau = fire_stepped(c + w, steps, th, 1.0)
        hit = (tau < 1.0) & torch.isinf(out)
        out = torch.where(hit, torch.round(tau * steps) + w * steps, out)
    at_once = torch.where(charge >= theta, torch.zeros_like(charge), torch.full_like(charge, INF))
    return torch.where(~good, at_once, out)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("windows", [1, 2])
def test_fire_steps_equals_the_neuron_rule(dtype, windows):
    """The written-out rule equals the TTFS neuron's stepped rule on random charges, slopes and thresholds,
    on step boundaries too, with dead ramps and in the charge's dtype."""
    gen = torch.Generator().manual_seed(5)
    S = 64
    charge = (torch.rand(4000, generator=gen, dtype=torch.float64) * 3 - 1.5)
    charge[:500] = torch.randint(-70, 70, (500,), generator=gen).double() / S + 0.5 / S  # exactly on boundaries
    ramp = torch.exp(torch.randn(4000, generator=gen, dtype=torch.float64) * 0.2)
    ramp[::97] = -0.05  # dead ramp cells
    theta = torch.exp(torch.randn(4000, generator=gen, dtype=torch.float64) * 0.1)
    ramp[:500], theta[:500] = 1.0, 1.0  # ideal pairs: these charges put the rule exactly on a step boundary
    c, r, t = charge.to(dtype), ramp.to(dtype), theta.to(dtype)
    got = fire_steps(c, r, t, S, windows)
    assert got.dtype == dtype
    assert torch.equal(got, _stepped_reference(c, r, t, S, windows))
    assert bool(torch.isfinite(got).any()) and bool(torch.isinf(got).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_firing_step_equals_kthvalue(dtype):
    """The selective k-th smallest equals torch.kthvalue over every position, silent neurons (inf) included,
    on a layout that is not contiguous in the neuron dimension (as conv outputs are)."""
    gen = torch.Generator().manual_seed(3)
    for silent in (0.0, 0.5, 0.9, 1.0):
        steps = torch.randint(0, 16, (3, 4, 10, 50), generator=gen).to(dtype)
        steps[torch.rand(steps.shape, generator=gen) < silent] = float("inf")
        steps = steps.transpose(-1, -2)  # [3, 4, 50, 10]
        for k in (1, 2, 7, 10):
            want = torch.kthvalue(steps, k, dim=-1).values
            got = kth_firing_step(steps, k)
            assert got.dtype == dtype and torch.equal(got, want), (silent, k)
