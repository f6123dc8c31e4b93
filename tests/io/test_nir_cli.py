"""``spikec export SNN_FILE --nir OUT.nir``: writes a graph spikec reads back with equal outputs;
one-line errors and no file when NIR cannot express the network.

The SNN files are real ``"snn"`` checkpoints (``spikec.checkpoint``): an MLP with IF neurons.
"""
from __future__ import annotations

import json

import pytest
import torch

import spikec
from spikec.checkpoint import NeuronConfig, SNNSpec, ann_checkpoint, load_model, save_checkpoint
from spikec.cli.main import main
from spikec.io import from_nir
from spikec.models import build_model


@pytest.fixture
def snn_file(tmp_path):
    """Write an ``"snn"`` checkpoint of an MLP whose IF neurons use ``reset``."""

    def make(reset="zero", name="snn.pt"):
        torch.manual_seed(0)
        spec = SNNSpec(
            arch="mlp", arch_config={"input_shape": [1, 8, 8], "num_classes": 4, "hidden": [16]},
            neuron=NeuronConfig(kind="if", threshold=0.5, reset=reset), timesteps=10, coding="rate", readout="count",
        )
        return save_checkpoint(tmp_path / name, spec.checkpoint(spec.build()))

    return make


def test_export_writes_a_graph_that_imports_back_with_equal_outputs(snn_file, tmp_path, capsys):
    path = snn_file()
    out = tmp_path / "snn.nir"
    rc = main(["export", str(path), "--nir", str(out), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["nodes"] == ["Input", "Flatten", "Affine", "IF", "Affine", "IF", "Output"]
    assert result["input_shape"] == [1, 8, 8] and result["if_as"] == "IF" and result["dt"] == 1e-4
    clf, _ = load_model(path)
    x = (torch.rand(10, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    spikec.reset(clf)
    with spikec.record(clf) as rec:
        ours = clf.net(x)
    assert rec.total_spikes > 0
    assert torch.equal(ours, spikec.MultiStep(from_nir(out))(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snn.nir", "snn.pt"]


def test_export_options(snn_file, tmp_path, capsys):
    out = tmp_path / "lif.nir"
    rc = main(["export", str(snn_file()), "--nir", str(out), "--if-as-lif", "--dt", "1e-3", "--input-shape", "64", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["nodes"][3] == "LIF" and result["dt"] == 1e-3 and result["input_shape"] == [64]
    assert isinstance(from_nir(out)[2], spikec.IF)  # the leak-free LIF reads back as IF


def test_soft_reset_fails_in_one_line_naming_the_layer_and_writes_nothing(snn_file, tmp_path, capsys):
    out = tmp_path / "snn.nir"
    rc = main(["export", str(snn_file(reset="subtract")), "--nir", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.count("\n") == 0 and "layer '0.2' (IF): reset='subtract' (soft reset) cannot be written as NIR" in err
    assert not out.exists()


def test_usage_and_missing_file_errors(snn_file, tmp_path, capsys):
    path = snn_file()
    assert main(["export", str(path), "--nir", str(tmp_path / "x.nir"), "--input-shape", "a,b"]) == 2
    assert "--input-shape 'a,b'" in capsys.readouterr().err
    assert main(["export", str(path), "--nir", str(tmp_path / "x.nir"), "--dt", "0"]) == 2
    assert main(["export", str(tmp_path / "nope.pt"), "--nir", str(tmp_path / "x.nir")]) == 1
    assert "nope.pt': no such file" in capsys.readouterr().err
    ann = save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(build_model("mlp", (1, 8, 8), 4, hidden=(8,))))
    assert main(["export", str(ann), "--nir", str(tmp_path / "x.nir")]) == 1
    assert "ann.pt' is an ANN checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # --nir is required
        main(["export", str(path)])
    assert info.value.code == 2
