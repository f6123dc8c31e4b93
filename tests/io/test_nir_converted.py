"""Reset-to-zero networks made by the CLI, exported to NIR and run in norse and snntorch.

A rate SNN converted with ``spikec convert --reset zero`` from a model class spikec has never
seen (written into tmp_path) and fine-tuned for one epoch, and an SNN trained directly with
``spikec train --snn --reset zero``, are written by ``spikec export``; norse and snntorch run the
files on digits and must give, layer by layer, the same spikes per sample and first spike times as
spikec, and the same output at every step (helpers shared with test_nir_peers.py).
"""
from __future__ import annotations

import json

import nir
import pytest
import torch

from spikec.checkpoint import load_model
from spikec.cli.main import main
from spikec.data import load_dataset

norse_torch = pytest.importorskip("norse.torch")
pytest.importorskip("snntorch")
from snntorch.import_nir import import_from_nir  # noqa: E402
from test_nir_peers import _quiet, _quiet_peers, assert_same_spikes, run_peer  # noqa: E402, F401

import spikec  # noqa: E402

T = 8

MODEL_FILE = '''
import torch
from torch import nn


class UnseenNet(nn.Module):
    """Conv -> BN -> ReLU -> avg pool -> MLP, defined outside spikec."""

    def __init__(self, channels=6, hidden=24, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Sequential(nn.Linear(channels * 16, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        x = self.pool(torch.relu(self.norm(self.conv(x))))
        return self.head(torch.flatten(x, 1))
'''


def _run(argv, capsys):
    assert main([*argv, "--json", "--threads", "1"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(rate SNN file, NIR file with IF nodes, NIR file with leak-free LIF nodes) of the unseen model."""
    tmp = tmp_path_factory.mktemp("converted")
    (tmp / "unseen.py").write_text(MODEL_FILE)
    import importlib.util

    spec = importlib.util.spec_from_file_location("unseen_for_weights", tmp / "unseen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    torch.save(mod.UnseenNet(hidden=24).state_dict(), tmp / "weights.pt")
    snn_file = tmp / "snn_zero.h5"
    assert main(["convert", "--model", f"{tmp / 'unseen.py'}:UnseenNet", "--weights", str(tmp / "weights.pt"),
                 "--model-args", "hidden=24", "--reset", "zero", "--timesteps", str(T), "--calib", "64",
                 "--finetune-epochs", "1", "--out", str(snn_file), "--threads", "1"]) == 0
    for name, extra in (("if.nir", []), ("lif.nir", ["--if-as-lif"])):
        assert main(["export", str(snn_file), "--nir", str(tmp / name), *extra]) == 0
    return snn_file, tmp / "if.nir", tmp / "lif.nir"


def run_spikec(multistep, x):
    """What spikec's own network does on ``x [T, B, ...]``: output per step, per-layer spike summaries."""
    spikec.reset(multistep)
    with torch.no_grad(), spikec.record(multistep) as rec:
        out = multistep(x)
    return out.detach(), [(r.sample_spikes, r.first_spike_times) for r in rec.layers.values()]


def _digits(n=4):
    _, test, _ = load_dataset("digits")
    return test.tensors[0][:n]


@pytest.mark.parametrize("kind", ["norse", "snntorch"])
def test_converted_reset_zero_network_runs_in_peers_with_equal_spikes(converted, kind):
    snn_file, if_nir, lif_nir = converted
    snn, ckpt = load_model(snn_file)
    assert ckpt["arch"] == "graph" and ckpt["conversion"]["reset"] == "zero"
    assert all(float(m.v_init.abs().max()) == 0 for m in snn.modules() if hasattr(m, "reset_mode"))
    x = _digits().unsqueeze(0).expand(T, -1, -1, -1, -1).contiguous()  # direct coding: the image at every step
    if kind == "norse":
        model = _quiet(norse_torch.from_nir, nir.read(str(if_nir)), dt=1e-4)
    else:
        model = _quiet(import_from_nir, nir.read(str(lif_nir)))
    assert_same_spikes(run_spikec(snn.net, x), run_peer(model, x, kind, batched=False))


def test_directly_trained_reset_zero_snn_exports_and_runs_in_norse(tmp_path, capsys):
    snn_file = tmp_path / "snn_direct.h5"
    _run(["train", "--model", "mlp", "--snn", "--reset", "zero", "--neuron", "if", "--timesteps", "4",
          "--epochs", "1", "--out", str(snn_file)], capsys)
    result = _run(["export", str(snn_file), "--nir", str(tmp_path / "snn.nir")], capsys)
    assert "IF" in result["nodes"]
    clf, _ = load_model(snn_file)
    x = (torch.rand(6, 5, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    model = _quiet(norse_torch.from_nir, nir.read(str(tmp_path / "snn.nir")), dt=1e-4)
    assert_same_spikes(run_spikec(clf.net, x), run_peer(model, x, "norse", batched=False))
