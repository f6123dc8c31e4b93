"""A smoke run on a small stratified subset of the real CIFAR-10 images in ../shared/data/cifar10.

The full data set is for benchmarks; here 10 training and 5 test images per class are linked into
a temporary image folder and go through what a user runs: load (twice: decode, then cache), train
with augmentation, convert to a rate SNN and evaluate every T in one pass.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10"
pytestmark = pytest.mark.skipif(not (CIFAR / "train").is_dir(),
                                reason=f"CIFAR-10 image folders not found at {CIFAR} (see shared/data/README.md)")


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    from spikec.data.sample import stratified_indices

    root = tmp_path_factory.mktemp("cifar_subset")
    for split, per_class in (("train", 10), ("test", 5)):
        for cls in sorted(os.listdir(CIFAR / split)):
            files = sorted(os.listdir(CIFAR / split / cls))
            pick = stratified_indices([0] * len(files), per_class, seed=1)  # a seeded random draw, not the first N
            (root / split / cls).mkdir(parents=True)
            for i in pick.tolist():
                os.symlink(CIFAR / split / cls / files[i], root / split / cls / files[i])
    return root


def test_subset_loads_trains_converts_and_evaluates_in_one_pass(subset, tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "cache"))
    import spikec
    from spikec.conversion.rate import convert_rate
    from spikec.data import load_dataset
    from spikec.data.augment import default_augmentation
    from spikec.data.sample import stratified_tensors
    from spikec.evaluation import evaluate_steps
    from spikec.models import build_model

    train_data, test_data, info = load_dataset(str(subset))
    again = load_dataset(str(subset))[0]
    assert torch.equal(train_data.tensors[0], again.tensors[0])
    assert info.input_shape == (3, 32, 32) and info.num_classes == 10 and info.classes[0] == "airplane"
    assert (len(train_data), len(test_data)) == (100, 50)
    assert torch.bincount(test_data.tensors[1]).tolist() == [5] * 10
    torch.manual_seed(0)
    ann = build_model("vgg", info.input_shape, info.num_classes, depth=11, width=0.125)
    history = spikec.train(ann, train_data, epochs=3, lr=0.05, batch_size=25, optimizer="sgd", nesterov=True,
                           schedule="onecycle", augment=default_augmentation(info.input_shape), channels_last=True,
                           progress=False)
    assert history[-1].loss < history[0].loss
    calib, _ = stratified_tensors(train_data, 50, seed=0)
    snn = convert_rate(ann.eval(), calib, timesteps=32)
    ev = evaluate_steps(snn, test_data, [1, 4, 32], batch_size=25)
    assert ev.one_pass and ev.simulated_steps == 32 and ev.samples == 50
    ann_pred = ann(test_data.tensors[0]).argmax(1)
    snn.timesteps = 32
    with torch.no_grad():
        snn_pred = snn(test_data.tensors[0]).argmax(1)
    assert ev.accuracy[32] == pytest.approx(float((snn_pred == test_data.tensors[1]).float().mean()))
    assert float((snn_pred == ann_pred).float().mean()) >= 0.5
    assert 0 < ev.spikes_per_neuron[1] < ev.spikes_per_neuron[32]


def test_cli_train_and_convert_on_the_subset(subset, tmp_path):
    env = {**os.environ, "SPIKEC_DATA_CACHE": str(tmp_path / "cache")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "spikec.cli.main", *args], capture_output=True, text=True, env=env)

    ann = str(tmp_path / "vgg.pt")
    trained = cli("train", "--model", "vgg", "--depth", "11", "--width", "0.125", "--dataset", str(subset),
                  "--epochs", "1", "--batch-size", "50", "--optimizer", "sgd", "--lr", "0.05", "--out", ann, "--json")
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    assert result["dataset"] == subset.name and result["epochs"] == 1
    ckpt = torch.load(ann, weights_only=True)
    assert ckpt["metrics"]["recipe"]["augment"].startswith("CropFlip(padding=4")
    converted = cli("convert", ann, "--timesteps", "1,4,8", "--calib", "30", "--json")
    assert converted.returncode == 0, converted.stderr
    res = json.loads(converted.stdout.strip().splitlines()[-1])
    assert set(map(int, res["snn_accuracy"])) == {1, 4, 8}
