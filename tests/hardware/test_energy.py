"""The per-layer accounting checked against hand calculations (a 2-input, 1-neuron crossbar)."""
import math

import pytest
import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.crossbar import make_chips, program_crossbar
from spikec.hardware.energy import layer_energy, rate_layer_energy, run_cycles
from spikec.hardware.extract import PELayer
from spikec.hardware.timing import RunOptions, run_layer

INF = float("inf")

# round numbers so the hand calculation is short
CFG = HardwareConfig(
    v_read=0.2, clock_hz=50e6, opamp_power_w=10e-6, comparator_energy_j=20e-15, spike_energy_j=50e-15,
    wakeup_energy_j=200e-15, driver_energy_j=10e-15, buffer_energy_per_bit_j=0.5e-12, tile_leakage_w=1e-6,
    control_power_w=20e-6, window_bits=3, cell_levels=5, cells_per_weight=1,
)
DT = 20e-9
V2 = 0.04


def _pure(t_out, stop, gating):
    g_pos = torch.tensor([[2e-6], [1e-6]], dtype=torch.float64)
    g_neg = torch.tensor([[1e-6], [3e-6]], dtype=torch.float64)
    t_in = torch.tensor([[[1.0, 3.0]]])
    return layer_energy(g_pos, g_neg, t_in, torch.tensor([[[t_out]]]), torch.tensor([[stop]]), CFG,
                        power_gating=gating)


def _check(e, crossbar, opamp_cycles, cmp_cycles, spikes, wake, reads, latency_cycles):
    assert float(e["crossbar"]) == pytest.approx(crossbar, rel=1e-12, abs=0)
    assert float(e["opamp"]) == pytest.approx(10e-6 * DT * opamp_cycles, rel=1e-12, abs=0)
    assert float(e["comparator"]) == pytest.approx(20e-15 * cmp_cycles, rel=1e-12, abs=0)
    assert float(e["spike"]) == pytest.approx(50e-15 * spikes, rel=1e-12, abs=0)
    assert float(e["wakeup"]) == pytest.approx(wake, rel=1e-12, abs=0)
    assert float(e["neuron"]) == pytest.approx(float(e["opamp"] + e["comparator"] + e["spike"] + e["wakeup"]), rel=1e-12, abs=0)
    assert float(e["latency_s"]) == pytest.approx(latency_cycles * DT, rel=1e-12, abs=0)
    assert float(e["static"]) == pytest.approx((1e-6 + 20e-6) * latency_cycles * DT, rel=1e-12, abs=0)
    assert float(e["buffer"]) == pytest.approx(3 * 0.5e-12 * (reads + spikes), rel=1e-12, abs=0)
    parts = sum(float(e[k]) for k in ("crossbar", "neuron", "driver", "buffer", "static"))
    assert float(e["total"]) == pytest.approx(parts, rel=1e-12, abs=0)


def test_pure_function_with_power_gating():
    # rows switched on at steps 1 and 3, neuron fires at 6, run stops at 8
    e = _pure(6.0, 8.0, True)
    # row 0: (2+1) uS for 6-1 = 5 cycles; row 1: (1+3) uS for 6-3 = 3 cycles
    _check(e, V2 * DT * (3e-6 * 5 + 4e-6 * 3), 6, 6, 1, 200e-15, 2, 8)
    assert float(e["driver"]) == pytest.approx(2 * 10e-15, rel=1e-9, abs=0)


def test_pure_function_without_power_gating():
    e = _pure(6.0, 8.0, False)
    # everything stays on until the run stops at 8; no wake-up
    _check(e, V2 * DT * (3e-6 * 7 + 4e-6 * 5), 8, 8, 1, 0.0, 2, 8)


def test_pure_function_with_tta_stop():
    # the layer stops at 5: the neuron (which would fire at 6) is silent
    e = _pure(INF, 5.0, True)
    _check(e, V2 * DT * (3e-6 * 4 + 4e-6 * 2), 5, 5, 0, 200e-15, 2, 5)


