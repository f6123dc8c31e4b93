"""``--model``: a user's class (file.py:Class + --weights + --model-args), a torchvision model and a
``torch.export`` program, converted through the CLI; bad values fail in one line with exit 2.

Each converted network is saved and reloaded without the user's code (its graph is plain data),
so the reloaded SNN must score exactly what the convert run reported.
"""
from __future__ import annotations

import importlib.util
import json

import h5py
import numpy as np
import pytest
import torch

from spikec.checkpoint import load_checkpoint, load_model
from spikec.cli.main import main
from spikec.data import load_dataset
from spikec.training import evaluate
from spikec.user_model import ModelSpec, load_user_model, parse_model_args

MODEL_FILE = '''
import torch
from torch import nn


class Backbone(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)


class UserNet(nn.Module):
    def __init__(self, channels=4, hidden=16, num_classes=10):
        super().__init__()
        self.backbone = Backbone(channels)
        self.fc1 = nn.Linear(channels * 16, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = self.backbone(x).view(x.size(0), -1)
        return self.fc2(torch.relu(self.fc1(x)))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = Gate()

    def forward(self, x):
        return self.gate(x)


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        if x.mean() > 0.5:
            x = x * 2
        return self.fc(x.flatten(1))
'''


def _import(path, name="user_model_for_test"):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(MODEL_FILE)
    torch.manual_seed(0)
    net = _import(path).UserNet(channels=4, hidden=12)
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding is exercised
        net.backbone.bn.running_mean.uniform_(-0.2, 0.2)
        net.backbone.bn.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    return path, net.eval()


def _json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _convert(argv, capsys):
    rc = main(["convert", *argv, "--timesteps", "4", "--calib", "32", "--json", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    return _json(capsys)


def test_model_file_with_weights_and_args_converts_saves_and_reloads(model_file, tmp_path, capsys):
    path, net = model_file
    out = tmp_path / "snn.h5"
    result = _convert(["--model", f"{path}:UserNet", "--weights", str(tmp_path / "weights.pt"),
                       "--model-args", "channels=4,hidden=12", "--out", str(out)], capsys)
    _, test, _ = load_dataset("digits")
    assert result["ann_accuracy"] == evaluate(net, test)  # the user's weights, not fresh ones
    ckpt = load_checkpoint(out)
    assert ckpt["kind"] == "rate_snn" and ckpt["arch"] == "graph"
    assert ckpt["source"]["model"] == f"{path}:UserNet" and ckpt["source"]["model_args"] == {"channels": 4, "hidden": 12}
    path.unlink()  # reloading needs neither the file nor its code
    snn, _ = load_model(out)
    assert evaluate(snn, test) == result["snn_accuracy"]["4"]


def test_torchvision_resnet18_on_small_rgb_inputs(tmp_path, capsys):
    g = np.random.default_rng(0)
    data = tmp_path / "rgb.h5"
    with h5py.File(data, "w") as f:
        f["x"] = g.random((20, 3, 32, 32), dtype=np.float32)
        f["y"] = np.arange(20) % 10
        f["x_test"] = g.random((10, 3, 32, 32), dtype=np.float32)
        f["y_test"] = np.arange(10) % 10
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet.pt")
    out = tmp_path / "resnet_snn.pt"
    result = _convert(["--model", "torchvision:resnet18", "--num-classes", "10", "--weights", str(tmp_path / "resnet.pt"),
                       "--dataset", str(data), "--calib", "8", "--out", str(out)], capsys)
    _, test, _ = load_dataset(str(data))
    assert result["ann_accuracy"] == evaluate(reference, test)
    snn, ckpt = load_model(out)
    assert len(ckpt["conversion"]["neuron_layers"]) == 17  # the stem and two per basic block
    assert evaluate(snn, test) == result["snn_accuracy"]["4"]


def test_torch_export_program(model_file, tmp_path, capsys):
    _, net = model_file
    program = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(3, 1, 8, 8),)), str(program))
    result = _convert(["--model", str(program)], capsys)
    _, test, _ = load_dataset("digits")
    assert result["ann_accuracy"] == pytest.approx(evaluate(net, test), abs=1 / len(test) + 1e-9)
    user = load_user_model(ModelSpec(str(program)))
    assert user.input_shape == (1, 8, 8)  # inferred from the program
    x = test.tensors[0][:16]
    torch.testing.assert_close(user.module(x), net(x), rtol=1e-5, atol=1e-5)


