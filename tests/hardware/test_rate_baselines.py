"""Rate baselines at equal accuracy: percentile and QCFS conversions, the step search, stratified draws."""
import pytest
import torch
from torch import nn

import spikec.data.sample as sample
from spikec.conversion.qcfs import QCFS
from spikec.errors import UsageError
from spikec.hardware.baselines import (RateBaselineOptions, iso_accuracy_rate, qcfs_network, rate_counts_energy,
                                       rate_networks, rate_snn_energy, reram_adc_energy, value_network)
from spikec.hardware.comparison import ASTERS, PERuns, equal_accuracy_comparison
from spikec.hardware.config import HardwareConfig
from spikec.hardware.evaluate import PEModel
from spikec.hardware.timing import RunOptions

FAST = RateBaselineOptions(timesteps=(4, 8, 16), calib_samples=64, qcfs_epochs=1, qcfs_samples=128)


@pytest.fixture(scope="module")
def setup(mlp_snn, digits):
    model = PEModel.from_snn(mlp_snn, HardwareConfig())
    x, y = digits[1].tensors
    return model, x[:60], y[:60]


@pytest.mark.parametrize("kw, word", [
    (dict(methods=("percentile", "ttfs")), "ttfs"), (dict(methods=()), "methods"),
    (dict(timesteps=(0, 8)), "timesteps"), (dict(stop_saving=1.0), "stop_saving"), (dict(qcfs_levels=0), "qcfs_levels"), (dict(qcfs_lr=0.0), "qcfs_lr"),
])
def test_bad_options_are_one_line(kw, word):
    with pytest.raises(UsageError) as err:
        RateBaselineOptions(**kw)
    assert word in str(err.value) and "\n" not in str(err.value)


def test_timesteps_are_tried_fewest_first():
    assert RateBaselineOptions(timesteps=(32, 8, 16)).timesteps == (8, 16, 32)


def test_search_stops_at_the_fewest_steps(setup, mlp_snn, digits):
    model, x, y = setup
    nets = rate_networks(mlp_snn, *digits[0].tensors, RateBaselineOptions(methods=("percentile",), calib_samples=64))
    net = nets["percentile"][1]
    before = net.timesteps
    first = iso_accuracy_rate(model, net, x, y, 0.0, (4, 8, 16))
    assert first["timesteps"] == 4 and first["reached"] and len(first["search"]) == 1
    never = iso_accuracy_rate(model, net, x, y, 1.01, (4, 8, 16))
    assert never["timesteps"] == 16 and not never["reached"]
    assert [s["timesteps"] for s in never["search"]] == [4, 8, 16]
    # the energy grows with the steps (IF neurons are powered for every step)
    energies = [s["energy_j"] for s in never["search"]]
    assert energies == sorted(energies)
    mid = [s for s in never["search"] if s["accuracy"] >= never["search"][0]["accuracy"] + 1e-9]
    if mid:  # the first T reaching an intermediate target is the one picked
        pick = iso_accuracy_rate(model, net, x, y, mid[0]["accuracy"], (4, 8, 16))
        assert pick["timesteps"] == mid[0]["timesteps"]
    assert net.timesteps == before  # restored