def test_row_end_and_fire_start():
    g = torch.tensor([[1e-6], [1e-6]], dtype=torch.float64)
    t_in = torch.tensor([[[2.0, 8.0]]])
    # row 0 switches off at 8 whatever the neuron does; row 1 (a ramp) runs until the neuron ends at 11
    e = layer_energy(g, g, t_in, torch.tensor([[[11.0]]]), torch.tensor([[16.0]]), CFG,
                     row_end=torch.tensor([8.0, INF]), fire_start=8.0, buffered_rows=1)
    assert float(e["crossbar"]) == pytest.approx(V2 * DT * (2e-6 * 6 + 2e-6 * 3), rel=1e-9, abs=0)
    assert float(e["comparator"]) == pytest.approx(20e-15 * 3, rel=1e-9, abs=0)
    assert float(e["spikes_in"]) == 1 and float(e["driver"]) == pytest.approx(2 * 10e-15, rel=1e-9, abs=0)


def test_a_row_with_only_zero_weights_is_neither_driven_nor_read():
    # row 1 holds no weight in any column tile (col_tiles 0): its spike is not read, its driver not charged,
    # and its zero-conductance cells conduct nothing; row 0 reaches two column tiles
    g = torch.tensor([[1e-6], [0.0]], dtype=torch.float64)
    t_in = torch.tensor([[[1.0, 2.0]]])
    e = layer_energy(g, g, t_in, torch.tensor([[[6.0]]]), torch.tensor([[8.0]]), CFG, col_tiles=torch.tensor([2.0, 0.0]))
    assert float(e["spikes_in"]) == 1
    assert float(e["buffer"]) == pytest.approx(3 * 0.5e-12 * (1 + 1), rel=1e-12, abs=0)
    assert float(e["driver"]) == pytest.approx(2 * 10e-15, rel=1e-12, abs=0)
    assert float(e["crossbar"]) == pytest.approx(V2 * DT * 2e-6 * 5, rel=1e-9, abs=0)
    dense = layer_energy(g + 1e-6, g + 1e-6, t_in, torch.tensor([[[6.0]]]), torch.tensor([[8.0]]), CFG,
                         col_tiles=torch.tensor([2.0, 1.0]))
    assert float(dense["spikes_in"]) == 2  # the same row with a weight is read


def test_chips_batch_and_copies():
    g = torch.tensor([[1e-6]], dtype=torch.float64)
    per_chip = torch.stack([g, 2 * g]).unsqueeze(1)  # [2 chips, 1 copy, 1 row, 1 neuron]
    t_in = torch.zeros(2, 3, 1, 1)  # [chips, samples, P, rows]
    t_out = torch.full((2, 3, 1, 1), 4.0)
    e = layer_energy(per_chip, per_chip, t_in, t_out, torch.full((2, 3, 1), 4.0), CFG)
    assert e["crossbar"].shape == (2, 3)
    assert float(e["crossbar"][1, 0]) == pytest.approx(2 * float(e["crossbar"][0, 0]), rel=1e-9, abs=0)
    # 5 positions on 2 copies: runs (p0,p1), (p2,p3), (p4) last the longest stop of their positions
    stop = torch.tensor([[3.0, 5.0, 2.0, 2.0, 7.0]])
    assert float(run_cycles(stop, 2)) == 5 + 2 + 7
    assert float(run_cycles(stop, 1)) == 19


def _one_neuron_layer():
    layer = PELayer("fc", "linear", torch.tensor([[0.5, -0.25]], dtype=torch.float64), None, (2,), (1,), None,
                    False, 1.0)
    xb = program_crossbar(layer, CFG)
    return xb, make_chips(xb, CFG, 1, 0)


def test_programmed_two_input_crossbar():
    xb, _ = _one_neuron_layer()
    span = CFG.g_on - CFG.g_off
    # w_max = 0.5: +0.5 -> G_on; -0.25 -> half range on G-; two ramp rows of weight 0.5 each at G_on
    assert xb.ramp_rows == 2 and xb.bias_rows == 0
    expected_pos = [CFG.g_on, CFG.g_off, CFG.g_on, CFG.g_on]
    expected_neg = [CFG.g_off, CFG.g_off + 0.5 * span, CFG.g_off, CFG.g_off]
    assert xb.g_pos[:, 0].tolist() == pytest.approx(expected_pos, rel=1e-9, abs=0)
    assert xb.g_neg[:, 0].tolist() == pytest.approx(expected_neg, rel=1e-9, abs=0)


