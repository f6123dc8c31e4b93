"""Fine-tuning a compressed network: cross-entropy plus attention transfer from the teacher,
optionally with knowledge distillation from the teacher's scores (Hinton et al. 2015).

One loop serves ANNs, rate SNNs (surrogate-gradient backpropagation through time: the spike
functions carry surrogate derivatives and autograd unrolls the time loop) and TTFS SNNs (the same,
through their time-stepped simulator). After every step the masks are re-applied; with a
:class:`~spikec.compress.dnr.SparseTraining` the gradients feed its momenta and it updates the
masks at its steps. The teacher sees the same random input draw as the student (the random state is
replayed), so rate-coded attention maps are compared on identical spike trains.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from spikec.compress.attention import attention_loss, tap
from spikec.compress.config import AttentionConfig
from spikec.compress.dnr import SparseTraining
from spikec.compress.masks import apply_masks_
from spikec.errors import SpikecError, UsageError
from spikec.kernels.small_conv import small_map_convolutions


@dataclass(frozen=True)
class FinetuneEpoch:
    epoch: int
    loss: float
    attention_loss: float
    train_accuracy: float
    seconds: float


def finetune(
    model: nn.Module,
    train_data,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 32,
    optimizer: str = "adam",
    seed: int = 0,
    teacher: nn.Module | None = None,
    attention: AttentionConfig | None = None,
    attention_layers: list[str] | None = None,
    sparsity: SparseTraining | None = None,
    relative_lr: bool = True,
    progress=None,
    penalty=None,
    variation=None,
    augment=None,
    distill: float = 0.0,
    temperature: float = 4.0,
    state=None,
    phase: str = "prune",
) -> list[FinetuneEpoch]:
    """Train ``model`` in place for ``epochs`` (cosine learning rate); returns per-epoch statistics.

    ``teacher`` and ``attention`` (with ``attention_layers``, names present in both models) add the
    attention-transfer term. ``sparsity`` sees every gradient and updates the masks after the
    optimizer steps it chooses. ``progress(epoch_result)`` is called after each epoch.
    ``penalty()`` (a tensor) is added to every step's loss (see :mod:`spikec.compress.regularize`);
    ``variation`` (a :class:`~spikec.compress.variation.ConductanceVariation` attached to the
    model's layers) moves to the chip of each optimizer step before its forward pass.
    ``augment(x, generator)`` transforms each training batch (teacher and student see the same
    transformed batch), drawing from its own generator seeded from ``seed``.

    ``distill`` > 0 (needs ``teacher``) mixes the cross-entropy with the teacher's softened scores:
    ``(1 - distill) * CE + distill * temperature^2 * KL(teacher || student)`` at ``temperature``
    (:func:`distillation_loss`); a pruned network then learns the teacher's ranking of the wrong
    classes too, not only the label.

    ``state`` (a :class:`~spikec.compress.resume.CompressState`) is written after every epoch as
    ``phase``; when it holds a run stopped in ``phase``, training continues after its last epoch.

    ``relative_lr``: each parameter tensor's learning rate is ``lr`` times its root-mean-square
    value at the start, so that every layer moves by the same fraction. Converted SNNs carry
    their activation scales in their weights (weights of magnitude 1 to 100 next to others of
    0.01), where one absolute Adam step size is far too small for some layers and too large for
    others.
    """
    from spikec.training import batches

    if epochs <= 0:
        return []
    use_attention = teacher is not None and attention is not None and attention.beta > 0 and bool(attention_layers)
    if not 0.0 <= float(distill) <= 1.0:
        raise UsageError(f"distill is the weight of the distillation term in [0, 1], got {distill}")
    use_distill = float(distill) > 0
    if use_distill and teacher is None:
        raise UsageError("distillation needs a teacher")
    if use_attention or use_distill:
        teacher.eval()
    opt = _optimizer(model, optimizer, lr, relative_lr)
    n = num_samples(train_data)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total_steps = steps_per_epoch * epochs
    cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    history = []
    with torch.random.fork_rng(devices=[]), small_map_convolutions(model, teacher):
        torch.manual_seed(seed)
        order = torch.Generator().manual_seed(seed)
        draws = torch.Generator().manual_seed(seed + 1)  # augmentation
        generators = {"order": order, "draws": draws}
        done = state.restore(phase, model, opt, sched, generators, sparsity) if state is not None else 0
        if done:
            history = [FinetuneEpoch(**h) for h in state.phase_history(phase) if h["epoch"] <= done]
        step = done * steps_per_epoch
        for epoch in range(done + 1, epochs + 1):
            start = time.perf_counter()
            model.train()
            tot, tot_at, correct, seen = 0.0, 0.0, 0, 0
            for x, y in batches(train_data, batch_size, shuffle=True, generator=order):
                if variation is not None:
                    variation.set_step(step)
                if augment is not None:
                    x = augment(x, draws)
                at = torch.zeros(())
                if use_attention or use_distill:
                    rng = torch.get_rng_state()
                    layers, source = (attention_layers, attention.source) if use_attention else ([], "rate")
                    with torch.no_grad(), tap(teacher, layers, source) as t_feats:
                        t_scores = teacher(x)
                    torch.set_rng_state(rng)
                    with tap(model, layers, source) as s_feats:
                        scores = model(x)
                    if use_attention:
                        at = attention_loss(s_feats, t_feats, attention.beta, attention.p)
                else:
                    scores = model(x)
                if use_distill:
                    loss = (1 - float(distill)) * F.cross_entropy(scores, y) \
                        + float(distill) * distillation_loss(scores, t_scores, temperature) + at
                else:
                    loss = F.cross_entropy(scores, y) + at
                if penalty is not None:
                    loss = loss + penalty()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if sparsity is not None:
                    sparsity.accumulate()
                opt.step()
                sched.step()
                apply_masks_(model)
                step += 1
                if sparsity is not None:
                    sparsity.after_step(step, total_steps)
                tot += float(loss.detach()) * len(y)
                tot_at += float(at.detach()) * len(y)
                correct += int((scores.detach().argmax(1) == y).sum())
                seen += len(y)
            if not math.isfinite(tot):
                raise SpikecError(f"fine-tuning diverged in epoch {epoch}; try a lower learning rate")
            result = FinetuneEpoch(epoch, tot / seen, tot_at / seen, correct / seen, time.perf_counter() - start)
            history.append(result)
            if state is not None:
                state.save(phase, epoch, asdict(result), model, opt, sched, generators, sparsity)
            if progress is not None:
                progress(result)
    return history


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """``temperature^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch; the
    ``T^2`` keeps its gradient on the scale of the cross-entropy's (Hinton et al. 2015)."""
    if not float(temperature) > 0:
        raise UsageError(f"distillation temperature must be > 0, got {temperature}")
    t = float(temperature)
    log_p = F.log_softmax(student.float() / t, dim=-1)
    q = F.log_softmax(teacher.detach().float() / t, dim=-1)
    return t * t * F.kl_div(log_p, q, log_target=True, reduction="batchmean")


def augmentation(choice: str, train_data):
    """The batch transform ``FinetuneConfig.augment`` asks for on ``train_data`` (None: no augmentation)."""
    from spikec.data.augment import default_augmentation

    if choice == "none":
        return None
    shape = input_shape(train_data)
    chosen = default_augmentation(shape) if shape is not None else None
    if choice == "crop-flip" and chosen is None:
        raise UsageError(f"augment='crop-flip' needs images of at least 16x16 pixels; the training inputs have shape {shape}")
    return chosen


def input_shape(data):
    """Shape of one training input of a ``(x, y)`` pair, a map-style dataset or a DataLoader (None if unknown)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        return tuple(data[0].shape[1:])
    dataset = getattr(data, "dataset", data)
    try:
        x = dataset[0][0]
    except (TypeError, IndexError, KeyError):
        return None
    return tuple(torch.as_tensor(x).shape)


def num_samples(data) -> int:
    """Samples in ``data`` (inputs, labels), a dataset or a loader (1 when it has no length)."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return len(data[1])
    try:
        return len(data.dataset) if hasattr(data, "dataset") else len(data)
    except TypeError:
        return 1


def _optimizer(model: nn.Module, name: str, lr: float, relative: bool) -> torch.optim.Optimizer:
    from spikec.training import OPTIMIZERS

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if relative:
        groups = [{"params": [p], "lr": lr * max(float(p.detach().float().pow(2).mean().sqrt()), 1e-3)} for p in params]
    else:
        groups = [{"params": params, "lr": lr}]
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