def test_search_stops_at_the_energy_bound_and_keeps_the_baseline_counts(setup, mlp_snn, digits):
    model, x, y = setup
    net = rate_networks(mlp_snn, *digits[0].tensors, RateBaselineOptions(methods=("percentile",), calib_samples=64))["percentile"][1]
    never = iso_accuracy_rate(model, net, x, y, 1.01, (4, 8, 16))
    assert not never["stopped_at_energy_bound"]
    bound = never["search"][1]["energy_j"]  # reached at T = 8
    cut = iso_accuracy_rate(model, net, x, y, 1.01, (4, 8, 16), energy_bound=bound)
    assert [s["timesteps"] for s in cut["search"]] == [4, 8] and cut["timesteps"] == 8
    assert cut["stopped_at_energy_bound"] and not cut["reached"] and cut["energy_bound_j"] == bound
    assert cut["energy_per_inference_j"]["total"] == never["search"][1]["energy_j"]
    # the baseline's T is simulated even past the bound, and its counts give the baseline of a run of its own
    kept = iso_accuracy_rate(model, net, x, y, 1.01, (4, 8, 16), energy_bound=bound, keep_counts_at=32)
    # the verdict is settled at T = 8 as before: the entry is T = 8, the counts are T = 32's
    assert kept["timesteps"] == 8 and kept["stopped_at_energy_bound"] and kept["counts"].timesteps == 32
    assert kept["search"] == cut["search"]
    alone = rate_snn_energy(model, net, x, y, timesteps=32)
    shared = rate_counts_energy(model, kept["counts"], x)
    assert shared["accuracy"] == alone["accuracy"]
    assert shared["energy_per_inference_j"]["total"] == pytest.approx(alone["energy_per_inference_j"]["total"], rel=1e-12)
    # a target met before the baseline's T: the entry is the first T reaching it, the run goes on to T = 16
    early = iso_accuracy_rate(model, net, x, y, 0.0, (4, 8, 16), keep_counts_at=16)
    assert early["timesteps"] == 4 and early["reached"] and early["counts"].timesteps == 16


def test_reram_adc_counts_the_unrolled_row_pulses(setup):
    """The source-map count equals popcounts summed over the unrolled [P, rows] values (the definition)."""
    import math

    from spikec.hardware.simulate import run_program

    model, x, _ = setup
    got = reram_adc_energy(model, x[:20])
    c = model.config
    run = run_program(model.program, model.ideal(), x[:20], c, RunOptions(tta=False), with_energy=False, keep=True)
    for xb in model.crossbars:
        v = run.layers[xb.layer.name].values[0]  # [B, P, N]
        q = torch.round(v.clamp(0, 1) * (2 ** c.ann_bits - 1)).long()
        pc = sum(((q >> b) & 1) for b in range(c.ann_bits)).double()
        row_g = (xb.g_pos[: xb.input_rows] + xb.g_neg[: xb.input_rows]).sum(-1)
        crossbar = c.v_read ** 2 * c.read_pulse_s * float((pc * row_g).sum()) / 20
        assert got["layers"][xb.layer.name]["energy_per_inference_j"]["crossbar"] == pytest.approx(crossbar, rel=1e-12)
        assert math.isfinite(crossbar) and crossbar > 0


def test_qcfs_network_replaces_every_relu(mlp_snn):
    ann = value_network(mlp_snn)
    q = qcfs_network(ann, torch.zeros(1), torch.zeros(1), RateBaselineOptions(qcfs_epochs=0, qcfs_levels=4))
    relus = [i for i, m in enumerate(ann) if isinstance(m, nn.ReLU)]
    assert relus and all(isinstance(q[i], QCFS) and q[i].levels == 4 for i in relus)
    assert any(isinstance(m, nn.ReLU) for m in ann)  # the original is left alone
    x = torch.rand(5, 1, 8, 8)
    h = x
    for i, m in enumerate(ann):  # without fine-tuning: the same weights, activations floor-quantised on [0, 1]
        h = m(h)
        if i in relus:
            h = torch.clamp(torch.floor(h.clamp(0, 1) * 4 + 0.5), 0, 4) / 4
    assert torch.allclose(q(x), h, atol=1e-6)


def test_every_rate_subset_is_a_stratified_draw(monkeypatch, mlp_snn, digits):
    calls = []
    real = sample.stratified_tensors

    def spy(data, n, seed=0):
        calls.append((n, seed))
        return real(data, n, seed)

    monkeypatch.setattr(sample, "stratified_tensors", spy)
    rate_networks(mlp_snn, *digits[0].tensors, FAST)
    assert (64, 0) in calls and (128, 0) in calls  # thresholds and QCFS fine-tuning
    xs, ys = real(digits[0].tensors, 128, 0)
    counts = torch.bincount(ys, minlength=10)
    assert int(counts.min()) >= 12 and int(counts.max()) <= 14  # classes in proportion, not the first 128


