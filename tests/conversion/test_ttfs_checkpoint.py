"""TTFS checkpoints (plain data + tensors), the CLI and fine-tuning through quantized spike times."""
import json

import pytest
import torch
from torch import nn

from spikec.checkpoint import ann_checkpoint, load_checkpoint, load_model, save_checkpoint
from spikec.cli.main import main
from spikec.conversion.ttfs import convert_ttfs, ttfs_checkpoint, ttfs_snn_from_checkpoint
from spikec.conversion.ttfs_finetune import finetune_ttfs
from spikec.errors import SpikecError
from spikec.models import build_model


def small_lenet(seed=0):
    torch.manual_seed(seed)
    return build_model("lenet", (1, 8, 8), 10, channels=[4, 8], hidden=[16], pool="max", batch_norm=True).eval()


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    ann = small_lenet()
    x = torch.rand(16, 1, 8, 8)
    snn = convert_ttfs(ann, x, time_bits=5)
    path = save_checkpoint(tmp_path / "snn.pt", ttfs_checkpoint(snn, ann))
    ckpt = torch.load(path, weights_only=True)  # plain data and tensors only
    assert ckpt["kind"] == "ttfs_snn" and ckpt["arch"] == "lenet"
    assert ckpt["options"]["time_bits"] == 5 and ckpt["options"]["margin"] == 1.25
    assert [w["window"] for w in ckpt["windows"]] == [1, 2, 3, 4]
    again = ttfs_snn_from_checkpoint(ckpt)
    loaded, _ = load_model(path)
    with torch.no_grad():
        assert torch.equal(again(x), snn(x))
        assert torch.equal(loaded(x), snn(x))
    assert loaded.simulation == snn.simulation


def test_checkpoint_keeps_float64():
    ann = small_lenet().double()
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    snn = convert_ttfs(ann, x)
    again = ttfs_snn_from_checkpoint(ttfs_checkpoint(snn))
    with torch.no_grad():
        assert again(x).dtype == torch.float64
        assert torch.allclose(again(x), ann(x), rtol=1e-9, atol=1e-12)


def test_malformed_checkpoints_raise_spikec_errors():
    snn = convert_ttfs(small_lenet(), torch.rand(8, 1, 8, 8))
    ckpt = ttfs_checkpoint(snn)
    with pytest.raises(SpikecError, match="kind"):
        ttfs_snn_from_checkpoint({**ckpt, "kind": "rate_snn"})
    with pytest.raises(SpikecError, match="state_dict"):
        ttfs_snn_from_checkpoint({k: v for k, v in ckpt.items() if k != "state_dict"})
    bad = dict(ckpt["state_dict"])
    bad.pop(next(iter(bad)))
    with pytest.raises(SpikecError, match="malformed"):
        ttfs_snn_from_checkpoint({**ckpt, "state_dict": bad})


def test_finetune_trains_through_the_stepped_simulation():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    x = torch.rand(96, 6)
    y = ann(x).argmax(1).detach()
    y[:32] = (y[:32] + 1) % 3  # labels the ANN gets wrong: something to learn
    snn = convert_ttfs(ann, x, time_bits=3)
    with torch.no_grad():
        loss_before = nn.functional.cross_entropy(snn(x), y).item()
    weights_before = [p.detach().clone() for p in snn.parameters()]
    history = finetune_ttfs(snn, (x, y), epochs=4, lr=1e-2, batch_size=32)
    assert len(history) == 4
    assert snn.simulation.simulator == "analytic" and snn.simulation.time_bits == 3 and not snn.training
    assert any(not torch.equal(a, b) for a, b in zip(weights_before, snn.parameters()))
    with torch.no_grad():
        assert nn.functional.cross_entropy(snn(x), y).item() < loss_before
    with pytest.raises(ValueError, match="time resolution"):
        finetune_ttfs(convert_ttfs(ann, x), (x, y), epochs=1)


def test_cli_convert_ttfs_and_eval(tmp_path, capsys):
    ann_path = save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(small_lenet()))
    snn_path = tmp_path / "snn.pt"
    code = main(["convert", ann_path, "--coding", "ttfs", "--time-bits", "6", "--calib", "64",
                 "--out", str(snn_path), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("ann_accuracy", "snn_accuracy", "agreement", "spikes_per_neuron", "max_spikes_per_neuron",
                "latency_steps", "seconds", "checkpoint"):
        assert key in result, key
    assert result["max_spikes_per_neuron"] == 1
    assert result["latency_steps"] == 4 * 64
    assert 0 < result["spikes_per_neuron"] < 1 and 0 <= result["agreement"] <= 1
    assert "agreement with ANN" in out and "latency" in out
    assert load_checkpoint(snn_path)["kind"] == "ttfs_snn"
    assert main(["eval", str(snn_path), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["accuracy"] == pytest.approx(result["snn_accuracy"])


def test_cli_usage_errors(tmp_path, capsys):
    ann_path = save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(small_lenet()))
    assert main(["convert", ann_path, "--coding", "ttfs", "--simulator", "stepped"]) == 2
    assert "--time-bits" in capsys.readouterr().err
    assert main(["convert", ann_path, "--coding", "ttfs", "--time-bits", "0"]) == 2
    assert main(["convert", ann_path, "--coding", "ttfs", "--finetune-epochs", "1"]) == 2
    assert "--time-bits" in capsys.readouterr().err
