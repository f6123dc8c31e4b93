"""Supervised training of ANNs and SNNs: one loop for both.

A spiking model (for example a :class:`~spikec.SpikingClassifier`) is trained with
surrogate-gradient backpropagation through time simply by calling ``backward`` on its output:
its neurons' spike functions carry the surrogate derivative and the time loop is unrolled by
autograd. Runs are seeded (batch order, weight noise such as Bernoulli input spikes) and
deterministic on CPU; the caller's global random state is left as it was.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from spikec import distributed
from spikec.errors import SpikecError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant")

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EpochResult:
    """One epoch: mean training loss, accuracy on the training batches, test accuracy (if test data) and wall time."""

    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float | None
    seconds: float


def train(
    model: nn.Module,
    train_data,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    test_data=None,
    seed: int = 0,
    progress: bool = True,
    loss: Loss | None = None,
    device: str | torch.device = "cpu",
) -> list[EpochResult]:
    """Train ``model`` in place and return one :class:`EpochResult` per epoch.

    ``train_data`` / ``test_data``: a ``TensorDataset``, an ``(inputs, labels)`` pair of tensors, any
    map-style dataset of ``(input, label)`` pairs, or a ``DataLoader`` (used as it is). ``loss`` maps
    ``(scores [B, C], labels [B])`` to a scalar (default cross-entropy). ``optimizer``: "adam",
    "adamw" or "sgd" (momentum 0.9); ``schedule``: "cosine" annealing to zero over the epochs, or
    "constant".

    Under ``torchrun`` (a process group from :func:`spikec.distributed.init_from_env`) the model is
    wrapped in DistributedDataParallel and each rank trains on its slice of every global batch of
    ``batch_size`` samples; the result equals a single-process run with the same seed.
    """
    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    loss_fn = loss if loss is not None else F.cross_entropy
    device = torch.device(device)
    model.to(device)
    rank, world = distributed.rank_and_size()
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if schedule == "cosine" else None
    history: list[EpochResult] = []
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices, device_type=device.type):
        torch.manual_seed(seed)
        order = torch.Generator().manual_seed(seed)
        bar = tqdm(range(1, int(epochs) + 1), desc="train", unit="epoch", disable=not progress or rank != 0)
        for epoch in bar:
            start = time.perf_counter()
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for x, y in batches(train_data, batch_size, shuffle=True, generator=order):
                n_global = len(y)
                if world > 1:
                    part = distributed.shard(n_global, rank, world)
                    x, y = x[part], y[part]
                x, y = x.to(device), y.to(device)
                scores = net(x)
                # a mean over the local slice, rescaled so DDP's average over ranks is the global mean
                batch_loss = loss_fn(scores, y) * (len(y) * world / n_global) if len(y) else scores.sum() * 0
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                total_loss += float(batch_loss.detach()) * n_global / world
                correct += int((scores.detach().argmax(1) == y).sum())
                seen += len(y)
            total_loss, correct, seen = distributed.all_sum(total_loss, correct, seen)
            correct, seen = int(correct), int(seen)
            if seen == 0:
                raise SpikecError("training data is empty")
            mean_loss = total_loss / seen
            if not math.isfinite(mean_loss):
                raise SpikecError(f"training diverged: loss is {mean_loss} in epoch {epoch}; try a lower learning rate")
            if sched is not None:
                sched.step()
            test_acc = evaluate(model, test_data, batch_size=max(batch_size, 256), device=device) if test_data is not None else None
            history.append(EpochResult(epoch, mean_loss, correct / seen, test_acc, time.perf_counter() - start))
            bar.set_postfix(_postfix(history[-1]))
        bar.close()
    if net is not model:  # free the DDP wrapper (it sits in reference cycles) while the process group lives
        del net
        gc.collect()
    return history


def evaluate(model: nn.Module, data, batch_size: int = 256, device: str | torch.device | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (same forms as :func:`train` accepts), in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    correct, seen = 0, 0
    try:
        with torch.no_grad():
            for x, y in batches(data, batch_size, shuffle=False):
                x, y = x.to(device), y.to(device)
                correct += int((model(x).argmax(1) == y).sum())
                seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise SpikecError("evaluation data is empty")
    return correct / seen


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """An optimizer over ``model``'s trainable parameters, by name."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def batches(
    data, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(inputs, labels)`` mini-batches; in-memory tensors are sliced directly (no per-sample collation)."""
    if isinstance(data, DataLoader):
        yield from data
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        data = TensorDataset(*data)
    if isinstance(data, TensorDataset):
        x, y = data.tensors[0], data.tensors[1]
        n = len(y)
        index = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            chunk = index[start:start + batch_size]
            yield x[chunk], y[chunk]
        return
    if isinstance(data, Dataset):
        yield from DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)
        return
    raise TypeError(f"expected a TensorDataset, (inputs, labels) tensors, a Dataset or a DataLoader, got {type(data).__name__}")


def _postfix(r: EpochResult) -> dict:
    out = {"loss": f"{r.loss:.4f}", "acc": f"{r.train_accuracy:.3f}"}
    if r.test_accuracy is not None:
        out["test"] = f"{r.test_accuracy:.3f}"
    return out


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
