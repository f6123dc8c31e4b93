"""Event-driven wake-up: the integrators of a run stay off until its first row current, checked by hand."""
import pytest
import torch

from spikec.hardware.comparison import mechanism_shares
from spikec.hardware.config import HardwareConfig
from spikec.hardware.crossbar import make_chips, program_crossbar
from spikec.hardware.energy import layer_energy, wake_steps
from spikec.hardware.extract import PELayer
from spikec.hardware.timing import RunOptions, run_layer

INF = float("inf")
DT = 20e-9
CFG = HardwareConfig(opamp_power_w=10e-6, wakeup_energy_j=200e-15, window_bits=3, cell_levels=5)


def test_wake_step_is_the_first_row_switched_on():
    t_in = torch.tensor([[[3.0, 5.0, INF], [INF, INF, INF], [6.0, 0.0, 2.0]]])  # [1, P=3, rows]
    stop = torch.tensor([[9.0, 4.0, 9.0]])
    assert wake_steps(t_in, stop).tolist() == [[3.0, 4.0, 0.0]]  # a run with no input wakes only when it stops


@pytest.mark.parametrize("gating", [True, False])
def test_opamp_energy_by_hand(gating):
    g = torch.tensor([[1e-6], [1e-6]], dtype=torch.float64)
    t_in = torch.tensor([[[3.0, 5.0]]])  # first input spike at step 3
    t_out, stop = torch.tensor([[[7.0]]]), torch.tensor([[9.0]])
    end = 7 if gating else 9
    off = layer_energy(g, g, t_in, t_out, stop, CFG, power_gating=gating)
    on = layer_energy(g, g, t_in, t_out, stop, CFG.replace(wakeup_on_input=True), power_gating=gating)
    assert float(off["opamp"]) == pytest.approx(10e-6 * DT * end, rel=1e-12, abs=0)
    assert float(on["opamp"]) == pytest.approx(10e-6 * DT * (end - 3), rel=1e-12, abs=0)
    assert float(on["wakeup"]) == pytest.approx(200e-15, rel=1e-12, abs=0)  # woken once, gating or not
    assert float(off["wakeup"]) == pytest.approx(200e-15 if gating else 0.0, rel=1e-12, abs=0)
    for k in ("crossbar", "comparator", "spike", "driver", "buffer", "static", "latency_s"):
        assert float(on[k]) == float(off[k]), k  # nothing else changes


def test_two_input_neuron_run_by_hand():
    """The 2-input neuron of test_energy (inputs at steps 2 and 4, fires at boundary 15); with a bias row from step 0."""
    layer = PELayer("fc", "linear", torch.tensor([[0.5, -0.25]], dtype=torch.float64), None, (2,), (1,), None, False, 1.0)
    biased = PELayer("fc", "linear", layer.weight, torch.tensor([0.1], dtype=torch.float64), (2,), (1,), None, False, 1.0)
    steps_in = torch.tensor([[[2.0, 4.0]]])
    opts = RunOptions(True, True, 1.0)
    for pe_layer, wake in ((layer, 2), (biased, 0)):
        cfg = CFG.replace(wakeup_on_input=True)
        xb = program_crossbar(pe_layer, cfg)
        on = run_layer(make_chips(xb, cfg, 1, 0), steps_in, cfg, opts)
        off = run_layer(make_chips(xb, CFG, 1, 0), steps_in, CFG, opts)
        assert torch.equal(on.steps, off.steps) and torch.equal(on.stop, off.stop)  # spike times do not change
        end = 8 + float(off.steps[0, 0, 0]) + 1
        assert float(on.energy["opamp"][0, 0]) == pytest.approx(10e-6 * DT * (end - wake), rel=1e-12, abs=0)
        assert float(off.energy["opamp"][0, 0]) == pytest.approx(10e-6 * DT * end, rel=1e-12, abs=0)


class _Runs:
    """Stand-in for PERuns: energies per (power gating, TTA, wake-up)."""

    def __init__(self, table):
        self.table = table

    def __call__(self, pg, tta, wake):
        class R:
            energy = {"total": self.table[(pg, tta, wake)]}
        return R()


