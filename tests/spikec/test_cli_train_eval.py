"""``spikec train`` and ``spikec eval``: results as JSON, checkpoints, exit codes and one-line errors."""
import json
import subprocess
import sys

import pytest
import torch

from spikec.cli.main import main
from spikec.training import evaluate
from spikec.data import load_dataset


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _json(out):
    return json.loads(out.strip().splitlines()[-1])


def _one_line_error(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def ann_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ann") / "ann.pt"
    assert main(["train", "--model", "mlp", "--epochs", "2", "--out", str(path)]) == 0
    return path


def test_train_writes_a_checkpoint_and_reports_json(tmp_path, capsys):
    out_path = tmp_path / "runs" / "lenet.pt"
    code, out, _ = _run(capsys, "train", "--model", "lenet", "--dataset", "digits", "--epochs", "3",
                        "--out", str(out_path), "--json")
    assert code == 0
    result = _json(out)
    assert {"test_accuracy", "checkpoint", "epochs", "seconds"} <= set(result)
    assert result["checkpoint"] == str(out_path) and result["epochs"] == 3 and result["seconds"] > 0
    assert "test accuracy" in out.splitlines()[0]
    ckpt = torch.load(out_path, weights_only=True)
    assert ckpt["kind"] == "ann" and ckpt["arch"] == "lenet" and ckpt["dataset"]["name"] == "digits"
    assert ckpt["metrics"]["test_accuracy"] == result["test_accuracy"]
    # eval reports the same accuracy the training run measured
    code, out, _ = _run(capsys, "eval", str(out_path), "--dataset", "digits", "--json")
    assert code == 0 and _json(out)["accuracy"] == result["test_accuracy"] and _json(out)["samples"] == 360


def test_train_is_reproducible_from_the_seed(tmp_path, capsys):
    results = []
    for name in ("a.pt", "b.pt"):
        code, out, _ = _run(capsys, "train", "--model", "mlp", "--epochs", "1", "--seed", "3",
                            "--out", str(tmp_path / name), "--json")
        results.append(_json(out))
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"]
    a, b = (torch.load(tmp_path / n, weights_only=True)["state_dict"] for n in ("a.pt", "b.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_and_eval_an_snn(tmp_path, capsys):
    path = tmp_path / "snn.pt"
    code, out, _ = _run(capsys, "train", "--model", "mlp", "--snn", "--coding", "rate", "--timesteps", "4",
                        "--neuron", "if", "--epochs", "2", "--out", str(path), "--json")
    assert code == 0
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["kind"] == "snn" and ckpt["timesteps"] == 4 and ckpt["coding"] == "rate"
    assert ckpt["neuron"]["kind"] == "if"
    assert _json(out)["test_accuracy"] > 0.5  # two epochs of an IF MLP are well above chance (0.1)
    code, out, _ = _run(capsys, "eval", str(path), "--timesteps", "6", "--json")
    result = _json(out)
    assert code == 0 and result["timesteps"] == 6 and result["kind"] == "snn" and "T=6" in out


def test_eval_accuracy_equals_the_library(ann_ckpt, capsys):
    from spikec.checkpoint import load_model

    code, out, _ = _run(capsys, "eval", str(ann_ckpt), "--split", "train", "--json")
    model, _ = load_model(ann_ckpt)
    assert code == 0 and _json(out)["accuracy"] == evaluate(model, load_dataset("digits")[0])


def test_qcfs_act_needs_and_uses_the_conversion_module(tmp_path, capsys):
    pytest.importorskip("spikec.conversion.qcfs")
    path = tmp_path / "q.pt"
    code, _, err = _run(capsys, "train", "--model", "mlp", "--act", "qcfs", "--levels", "4", "--epochs", "1",
                        "--out", str(path))
    assert code == 0, err
    assert torch.load(path, weights_only=True)["act"] == {"name": "qcfs", "levels": 4}


@pytest.mark.parametrize("argv,fragments", [
    (["train", "--model", "alexnet", "--out", "x.pt"], ["unknown model 'alexnet'", "mlp, lenet, vgg, resnet"]),
    (["train", "--dataset", "mnist", "--out", "x.pt"], ["unknown dataset 'mnist'", "digits"]),
    (["train", "--snn", "--act", "qcfs", "--out", "x.pt"], ["--act applies to ANNs"]),
    (["train", "--model", "lenet", "--depth", "11", "--out", "x.pt"], ["--depth does not apply to model 'lenet'"]),
    (["train", "--epochs", "0", "--out", "x.pt"], ["--epochs must be >= 1"]),
    (["train", "--surrogate", "sine", "--snn", "--out", "x.pt"], ["unknown surrogate 'sine'"]),
    (["train", "--optimizer", "lbfgs", "--out", "x.pt"], ["invalid choice: 'lbfgs'"]),
    (["eval", "CKPT", "--timesteps", "4"], ["--timesteps applies to spiking checkpoints"]),
    (["eval", "CKPT", "--dataset", "cifar"], ["unknown dataset 'cifar'"]),
])
def test_usage_errors_exit_2_with_one_line(argv, fragments, ann_ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(ann_ckpt) if a == "CKPT" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects bad choices itself, also with exit 2
        code = exc.code
    _, err = capsys.readouterr()
    assert code == 2
    _one_line_error(err, *fragments)
    assert not (tmp_path / "x.pt").exists()


def test_missing_or_corrupt_files_exit_1_naming_the_file(ann_ckpt, tmp_path, capsys):
    code, _, err = _run(capsys, "eval", str(tmp_path / "nope.pt"))
    assert code == 1
    _one_line_error(err, "checkpoint not found", "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    code, _, err = _run(capsys, "eval", str(bad))
    assert code == 1
    _one_line_error(err, "cannot read checkpoint", "bad.pt")
    code, _, err = _run(capsys, "train", "--dataset", str(tmp_path / "data" / "mnist"), "--out", str(tmp_path / "x.pt"))
    assert code == 1
    _one_line_error(err, "dataset not found", "data/mnist")
    code, _, err = _run(capsys, "eval", str(ann_ckpt), "--dataset", str(tmp_path / "missing.h5"))
    assert code == 1
    _one_line_error(err, "missing.h5")


def test_eval_rejects_data_of_another_shape(ann_ckpt, tmp_path, capsys):
    import h5py
    import numpy as np

    data = tmp_path / "wide.h5"
    with h5py.File(data, "w") as f:
        f["x"] = np.zeros((10, 1, 4, 4), np.float32)
        f["y"] = np.arange(10) % 2
    code, _, err = _run(capsys, "eval", str(ann_ckpt), "--dataset", str(data))
    assert code == 1
    _one_line_error(err, "expects inputs of shape (1, 8, 8)", "(1, 4, 4)")


def test_the_installed_command_line_exits_2_on_usage_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spikec.cli.main", "train", "--model", "nope", "--out", "x.pt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    _one_line_error(proc.stderr, "spikec train: error: unknown model 'nope'")


def test_debug_lets_the_exception_through(tmp_path):
    from spikec.errors import SpikecError

    with pytest.raises(SpikecError, match="checkpoint not found"):
        main(["eval", str(tmp_path / "missing.pt"), "--debug"])
