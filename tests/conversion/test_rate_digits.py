"""Converted networks on the digits data: accuracy approaches the ANN as T grows; checkpoints, CLI, fine-tuning."""
import json

import pytest
import torch

import spikec
from spikec.checkpoint import ann_checkpoint, load_model, save_checkpoint
from spikec.cli.main import main
from spikec.conversion.finetune import finetune
from spikec.conversion.qcfs import QCFS
from spikec.conversion.rate import convert_rate, rate_snn_checkpoint, rate_snn_from_checkpoint
from spikec.data import load_dataset
from spikec.models import build_model
from spikec.training import evaluate, train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The CI machine is shared: one intra-op thread is many times faster than oversubscribed ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    train_data, test_data, info = load_dataset("digits")
    return train_data, test_data, info


def _trained(name, digits, act=torch.nn.ReLU, epochs=15, lr=3e-3, **cfg):
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 10, act=act, **cfg)
    train(model, digits[0], epochs=epochs, lr=lr, progress=False, seed=0)
    return model.eval()


@pytest.fixture(scope="module")
def lenet(digits):
    return _trained("lenet", digits, epochs=15, lr=1e-2, channels=(4, 8), hidden=(32,), pool="max")


@pytest.fixture(scope="module")
def mlp(digits):
    return _trained("mlp", digits, hidden=(64,))


def _accuracies(snn, test_data, steps):
    out = {}
    for T in steps:
        snn.timesteps = T
        out[T] = evaluate(snn, test_data)
    return out


def test_lenet_with_max_pooling_approaches_the_ann_as_t_grows(lenet, digits):
    ann_acc = evaluate(lenet, digits[1])
    assert ann_acc > 0.9
    snn = convert_rate(lenet, digits[0].tensors[0][:512], norm="percentile:99.9")
    acc = _accuracies(snn, digits[1], (2, 8, 32))
    assert acc[2] < acc[8] <= acc[32] + 0.01
    assert acc[32] >= ann_acc - 0.02


def test_qcfs_mlp_is_close_to_the_ann_at_small_t(digits):
    ann = _trained("mlp", digits, act=lambda: QCFS(4, 2.0), hidden=(64,))
    ann_acc = evaluate(ann, digits[1])
    snn = convert_rate(ann, digits[0].tensors[0][:512])
    acc = _accuracies(snn, digits[1], (4, 8))
    assert acc[4] >= ann_acc - 0.02 and acc[8] >= ann_acc - 0.02


def test_checkpoint_round_trip_is_exact_and_loads_with_weights_only(lenet, digits, tmp_path):
    snn = convert_rate(lenet, digits[0].tensors[0][:256], timesteps=8, norm="channel")
    path = save_checkpoint(tmp_path / "snn.pt", rate_snn_checkpoint(snn, ann_checkpoint(lenet)))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["kind"] == "rate_snn" and ckpt["conversion"]["norm"] == "channel:99.9"
    again = rate_snn_from_checkpoint(ckpt)
    loaded, _ = load_model(path)
    x = digits[1].tensors[0][:64]
    with torch.no_grad():
        torch.testing.assert_close(again(x), snn(x))
        torch.testing.assert_close(loaded(x), snn(x))
    assert loaded.timesteps == 8
    loaded.timesteps = 4
    assert loaded(x).shape == (64, 10)


def test_qcfs_checkpoint_rebuilds_with_its_levels(digits, tmp_path):
    torch.manual_seed(0)
    ann = build_model("mlp", (1, 8, 8), 10, act=lambda: QCFS(4, 1.7), hidden=(16,)).eval()
    snn = convert_rate(ann, digits[0].tensors[0][:64], timesteps=4)
    path = save_checkpoint(tmp_path / "q.pt", rate_snn_checkpoint(snn, ann_checkpoint(ann, {"name": "qcfs", "levels": 4})))
    loaded, _ = load_model(path)
    x = digits[1].tensors[0][:32]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), snn(x))
    assert loaded.conversion["qcfs_levels"] == snn.conversion["qcfs_levels"]


def test_finetuning_improves_a_short_simulation(lenet, digits):
    snn = convert_rate(lenet, digits[0].tensors[0][:512], timesteps=2)
    before = evaluate(snn, digits[1])
    history = finetune(snn, digits[0], epochs=2, lr=1e-3, timesteps=2)
    assert len(history) == 2 and not snn.training
    after = evaluate(snn, digits[1])
    assert after > before + 0.02


def test_cli_converts_evaluates_and_saves(mlp, digits, tmp_path, capsys):
    ann_path = save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(mlp, dataset=digits[2].to_dict()))
    out = tmp_path / "snn.pt"
    code = main(["convert", str(ann_path), "--timesteps", "2,8", "--calib", "128", "--out", str(out), "--json"])
    assert code == 0
    stdout = capsys.readouterr().out
    result = json.loads(stdout.strip().splitlines()[-1])
    assert set(result) >= {"ann_accuracy", "snn_accuracy", "spikes_per_neuron", "seconds", "checkpoint"}
    assert set(result["snn_accuracy"]) == {"2", "8"} and set(result["spikes_per_neuron"]) == {"2", "8"}
    assert result["ann_accuracy"] == pytest.approx(evaluate(mlp, digits[1]))
    assert result["snn_accuracy"]["8"] > 0.85
    assert 0 < result["spikes_per_neuron"]["2"] < result["spikes_per_neuron"]["8"] <= 8
    assert result["checkpoint"] == str(out)
    snn, ckpt = load_model(out)
    assert ckpt["kind"] == "rate_snn" and snn.timesteps == 8
    assert evaluate(snn, digits[1]) == pytest.approx(result["snn_accuracy"]["8"])
    with spikec.record(snn) as rec:
        evaluate(snn, digits[1])
    assert rec.spikes_per_neuron == pytest.approx(result["spikes_per_neuron"]["8"])


def test_cli_errors_are_one_line_with_exit_codes(mlp, digits, tmp_path, capsys):
    ann_path = str(save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(mlp)))
    assert main(["convert", ann_path, "--timesteps", "0,4"]) == 2
    assert "--timesteps" in capsys.readouterr().err
    assert main(["convert", ann_path, "--norm", "median"]) == 2
    assert "norm" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pt")]) == 1
    err = capsys.readouterr().err
    assert "missing.pt" in err and len(err.strip().splitlines()) == 1
    snn = convert_rate(mlp, digits[0].tensors[0][:32], timesteps=2)
    snn_path = str(save_checkpoint(tmp_path / "snn.pt", rate_snn_checkpoint(snn, ann_checkpoint(mlp))))
    assert main(["convert", snn_path]) == 2
    assert "kind 'ann'" in capsys.readouterr().err


def test_cli_ttfs_without_its_module_is_a_usage_error(mlp, tmp_path, capsys, monkeypatch):
    import spikec.cli.convert as convert_cli

    monkeypatch.setattr(convert_cli, "_ttfs_module", lambda: None)  # as before spikec.cli.convert_ttfs exists
    ann_path = str(save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(mlp)))
    assert main(["convert", ann_path, "--coding", "ttfs"]) == 2
    assert "TTFS conversion is not available yet" in capsys.readouterr().err
