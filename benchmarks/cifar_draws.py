"""The seeded stratified draws the CIFAR TTFS benchmarks share: a test subset and the calibration set."""
from __future__ import annotations

import torch

from spikec.data import load_dataset
from spikec.data.sample import stratified_tensors

CALIBRATION = 512


def draws(dataset: str, samples: int, seed: int = 0):
    """``(x, y, x_calibration)``: ``samples`` stratified test images and 512 stratified training images."""
    tr, te, _ = load_dataset(dataset)
    x, y = stratified_tensors(te.tensors, samples, seed)
    x_cal, _ = stratified_tensors(tr.tensors, CALIBRATION, seed)
    return x, y, x_cal


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy in batches of 100 (spikec.compress.metrics.activity, without its spike counts)."""
    from spikec.compress.metrics import activity

    return activity(model.eval(), (x, y), batch_size=100, seed=0).accuracy