def test_comparison_block(setup, mlp_snn, digits):
    model, x, y = setup
    runs = PERuns(model, model.nominal(), x, y, RunOptions.from_config(model.config))
    c = equal_accuracy_comparison(model, mlp_snn, runs, *digits[0].tensors, FAST)
    assert set(c["rate"]) == {"percentile", "qcfs"}
    pe = c["pe"]["energy_per_inference_j"]["total"]
    assert c["target_accuracy"] == pytest.approx(c["pe"]["accuracy"] - 0.01, rel=1e-9, abs=0)
    for r in c["rate"].values():
        assert r["pe_saving"] == pytest.approx(1 - pe / r["energy_per_inference_j"]["total"], rel=1e-9, abs=0)
        if r["reached"]:
            assert r["meets_asters"] == (r["pe_saving"] >= 0.347) and not r["pe_saving_is_lower_bound"]
        elif r["stopped_at_energy_bound"]:  # FAST stops once the PE saves ASTERS's 34.7%: a lower bound
            assert r["pe_saving"] >= 0.347 - 1e-12 and r["meets_asters"] is True and r["pe_saving_is_lower_bound"]
        else:
            assert r["meets_asters"] is None
        assert r["reached"] == (r["accuracy"] >= c["target_accuracy"] - 1e-12)
    assert c["asters"]["saving"] == ASTERS["saving"] == 0.347 and c["asters"]["accuracy_at_20pct_variation"] == 0.901
    m = c["mechanisms"]
    assert m["all_off_j"] >= m["all_on_j"] and m["power_gating"]["saving_j"] >= 0 and m["tta"]["saving_j"] > 0


def test_residual_network_is_rebuilt_with_additions():
    import spikec
    from spikec.conversion.ttfs import convert_ttfs
    from spikec.hardware.baselines import ProgramValues
    from spikec.models import build_model

    torch.manual_seed(0)
    ann = build_model("resnet", (1, 8, 8), 10, depth=8, width=0.25).eval()
    x = torch.rand(16, 1, 8, 8)
    snn = convert_ttfs(ann, x, time_bits=6)
    net = value_network(snn)
    assert isinstance(net, ProgramValues)
    with torch.no_grad():
        assert torch.allclose(net(x), ann(x), atol=1e-5)  # identity and 1x1-projection skips included
    rate = spikec.convert(net, x, coding="rate", timesteps=8)
    with spikec.record(rate, first_spike_times=False) as rec, torch.no_grad():
        rate(x)
    hidden = [n for n, _, _ in snn.program][:-1]
    assert [k.rsplit(".", 1)[-1] for k in rec.layers] == hidden  # IF layers in program order
    q = qcfs_network(net, x, torch.zeros(16, dtype=torch.long), RateBaselineOptions(qcfs_epochs=0))
    assert sum(isinstance(m, QCFS) for m in q.modules()) == len(hidden)


def test_row_drives_per_source():
    from spikec.hardware.baselines import _producers, _source_entries
    from spikec.hardware.extract import PELayer, PEProgram, PEStep

    two = PELayer("fc2", "linear", torch.zeros(4, 5, dtype=torch.float64), None, (5,), (4,), None, False, 1.0,
                  ((3,), (2,)))
    assert _source_entries(two) == [3, 2]  # a dense layer reads each source neuron once
    one = PELayer("fc1", "linear", torch.zeros(2, 3, dtype=torch.float64), None, (3,), (2,), None, False, 1.0, ((3,),))
    prog = PEProgram(1, (3,), (PEStep("fc1", one, None, (0,), 1), PEStep("pool", None, object(), (1,), 2),
                                PEStep("fc2", two, None, (2, 0), 3)), 0)
    assert _producers(prog) == [[("encoder", 0)], [("layer", 0), ("encoder", 0)]]
