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
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from spikec import distributed
from spikec.errors import SpikecError
from spikec.kernels.small_conv import small_map_convolutions

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "constant", "onecycle", "warmup-cosine")
PRECISIONS = ("fp32", "bf16")
STATE_VERSION = 1

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


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
    momentum: float = 0.9,
    nesterov: bool = False,
    label_smoothing: float = 0.0,
    warmup_epochs: float = 0.0,
    augment: Augment | None = None,
    state_file: str | None = None,
    resume: bool = False,
    on_epoch: Callable[[EpochResult], None] | None = None,
    channels_last: bool = False,
    precision: str = "fp32",
) -> list[EpochResult]:
    """Train ``model`` in place and return one :class:`EpochResult` per epoch.

    ``train_data`` / ``test_data``: a ``TensorDataset``, an ``(inputs, labels)`` pair of tensors, any
    map-style dataset of ``(input, label)`` pairs, or a ``DataLoader`` (used as it is). ``loss`` maps
    ``(scores [B, C], labels [B])`` to a scalar (default cross-entropy with ``label_smoothing``).
    ``optimizer``: "adam", "adamw" or "sgd" (``momentum``, ``nesterov``). ``schedule``: "cosine"
    (annealed to zero per epoch), "constant", "onecycle" (per batch: warm-up over the first 30% to
    ``lr``, then cosine down; Smith & Topin 2019) or "warmup-cosine" (per batch: linear warm-up over
    ``warmup_epochs``, then cosine to zero). ``augment(x, generator)`` transforms each training batch
    on the device (see :mod:`spikec.data.augment`).

    ``state_file``: after every epoch the whole training state (weights, optimizer, schedule, random
    states, history) is written there atomically; with ``resume=True`` a run continues from the last
    complete epoch recorded in it and ends with the same weights as an uninterrupted run (bitwise on
    CPU). A state file from a different run (other model or settings) is refused with an error naming it.
    ``channels_last`` trains convolutions in NHWC memory layout (2-6x faster for small CIFAR nets on
    CPU here); the model is handed back in the default layout. ``precision="bf16"`` runs the forward
    pass under bfloat16 autocast (weights, optimizer and loss stay float32): 1.6x faster ResNet-20
    epochs on a CPU with AVX512-BF16 (``benchmarks/train_precision.py``); conversion and evaluation
    use the float32 weights as ever.

    Under ``torchrun`` (a process group from :func:`spikec.distributed.init_from_env`) the model is
    wrapped in DistributedDataParallel and each rank trains on its slice of every global batch of
    ``batch_size`` samples; the result equals a single-process run with the same seed.
    """
    _check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    if loss is not None:
        loss_fn = loss
    elif label_smoothing:
        loss_fn = lambda scores, y: F.cross_entropy(scores, y, label_smoothing=label_smoothing)  # noqa: E731
    else:
        loss_fn = F.cross_entropy
    device = torch.device(device)
    model.to(device)
    layout = torch.channels_last if channels_last else None
    if layout is not None:
        model.to(memory_format=layout)
    rank, world = distributed.rank_and_size()
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    opt = make_optimizer(model, optimizer, lr, weight_decay, momentum=momentum, nesterov=nesterov)
    steps_per_epoch = count_batches(train_data, batch_size)
    sched, per_batch = make_schedule(opt, schedule, lr, epochs, steps_per_epoch, warmup_epochs)
    signature = {"epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size), "optimizer": optimizer,
                 "weight_decay": float(weight_decay), "schedule": schedule, "seed": int(seed),
                 "momentum": float(momentum), "nesterov": bool(nesterov), "label_smoothing": float(label_smoothing),
                 "warmup_epochs": float(warmup_epochs), "augment": repr(augment) if augment is not None else None,
                 "samples": _length(train_data), "world": world,
                 "parameters": [[k, list(v.shape)] for k, v in model.state_dict().items()]}
    if precision != "fp32":  # only then: state files of earlier float32 runs keep resuming
        signature["precision"] = precision
    history: list[EpochResult] = []
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices, device_type=device.type), small_map_convolutions(model):
        torch.manual_seed(seed)
        order = torch.Generator().manual_seed(seed)
        draws = torch.Generator().manual_seed(seed + 1)  # augmentation
        first = 1
        if resume and state_file is not None and os.path.exists(state_file):
            first, history = _restore(state_file, signature, model, opt, sched, order, draws, device)
        total = (int(epochs) - first + 1) * steps_per_epoch
        bar = tqdm(total=total, desc="train", unit="batch", disable=not progress or rank != 0, dynamic_ncols=True)
        for epoch in range(first, int(epochs) + 1):
            start = time.perf_counter()
            model.train()
            total_loss, correct, seen = 0.0, 0, 0
            for x, y in batches(train_data, batch_size, shuffle=True, generator=order):
                n_global = len(y)
                if world > 1:
                    part = distributed.shard(n_global, rank, world)
                    x, y = x[part], y[part]
                x, y = x.to(device), y.to(device)
                if augment is not None:
                    x = augment(x, draws)
                if layout is not None and x.dim() == 4:
                    x = x.contiguous(memory_format=layout)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    scores = net(x)
                scores = scores.float()
                # a mean over the local slice, rescaled so DDP's average over ranks is the global mean
                batch_loss = loss_fn(scores, y) * (len(y) * world / n_global) if len(y) else scores.sum() * 0
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                if per_batch:
                    sched.step()
                total_loss += float(batch_loss.detach()) * n_global / world
                correct += int((scores.detach().argmax(1) == y).sum())
                seen += len(y)
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{total_loss / max(seen, 1):.4f}",
                                acc=f"{correct / max(seen, 1):.3f}", refresh=False)
            total_loss, correct, seen = distributed.all_sum(total_loss, correct, seen)
            correct, seen = int(correct), int(seen)
            if seen == 0:
                raise SpikecError("training data is empty")
            mean_loss = total_loss / seen
            if not math.isfinite(mean_loss):
                raise SpikecError(f"training diverged: loss is {mean_loss} in epoch {epoch}; try a lower learning rate")
            if sched is not None and not per_batch:
                sched.step()
            test_acc = evaluate(model, test_data, batch_size=max(batch_size, 256), device=device) if test_data is not None else None
            history.append(EpochResult(epoch, mean_loss, correct / seen, test_acc, time.perf_counter() - start))
            if state_file is not None and rank == 0:
                _save_state(state_file, signature, epoch, history, model, opt, sched, order, draws, device)
            if on_epoch is not None and rank == 0:
                on_epoch(history[-1])
        bar.close()
    if layout is not None:
        model.to(memory_format=torch.contiguous_format)
    if net is not model:  # free the DDP wrapper (it sits in reference cycles) while the process group lives
        del net
        gc.collect()
    return history


