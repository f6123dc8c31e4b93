"""Checkpoints: plain data loadable with weights_only=True, atomic writes, exact rebuilds, one-line errors."""
import os

import pytest
import torch

import spikec
from spikec.checkpoint import (
    NeuronConfig, SNNSpec, ann_checkpoint, load_checkpoint, load_model, save_checkpoint,
)
from spikec.errors import SpikecError
from spikec.models import build_model


def _ann():
    torch.manual_seed(0)
    model = build_model("lenet", (1, 8, 8), 10, channels=[4, 8], hidden=[16])
    with torch.no_grad():  # non-trivial batch-norm statistics, which live in buffers
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model.eval()


def test_ann_round_trip_is_exact_and_weights_only(tmp_path):
    model = _ann()
    path = save_checkpoint(tmp_path / "sub" / "ann.pt", ann_checkpoint(model, metrics={"test_accuracy": 0.5}))
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "ann" and raw["arch"] == "lenet" and raw["act"] == {"name": "relu"}
    assert raw["arch_config"]["channels"] == [4, 8] and raw["metrics"] == {"test_accuracy": 0.5}
    loaded, ckpt = load_model(path)
    assert not loaded.training and ckpt["arch_config"] == model.arch_config
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert os.listdir(tmp_path / "sub") == ["ann.pt"]  # no temporary file left behind


def test_snn_round_trip_rebuilds_neurons_and_coding(tmp_path):
    torch.manual_seed(0)
    neuron = NeuronConfig(kind="lif", beta=0.8, threshold=0.7, surrogate="fast_sigmoid", learn_threshold=True)
    spec = SNNSpec("mlp", {"input_shape": [1, 8, 8], "num_classes": 4, "hidden": [12]}, neuron, timesteps=5,
                   coding="direct", readout="count")
    snn = spec.build()
    lifs = [m for m in snn.modules() if isinstance(m, spikec.LIF)]
    assert len(lifs) == 2  # one hidden layer + the output layer a count readout needs
    with torch.no_grad():
        lifs[0].threshold.fill_(0.3)  # a learned value must survive the round trip
    path = save_checkpoint(tmp_path / "snn.pt", spec.checkpoint(snn))
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "snn" and raw["neuron"]["beta"] == 0.8 and raw["timesteps"] == 5
    loaded, _ = load_model(path)
    assert isinstance(loaded, spikec.SpikingClassifier)
    assert (loaded.timesteps, loaded.encoding, loaded.readout) == (5, "direct", "count")
    lif = next(m for m in loaded.modules() if isinstance(m, spikec.LIF))
    assert float(lif.beta) == pytest.approx(0.8) and float(lif.threshold.detach()) == pytest.approx(0.3)
    assert lif.surrogate.name == "fast_sigmoid"
    x = torch.rand(6, 1, 8, 8) * 3
    torch.testing.assert_close(loaded(x), snn(x), rtol=0, atol=0)
    assert SNNSpec.from_dict(raw) == spec


def test_qcfs_activation_round_trip(tmp_path):
    qcfs = pytest.importorskip("spikec.conversion.qcfs")
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, act=lambda: qcfs.QCFS(levels=4), hidden=[8]).eval()
    with torch.no_grad():
        model[2].threshold.fill_(2.5)
    path = save_checkpoint(tmp_path / "q.pt", ann_checkpoint(model, act={"name": "qcfs", "levels": 4}))
    loaded, _ = load_model(path)
    assert isinstance(loaded[2], qcfs.QCFS) and loaded[2].levels == 4 and float(loaded[2].threshold.detach()) == 2.5
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ann.pt"
    save_checkpoint(path, ann_checkpoint(_ann()))
    before = path.read_bytes()

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, ann_checkpoint(_ann()))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ann.pt"]


def test_errors_name_the_file_in_one_line(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(SpikecError, match=f"checkpoint not found: {missing}"):
        load_model(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02garbage" * 10)
    with pytest.raises(SpikecError, match="cannot read checkpoint .*corrupt.pt") as exc:
        load_checkpoint(corrupt)
    assert "\n" not in str(exc.value)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(SpikecError, match="plain.pt is not a spikec checkpoint"):
        load_checkpoint(plain)
    odd = tmp_path / "odd.pt"
    torch.save({"kind": "hologram"}, odd)
    with pytest.raises(SpikecError, match="unknown checkpoint kind 'hologram'"):
        load_checkpoint(odd)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"kind": "ann", "payload": NeuronConfig()}, path)  # a class instance is not plain data
    with pytest.raises(SpikecError, match="cannot read checkpoint .*evil.pt"):
        load_checkpoint(path)


def test_mismatched_weights_and_missing_entries(tmp_path):
    ckpt = ann_checkpoint(_ann())
    ckpt["arch_config"]["hidden"] = [17]
    path = save_checkpoint(tmp_path / "bad.pt", ckpt)
    with pytest.raises(SpikecError, match="bad.pt: cannot rebuild the ann model: Error") as exc:
        load_model(path)
    assert "\n" not in str(exc.value)
    del ckpt["arch"]
    save_checkpoint(path, ckpt)
    with pytest.raises(SpikecError, match="bad.pt: ann checkpoint lacks the entry 'arch'"):
        load_model(path)
    with pytest.raises(ValueError, match="kind"):
        save_checkpoint(tmp_path / "x.pt", {"state_dict": {}})