def test_mechanism_shares_add_up():
    table = {(True, True, True): 10.0, (False, False, False): 20.0, (False, True, True): 13.0,
             (True, False, True): 14.0, (True, True, False): 11.0}
    m = mechanism_shares(_Runs(table))
    assert m["saving_j"] == 10.0 and m["saving_fraction"] == 0.5
    assert (m["power_gating"]["saving_j"], m["tta"]["saving_j"], m["wakeup"]["saving_j"]) == (3.0, 4.0, 1.0)
    assert m["power_gating"]["share"] == pytest.approx(0.3, rel=1e-9, abs=0) and m["tta"]["saving_fraction"] == pytest.approx(4 / 14, rel=1e-9, abs=0)
    assert m["interaction"]["saving_j"] == pytest.approx(2.0, rel=1e-9, abs=0)
    total = sum(m[k]["share"] for k in ("power_gating", "tta", "wakeup", "interaction"))
    assert total == pytest.approx(1.0, rel=1e-9, abs=0)


def test_wakeup_on_a_network_saves_energy_only(mlp_snn, digits):
    from spikec.hardware.evaluate import PEModel

    x, y = digits[1].tensors
    x, y = x[:40], y[:40]
    results = []
    for wake in (False, True):
        model = PEModel.from_snn(mlp_snn, HardwareConfig(wakeup_on_input=wake))
        results.append(model.evaluate(model.nominal(), x, y, RunOptions.from_config(model.config)))
    off, on = results
    assert on.accuracy == off.accuracy and on.spikes == off.spikes and on.latency_s == off.latency_s
    assert on.energy["opamp"] <= off.energy["opamp"] + 1e-24
    assert on.energy["crossbar"] == pytest.approx(off.energy["crossbar"], rel=1e-12, abs=0)


@pytest.mark.parametrize("late", [2, 4, 8])
def test_late_bias_keeps_spike_times_and_wakes_at_the_first_input(late):
    """Bias rows on for the window's last S/late steps at late x the levels: same charge, later wake-up."""
    biased = PELayer("fc", "linear", torch.tensor([[0.5, -0.25]], dtype=torch.float64),
                     torch.tensor([0.125], dtype=torch.float64), (2,), (1,), None, False, 1.0)  # bias on the grid
    S = CFG.window_steps
    opts = RunOptions(True, True, 1.0)
    base = CFG.replace(wakeup_on_input=True)
    lated = base.replace(late_bias=late)
    bias_on = S - S // late
    for first in (2.0, 7.0):  # an input before and one after the bias rows switch on
        steps_in = torch.tensor([[[first, 7.0]]])
        ref = run_layer(make_chips(program_crossbar(biased, base), base, 1, 0), steps_in, base, opts)
        xb = program_crossbar(biased, lated)
        got = run_layer(make_chips(xb, lated, 1, 0), steps_in, lated, opts)
        assert torch.equal(got.steps, ref.steps) and torch.equal(got.stop, ref.stop)
        assert xb.bias_rows == -(-late // (CFG.cell_levels - 1))  # late levels, cell_levels - 1 a row
        end = S + float(ref.steps[0, 0, 0]) + 1
        wake = min(first, bias_on)
        assert float(got.energy["opamp"][0, 0]) == pytest.approx(10e-6 * DT * (end - wake), rel=1e-12, abs=0)
        assert float(ref.energy["opamp"][0, 0]) == pytest.approx(10e-6 * DT * end, rel=1e-12, abs=0)  # woken at 0


def test_late_bias_must_divide_the_window():
    for bad in (3, 0, 16):
        with pytest.raises(ValueError, match="late_bias"):
            CFG.replace(late_bias=bad)  # S = 8 steps


def test_late_bias_on_a_network_wakes_integrators_later(mlp_snn, digits):
    """Late bias rounds a bias to step / late instead of step, so an output may move by a step: near-equal runs."""
    from spikec.hardware.evaluate import PEModel

    x, y = digits[1].tensors
    x, y = x[:40], y[:40]
    results = []
    for late in (1, 16):
        model = PEModel.from_snn(mlp_snn, HardwareConfig(wakeup_on_input=True, late_bias=late))
        results.append(model.evaluate(model.nominal(), x, y, RunOptions.from_config(model.config)))
    early, late = results
    assert late.accuracy == early.accuracy and late.spikes == early.spikes
    assert late.latency_s == pytest.approx(early.latency_s, rel=1e-3, abs=0)
    assert late.energy["opamp"] < 0.99 * early.energy["opamp"]