def make_schedule(opt, schedule: str, lr: float, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0):
    """``(scheduler or None, steps per batch?)`` for a schedule name (see :func:`train`)."""
    if schedule == "constant":
        return None, False
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs), False
    total = max(1, int(epochs) * int(steps_per_epoch))
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.3,
                                                   anneal_strategy="cos", cycle_momentum=False), True
    warm = min(total - 1, int(round(float(warmup_epochs) * steps_per_epoch)))
    if warm < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor), True


def count_batches(data, batch_size: int) -> int:
    """Mini-batches per epoch of ``data`` at ``batch_size`` (as :func:`batches` yields them)."""
    if isinstance(data, DataLoader):
        return len(data)
    return max(1, math.ceil(_length(data) / batch_size))


def _length(data) -> int:
    if isinstance(data, DataLoader):
        return len(data.dataset)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        return len(data[1])
    return len(data)


def _save_state(path, signature, epoch, history, model, opt, sched, order, draws, device) -> None:
    from spikec.io.run_state import save_run_state, schedule_state

    state = {
        "format": "spikec-train-state", "version": STATE_VERSION, "signature": signature, "epoch": epoch,
        "history": [asdict(r) for r in history], "model": model.state_dict(), "optimizer": opt.state_dict(),
        "schedule": schedule_state(sched) if sched is not None else None,
        "rng": {"torch": torch.get_rng_state(), "order": order.get_state(), "draws": draws.get_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
    }
    save_run_state(path, state)


def _restore(path, signature, model, opt, sched, order, draws, device):
    from spikec.io.run_state import load_run_state

    state = load_run_state(path, "spikec-train-state", signature, "training")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None and state.get("schedule") is not None:
        sched.load_state_dict({**sched.state_dict(), **state["schedule"]})
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    order.set_state(rng["order"])
    draws.set_state(rng["draws"])
    if device.type == "cuda" and rng.get("cuda") is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)
    history = [EpochResult(**r) for r in state["history"]]
    return int(state["epoch"]) + 1, history


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
        with torch.no_grad(), small_map_convolutions(model):
            for x, y in batches(data, batch_size, shuffle=False):
                x, y = x.to(device), y.to(device)
                correct += int((model(x).argmax(1) == y).sum())
                seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise SpikecError("evaluation data is empty")
    return correct / seen


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    """An optimizer over ``model``'s trainable parameters, by name (``momentum``/``nesterov`` for SGD)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
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


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
