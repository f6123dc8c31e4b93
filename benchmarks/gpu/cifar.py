"""Part 4: CIFAR-10 ANN training with the whole data set held on the device, then rate conversion at T=1..64.

It runs the library's own stages (``load_dataset``, ``spikec.train``, ``spikec.convert``,
``spikec.evaluate``) on the device, which is the point: no CUDA path of training, conversion or
evaluation had run on a GPU before. The smoke run writes a tiny synthetic image folder and
feeds it through the same calls.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch

import spikec
from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors
from spikec.models import build_model

from gpu.budget import Budget
from gpu.config import SuiteConfig

DEPTHS = {"vgg": 11, "resnet": 20}


def write_synthetic_folder(root: str, classes: int = 10, train: int = 8, test: int = 3, size: int = 16) -> str:
    """``root/{train,test}/c<k>/*.png``: noisy images whose mean colour depends on the class (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for k in range(classes):
            folder = os.path.join(root, split, f"c{k}")
            os.makedirs(folder, exist_ok=True)
            colour = np.array([(k * 25) % 256, (k * 70) % 256, (255 - k * 25) % 256], dtype=np.float64)
            for i in range(n):
                img = np.clip(colour + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(os.path.join(folder, f"{i}.png"))
    return root


def run(config: SuiteConfig, budget: Budget) -> dict:
    if config.smoke:
        with tempfile.TemporaryDirectory(prefix="spikec-gpu-smoke-") as tmp:
            return _run(write_synthetic_folder(tmp), "synthetic image folder (smoke)", config, budget)
    if not os.path.isdir(config.cifar):
        return {"status": "skipped", "reason": f"no CIFAR-10 folder at {config.cifar} (give --cifar)"}
    return _run(config.cifar, config.cifar, config, budget)


def _run(path: str, label: str, config: SuiteConfig, budget: Budget) -> dict:
    device = torch.device(config.device)
    start = time.perf_counter()
    train, test, info = load_dataset(path)
    x_tr, y_tr = (t.to(device) for t in train.tensors)
    x_te, y_te = (t.to(device) for t in test.tensors)
    loaded_s = time.perf_counter() - start
    ann = build_model(config.cifar_model, info.input_shape, info.num_classes, depth=DEPTHS[config.cifar_model],
                      width=config.cifar_width)
    start = time.perf_counter()
    history = spikec.train(ann, (x_tr, y_tr), epochs=config.cifar_epochs, lr=config.cifar_lr,
                           batch_size=config.cifar_batch, optimizer="adam", test_data=(x_te, y_te), device=device,
                           progress=False)
    train_s = time.perf_counter() - start
    calib_x, _ = stratified_tensors((x_tr, y_tr), config.cifar_calib, seed=0)
    start = time.perf_counter()
    snn = spikec.convert(ann, calib_x, coding="rate", timesteps=max(config.cifar_timesteps)).to(device)
    convert_s = time.perf_counter() - start
    snn_rows, truncated = [], None
    for T in config.cifar_timesteps:
        if budget.left() < 10 and not config.smoke:
            truncated = f"time budget: stopped before T={T}"
            break
        snn.timesteps = T
        t0 = time.perf_counter()
        acc = spikec.evaluate(snn, (x_te, y_te), batch_size=config.cifar_eval_batch, device=device)
        snn_rows.append({"T": T, "test_accuracy": round(acc, 4), "seconds": round(time.perf_counter() - t0, 2)})
    out = {
        "data": label, "train_samples": len(y_tr), "test_samples": len(y_te), "input_shape": list(info.input_shape),
        "data_device": str(x_tr.device), "load_seconds": round(loaded_s, 2),
        "ann": {"model": f"{config.cifar_model}{DEPTHS[config.cifar_model]}", "width": config.cifar_width,
                "epochs": config.cifar_epochs, "batch": config.cifar_batch, "optimizer": "adam", "lr": config.cifar_lr,
                "train_seconds": round(train_s, 2),
                "epoch_seconds": [round(e.seconds, 2) for e in history],
                "test_accuracy": [round(e.test_accuracy, 4) for e in history]},
        "conversion": {"calibration_samples": int(len(calib_x)), "seconds": round(convert_s, 2)},
        "snn": snn_rows,
    }
    if truncated:
        out["truncated"] = truncated
    return out
