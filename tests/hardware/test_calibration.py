"""The yan-vlsi2019 calibration: pJ/MAC by hand, the measured figures, the derived twin-column preset, errors."""
import re
from importlib import resources

import pytest

from spikec.errors import UsageError
from spikec.hardware.calibration import (TWIN_NODE, YAN_NODE, YAN_VLSI2019, MacroWorkload, calibrate_neuron_power,
                                         compare_with_chip, derive_twin_column, macro_figures, scale_analog,
                                         scale_digital)
from spikec.hardware.config import PRESETS, HardwareConfig, field_docs, load_config, preset
from spikec.hardware.report import add_energy_per_mac


@pytest.fixture(scope="module")
def yan():
    return preset("yan-vlsi2019")


def test_small_layer_pj_per_mac_by_hand(yan):
    """4 rows x 2 neurons, 2-bit inputs (T = 4) at activity 0.5: 8 row pulses, 2 output spikes, 8 MACs."""
    g_on, g_off = 1 / 100e3, 1 / 1.7e6
    crossbar = 0.1**2 * 10e-9 * 8 * 2 * (g_on + g_off)  # V^2 * t_pulse * pulses * (row conductance: 2 pairs)
    neuron = 7.32e-6 * 20e-9 * 4 * 2  # P * dt * T * K; comparator and spike lumped into P (0 J)
    driver = 20e-15 * 8
    static = (10e-6 + 200e-6) * 4 * 20e-9  # (macro leakage + control) * latency
    total = crossbar + neuron + driver + static
    got = macro_figures(yan, MacroWorkload(rows=4, neurons=2, input_bits=2, input_activity=0.5, output_activity=0.25))
    assert got["macs"] == 8
    assert got["energy_per_mac_j"] == pytest.approx(total / 8, rel=1e-12, abs=0)
    assert got["latency_s"] == pytest.approx(4 * 20e-9, rel=1e-12, abs=0)
    assert got["power_w"] == pytest.approx(total / (4 * 20e-9), rel=1e-12, abs=0)
    parts = got["components_j"]
    assert parts["crossbar"] == pytest.approx(crossbar, rel=1e-12, abs=0)
    assert parts["opamp"] == pytest.approx(neuron, rel=1e-12, abs=0)
    assert parts["buffer"] == 0.0 and parts["comparator"] == 0.0


def test_preset_reproduces_the_measured_chip(yan):
    c = compare_with_chip(yan)
    assert "256x128" in c["workload"] and "activity 0.25" in c["workload"]
    assert c["measured"] == {"energy_per_mac_j": 0.257e-12, "power_w": 1.52e-3}
    assert c["ratio"]["energy_per_mac"] == pytest.approx(1.0, abs=0.01)  # calibrated (3-digit rounding)
    assert abs(c["ratio"]["power"] - 1) <= 0.25  # the check: MACs per second of the macro at 50 MHz
    # power / (J/MAC) is the throughput: 256 x 128 MACs every 256 cycles of 20 ns
    assert c["model"]["power_w"] / c["model"]["energy_per_mac_j"] == pytest.approx(256 * 128 / (256 * 20e-9), rel=1e-9, abs=0)


def test_preset_value_is_the_calibration(yan):
    p = calibrate_neuron_power(yan)
    assert yan.opamp_power_w == pytest.approx(p, rel=5e-3, abs=0)
    # the fit is linear in the neuron power: the calibrated power gives exactly the measured pJ/MAC
    assert macro_figures(yan.replace(opamp_power_w=p))["energy_per_mac_j"] == pytest.approx(0.257e-12, rel=1e-9, abs=0)
    with pytest.raises(ValueError, match="above the measured"):
        calibrate_neuron_power(yan.replace(control_power_w=1.0))


def test_more_input_activity_costs_more_per_mac(yan):
    low, high = (macro_figures(yan, MacroWorkload(input_activity=a))["energy_per_mac_j"] for a in (0.1, 0.5))
    assert low < YAN_VLSI2019.energy_per_mac_j < high