def test_parse_model_args():
    assert parse_model_args("a=1,b=2.5,c=(1, 2),d=name,e='x,y',f=True") == {
        "a": 1, "b": 2.5, "c": (1, 2), "d": "name", "e": "x,y", "f": True}


@pytest.mark.parametrize("argv,expected", [
    (["--model", "{d}/missing.py:UserNet"], "no such file {d}/missing.py"),
    (["--model", "{d}/my_models.py:Nope"], "has no class Nope (nn.Module classes there: Backbone, Branchy, Gate, UserNet)"),
    (["--model", "{d}/my_models.py:UserNet", "--weights", "{d}/bad_keys.pt"], "missing fc2.weight, fc2.bias; unexpected head.weight"),
    (["--model", "{d}/my_models.py:UserNet", "--weights", "{d}/weights.pt"], "fc1.weight has shape (12, 64) in the file, (16, 64)"),
    (["--model", "{d}/my_models.py:UserNet", "--weights", "{d}/missing.pt"], "--weights {d}/missing.pt: no such file"),
    (["--model", "{d}/my_models.py:UserNet", "--model-args", "width"], "expected key=value pairs"),
    (["--model", "resnet18"], "expected path/to/file.py:ClassName, torchvision:NAME"),
    (["--model", "torchvision:resnet7"], "torchvision has no classification model 'resnet7'"),
    (["--model", "{d}/none.pt2"], "no such file"),
    (["--model", "{d}/my_models.py:UserNet", "--weights", "{d}/weights.pt", "--model-args", "hidden=12", "{d}/ann.pt"],
     "not both"),
])
def test_bad_model_values_are_one_line_usage_errors(model_file, tmp_path, capsys, argv, expected):
    sd = torch.load(tmp_path / "weights.pt")
    sd["head.weight"] = sd.pop("fc2.weight")
    del sd["fc2.bias"]
    torch.save(sd, tmp_path / "bad_keys.pt")
    d = str(tmp_path)
    rc = main(["convert", *[a.format(d=d) for a in argv]])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and expected.format(d=d) in err


def test_untraceable_model_names_the_module_at_fault(model_file, capsys):
    path, _ = model_file
    assert main(["convert", "--model", f"{path}:Branchy"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot trace module 'gate' (Gate)" in err


def test_compress_takes_a_user_model(model_file, tmp_path, capsys):
    """``spikec compress --model file.py:Class``: the user's weights go in, pruned and quantized ones come out."""
    path, net = model_file
    out = tmp_path / "ann_c.pt"
    rc = main(["compress", "--model", f"{path}:UserNet", "--weights", str(tmp_path / "weights.pt"),
               "--model-args", "channels=4,hidden=12", "--dataset", "digits", "--density", "0.5", "--bits", "4",
               "--epochs", "1", "--quant-epochs", "1", "--threads", "1", "--json", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = _json(capsys)
    _, test, _ = load_dataset("digits")
    assert result["accuracy_before"] == evaluate(net, test)  # the user's network, before compression
    assert 0.4 <= result["mask_density"] <= 0.6 and result["weight_bits"] == 4
    model, _ = load_model(out)
    assert evaluate(model, test) == result["accuracy_after"]
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    kept = sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert 0.4 <= kept <= 0.5  # DNR moves density between layers; the total is what was asked (and rounding zeros)
    for w in weights:  # every quantized layer holds at most 2^4 - 1 distinct values
        assert torch.unique(w).numel() <= 15