@pytest.mark.parametrize("case", ["gated", "not_gated", "tta_time", "no_tta"])
def test_two_input_one_neuron_run_by_hand(case):
    """Input spikes at steps 2 and 4 of an 8-step window: charge 0.5*6/8 - 0.25*4/8 = 0.25.

    The ramp adds 1/8 per step; the comparator fires in the first step m with
    0.25 + (m+1)/8 >= 1 + 1/16, i.e. m = 6 (cycle boundary 8 + 7 = 15).
    """
    xb, chip = _one_neuron_layer()
    opts = {"gated": RunOptions(True, True, 1.0), "not_gated": RunOptions(False, True, 1.0),
            "tta_time": RunOptions(True, True, 1.0, 5), "no_tta": RunOptions(True, False)}[case]
    steps_in = torch.tensor([[[2.0, 4.0]]])  # [chips, batch, inputs]
    run = run_layer(chip, steps_in, CFG, opts)
    e = {k: float(v[0, 0]) for k, v in run.energy.items()}
    g_on, g_off = CFG.g_on, CFG.g_off
    half = g_off + 0.5 * (g_on - g_off)
    inputs = (g_on + g_off) * 6 + (g_off + half) * 4  # input rows: on from 2 and 4 until the window closes at 8
    ramp = 2 * (g_on + g_off)  # two ramp rows
    if case == "tta_time":  # stop 5 steps into the window: the neuron (step 6) is silent
        assert math.isinf(float(run.steps[0, 0, 0]))
        end, stop, fired = 13, 13, 0
    elif case == "no_tta":  # the run lasts the whole window (boundary 16)
        end, stop, fired = 15, 16, 1
    else:  # TTA with fraction 1: the run stops once its only neuron fired
        end, stop, fired = (15, 15, 1)
    if case == "not_gated":
        end = stop
    if fired:
        assert float(run.steps[0, 0, 0]) == 6
    assert e["crossbar"] == pytest.approx(V2 * DT * (inputs + ramp * (end - 8)), rel=1e-12, abs=0)
    assert e["opamp"] == pytest.approx(10e-6 * DT * end, rel=1e-12, abs=0)
    assert e["comparator"] == pytest.approx(20e-15 * (end - 8), rel=1e-12, abs=0)
    assert e["spike"] == pytest.approx(50e-15 * fired, rel=1e-9, abs=0)
    assert e["wakeup"] == pytest.approx(0.0 if case == "not_gated" else 200e-15, rel=1e-9, abs=0)
    assert e["driver"] == pytest.approx(10e-15 * 4, rel=1e-9, abs=0)  # 2 inputs + 2 ramp rows, one column tile
    assert e["buffer"] == pytest.approx(3 * 0.5e-12 * (2 + fired), rel=1e-9, abs=0)
    assert e["latency_s"] == pytest.approx(stop * DT, rel=1e-9, abs=0)
    assert e["static"] == pytest.approx(21e-6 * stop * DT, rel=1e-9, abs=0)


def test_rate_layer_by_hand():
    g_pos = torch.tensor([[2e-6], [1e-6]], dtype=torch.float64)
    g_neg = torch.tensor([[1e-6], [3e-6]], dtype=torch.float64)
    # 5 row pulses, 3 output spikes, T = 8 steps, one position
    e = rate_layer_energy(g_pos, g_neg, 5.0, 3.0, 8, 1, CFG)
    mean_row = (3e-6 + 4e-6) / 2
    assert float(e["crossbar"]) == pytest.approx(V2 * CFG.read_pulse_s * 5 * mean_row, rel=1e-12, abs=0)  # 10 ns pulses
    assert float(e["neuron"]) == pytest.approx((10e-6 * DT + 20e-15) * 8 + 50e-15 * 3, rel=1e-9, abs=0)
    assert float(e["driver"]) == pytest.approx(10e-15 * 5, rel=1e-9, abs=0)
    assert float(e["buffer"]) == pytest.approx(3 * 0.5e-12 * (5 + 3), rel=1e-9, abs=0)  # ceil(log2 8) = 3 bits
    assert float(e["latency_s"]) == pytest.approx(8 * DT, rel=1e-9, abs=0)