def test_scaling_rules_by_hand():
    assert scale_digital(1.0, YAN_NODE, TWIN_NODE) == pytest.approx((45 / 150) * (0.9 / 1.5) ** 2, rel=1e-9, abs=0)
    assert scale_analog(1.0, YAN_NODE, TWIN_NODE) == pytest.approx((45 / 150) * (0.9 / 1.5), rel=1e-9, abs=0)
    assert scale_digital(scale_digital(3.0, YAN_NODE, TWIN_NODE), TWIN_NODE, YAN_NODE) == pytest.approx(3.0, rel=1e-9, abs=0)


def test_twin_column_figures_are_derived_from_the_calibration(yan):
    twin = preset("twin-column")
    derived = derive_twin_column(yan, twin)
    assert set(derived) == {"opamp_power_w", "wakeup_energy_j", "driver_energy_j", "tile_leakage_w", "control_power_w"}
    for name, value in derived.items():
        assert getattr(twin, name) == pytest.approx(value, rel=1e-12, abs=0), name
    assert twin.opamp_power_w == pytest.approx(7.32e-6 * 0.3 * 0.6, rel=2e-3, abs=0)
    docs = {d["name"]: d["source"] for d in field_docs()}
    assert all("yan-vlsi2019" in docs[n] for n in derived)
    assert twin.v_read == yan.v_read and twin.read_pulse_s == yan.read_pulse_s  # same device


def test_every_preset_number_states_its_source():
    text = resources.files("spikec.hardware").joinpath("presets", "yan_vlsi2019.toml").read_text()
    lines = text.splitlines()
    keys = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\w+) = ", line)
        if not m:
            continue
        keys.append(m.group(1))
        comment = lines[i - 1].lower()
        assert comment.startswith("#"), m.group(1)
        assert any(w in comment for w in ("assumption", "calibrated", "derived", "talk", "neurosim", "horowitz",
                                          "isaac", "unused")), m.group(1)
    required = {d["name"] for d in field_docs() if d["default"] is not None}
    assert required <= set(keys), sorted(required - set(keys))


def test_presets_are_listed_and_bad_names_fail_in_one_line(tmp_path):
    assert PRESETS == ("twin-column", "yan-vlsi2019")
    with pytest.raises(UsageError) as err:
        preset("yan-vlsi2020")
    assert "yan-vlsi2019" in str(err.value) and "twin-column" in str(err.value) and "\n" not in str(err.value)
    for text, word in (("read_pulse_s = 1e-6\n", "read_pulse_s"), ("opamp_power_w = -1e-6\n", "opamp_power_w"),
                       ("wakeup_on_input = 1\n", "wakeup_on_input")):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(UsageError) as err:
            load_config(path, base=preset("yan-vlsi2019"))
        assert word in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_workload_is_one_line():
    with pytest.raises(ValueError, match="input_activity") as err:
        MacroWorkload(input_activity=1.5)
    assert "\n" not in str(err.value)


def test_energy_per_mac_for_every_design():
    report = {"energy_per_inference_j": {"total": 8e-9},
              "baselines": {"a": {"energy_per_inference_j": {"total": 4e-9}},
                            "b": {"energy_per_inference_j": {"total": None}}},
              "comparison": {"rate": {"qcfs": {"energy_per_inference_j": {"total": 2e-9}}}},
              "tta": [{"energy_per_inference_j": {"total": 1e-9}}]}
    add_energy_per_mac(report, 1000)
    assert report["energy_per_mac_j"] == pytest.approx(8e-12, rel=1e-9, abs=0)
    assert report["baselines"]["a"]["energy_per_mac_j"] == pytest.approx(4e-12, rel=1e-9, abs=0)
    assert report["baselines"]["b"]["energy_per_mac_j"] is None
    assert report["comparison"]["rate"]["qcfs"]["energy_per_mac_j"] == pytest.approx(2e-12, rel=1e-9, abs=0)
    assert report["tta"][0]["energy_per_mac_j"] == pytest.approx(1e-12, rel=1e-9, abs=0)


def test_defaults_are_the_twin_column_preset():
    assert preset("twin-column") == HardwareConfig()
