"""neurobench 2.3's metrics against spikec's counts on the same runs (docs/metrics.md).

Where the definitions match (every synaptic layer after the first fed binary spikes), neurobench's
effective ACs equal spikec's synaptic operations and its effective MACs spikec's MACs (the first
layer of a directly coded network); the target is 1%, the counts agree exactly. Where they differ
(a layer fed average-pooled spikes: non-binary values), neurobench counts those operations as
MACs and spikec as accumulates; the test pins that relation.
"""
from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

import spikec
from spikec.checkpoint import NeuronConfig, SNNSpec, save_checkpoint
from spikec.cli.main import main
from spikec.conversion.rate import convert_rate, rate_snn_checkpoint
from spikec.data import load_dataset
from spikec.data.sample import stratified_subset, stratified_tensors
from spikec.errors import SpikecError
from spikec.models import build_model


def test_missing_neurobench_is_a_one_line_error(monkeypatch):
    from spikec.neurobench_bridge import require_neurobench

    monkeypatch.setitem(sys.modules, "neurobench", None)  # import fails as when it is not installed
    with pytest.raises(SpikecError, match=r"pip install 'spikec\[neurobench\]'"):
        require_neurobench()


neurobench = pytest.importorskip("neurobench", reason="neurobench is an optional extra: pip install 'spikec[neurobench]'")
from spikec.neurobench_bridge import neurobench_report  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    train, test, _ = load_dataset("digits")
    calib, _ = stratified_tensors(train, 64, seed=0)
    return calib, stratified_subset(test, 24, seed=0)


def _converted(arch, digits, **cfg):
    calib, _ = digits
    torch.manual_seed(0)
    ann = build_model(arch, (1, 8, 8), 10, **cfg).eval()
    return convert_rate(ann, calib, timesteps=6)


def _rate_coded_snn():
    torch.manual_seed(0)
    spec = SNNSpec("mlp", {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [32]},
                   NeuronConfig(kind="if", threshold=0.3), timesteps=5, coding="rate")
    return spec.build().eval()


NETWORKS = {
    "mlp_converted": lambda d: _converted("mlp", d, hidden=(48, 24)),
    "lenet_maxpool_converted": lambda d: _converted("lenet", d, pool="max"),
    "mlp_rate_coded": lambda d: _rate_coded_snn(),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_synaptic_operations_agree_where_definitions_match(name, digits):
    snn = NETWORKS[name](digits)
    report = neurobench_report(snn, digits[1], batch_size=8)
    nb, ours = report["neurobench"], report["spikec"]
    ops = nb["SynapticOperations"]
    assert ours["sops_per_inference"] > 0 and ours["nonbinary_input_ops_per_inference"] == 0
    assert ops["Effective_ACs"] == pytest.approx(ours["sops_per_inference"], rel=0.01)
    assert ops["Effective_MACs"] == pytest.approx(ours["macs_per_inference"], rel=0.01, abs=1e-9)
    assert nb["ClassificationAccuracy"] == pytest.approx(ours["accuracy"])
    assert nb["ActivationSparsity"] == pytest.approx(ours["activation_sparsity"], abs=1e-9)
    assert nb["Footprint"] == ours["footprint_bytes"]
    if name == "mlp_rate_coded":  # Bernoulli input spikes: the first layer accumulates too
        assert ops["Effective_MACs"] == 0 and ours["macs_per_inference"] == 0
    else:  # direct coding: the analog image enters the first layer as multiply-accumulates in both
        assert ops["Effective_MACs"] > 0


def test_average_pooled_spikes_count_as_macs_in_neurobench(digits):
    snn = _converted("lenet", digits, pool="avg")
    report = neurobench_report(snn, digits[1], batch_size=8)
    ops, ours = report["neurobench"]["SynapticOperations"], report["spikec"]
    moved = ours["nonbinary_input_ops_per_inference"]  # operations on pooled (0, 1/4, 1/2, ...) inputs
    assert moved > 0
    assert ops["Effective_ACs"] == pytest.approx(ours["sops_per_inference"] - moved)
    assert ops["Effective_MACs"] == pytest.approx(ours["macs_per_inference"] + moved)
    assert report["agreement"]["synaptic_ops_ratio"] == pytest.approx(1.0)


def test_counts_by_hand_and_connection_sparsity():
    """Linear(4 -> 3) -> IF -> Linear(3 -> 2), direct coding, T = 2, one sample.

    Input [1, 0, 0.5, 0]: two non-zero inputs per step, each with 2 non-zero outgoing weights, so
    the first layer does (2 + 2) * 2 = 8 MACs. Its currents [1, 0.5, 1.5] against threshold 1:
    step 1 spikes neurons 0 and 2 (v -> [0, 0.5, 0.5]), step 2 (v = [1, 1, 2]) spikes all three;
    the second layer's inputs have 1, 1 and 2 non-zero fan-outs, so it does (1 + 2) + (1 + 1 + 2) = 7 ACs.
    """
    first = nn.Linear(4, 3, bias=False)
    second = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0, 0.3, 0.0, 0.0], [0.0, 0.2, 1.0, 0.4], [1.0, 0.0, 1.0, 0.0]]))
        second.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
    net = nn.Sequential(first, spikec.IF(threshold=1.0, reset="subtract"), second)
    clf = spikec.SpikingClassifier(net, timesteps=2, encoding="direct", readout="membrane").eval()
    data = (torch.tensor([[1.0, 0.0, 0.5, 0.0]]), torch.tensor([0]))
    report = neurobench_report(clf, data, batch_size=1)
    ops, ours = report["neurobench"]["SynapticOperations"], report["spikec"]
    assert ours["macs_per_inference"] == ops["Effective_MACs"] == 8
    assert ours["sops_per_inference"] == ops["Effective_ACs"] == 7
    assert ours["spikes_per_inference"] == 5
    assert report["neurobench"]["ActivationSparsity"] == pytest.approx(1 - 5 / 6) == ours["activation_sparsity"]
    zeros = 5 + 2  # of 12 + 6 weights
    assert report["neurobench"]["ConnectionSparsity"] == round(zeros / 18, 4)
    assert ours["connection_sparsity"] == pytest.approx(zeros / 18)


def test_eval_neurobench_prints_and_returns_both(digits, tmp_path, capsys):
    snn = _converted("mlp", digits, hidden=(32,))
    ann_ckpt = {"arch": "mlp", "arch_config": {"input_shape": [1, 8, 8], "num_classes": 10, "hidden": [32]}}
    path = save_checkpoint(tmp_path / "snn.pt", rate_snn_checkpoint(snn, ann_ckpt))
    assert main(["eval", str(path), "--neurobench", "--neurobench-samples", "20", "--json", "--threads", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("effective ACs / SOPs") for line in out)
    result = json.loads(out[-1])
    assert result["samples"] == 20 and result["neurobench_version"] == "2.3.0"
    assert result["neurobench"]["SynapticOperations"]["Effective_ACs"] == pytest.approx(result["spikec"]["sops_per_inference"])
