"""QCFS: the quantisation-clip-floor-shift activation of Bu et al. (ICLR 2022).

Training an ANN with QCFS instead of ReLU makes its activations look like what an IF neuron
with threshold ``lambda``, reset by subtraction and initial membrane ``lambda / 2`` emits over
``L`` time steps::

    qcfs(x) = lambda / L * clamp(floor(x * L / lambda + 1/2), 0, L)

The shift of one half matches the half-threshold initial membrane, which makes the expected
conversion error zero (Bu et al., Theorem 2). ``lambda`` is trained; the floor passes its
gradient straight through. Rate conversion reads ``threshold`` and ``levels`` from each QCFS.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class _ClipFloorShift(torch.autograd.Function):
    """``qcfs`` with its straight-through gradient written out.

    The same values and gradients as composing clamp, floor with an identity gradient, and the
    scalings (tested equal), but autograd keeps one tensor instead of six. A float32 ResNet-20
    epoch on CIFAR-10 shrank from about 157 to 126 s on 2 cores (``benchmarks/train_precision.py
    --acts``); under bfloat16 autocast both forms take the same time, and QCFS epochs there stay
    about 1.6x ReLU ones.
    """

    @staticmethod
    def forward(ctx, x, threshold, levels: int, shift: float):
        ctx.save_for_backward(x, threshold)
        ctx.levels, ctx.shift = levels, shift
        q = torch.floor(x.div(threshold).mul_(levels).add_(shift)).clamp_(0, levels)
        return q.mul_(threshold / levels)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, threshold = ctx.saved_tensors
        s = x / threshold
        inside = (s > 0) & (s < 1)  # torch.clamp passes gradient strictly inside its bounds
        grad_x = grad * inside if ctx.needs_input_grad[0] else None  # (torch.where is 10x slower here)
        grad_threshold = None
        if ctx.needs_input_grad[1]:
            # d/d(lambda) of lambda/L * floor(clamp(x/lambda) L + shift) through the identity floor: q/L - x/lambda inside
            q = torch.floor(s.clamp(0.0, 1.0).mul_(ctx.levels).add_(ctx.shift)).div_(ctx.levels)
            grad_threshold = (grad * q.sub_(s.mul_(inside))).sum_to_size(threshold.shape)  # sums accumulate in float32
            grad_threshold = grad_threshold.to(threshold.dtype)
        return grad_x, grad_threshold, None, None


def qcfs(x: torch.Tensor, threshold: torch.Tensor, levels: int, shift: float = 0.5) -> torch.Tensor:
    """The clip-floor-shift function with ``levels`` steps between 0 and ``threshold``; the floor passes its
    gradient straight through."""
    if not torch.is_tensor(threshold):
        threshold = torch.tensor(float(threshold), dtype=x.dtype)
    return _ClipFloorShift.apply(x, threshold, int(levels), float(shift))


class QCFS(nn.Module):
    """Clip-floor-shift activation with ``levels`` quantisation steps and a trainable threshold.

    The threshold is learned with the weights, but slowly (Adam moves it by about the learning
    rate per step), so its initial value matters. The reference implementation
    (putshua/SNN_conversion_QCFS) starts at 8.0 for normalised CIFAR/ImageNet inputs; the default
    here, 2.0, is near the activation scale of inputs in ``[0, 1]``. In one run on the digits data
    (VGG-11 at width 0.25, L=4, 30 epochs of Adam at 3e-3) thresholds started at 8.0 were still
    near 7.5 at the end, and the network scored 0.8 points lower as an ANN and 1.9 points lower as
    an SNN at T=4 than the same network started at 2.0.
    ``learn_threshold=False`` keeps the threshold fixed.
    """

    def __init__(self, levels: int = 8, threshold: float = 2.0, learn_threshold: bool = True):
        super().__init__()
        if int(levels) < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        if not float(threshold) > 0:
            raise ValueError(f"QCFS threshold must be > 0, got {threshold}")
        self.levels = int(levels)
        value = torch.tensor(float(threshold))
        if learn_threshold:
            self.threshold = nn.Parameter(value)
        else:
            self.register_buffer("threshold", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return qcfs(x, self.threshold, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={float(self.threshold):.4g}"


def qcfs_from_relu(ann: nn.Module, calib: torch.Tensor, levels: int = 4, percentile: float = 99.9,
                   batch_size: int = 256) -> nn.Module:
    """A QCFS copy of a trained ReLU network, ready to be fine-tuned instead of trained from scratch.

    The copy has the same architecture (``ann.arch_name``/``arch_config``) with ``QCFS(levels)`` at
    every ReLU, the ReLU network's weights, and each threshold set to the ``percentile`` of its
    ReLU's outputs on ``calib`` (the scale threshold balancing would pick). A few epochs of training
    then adapt the weights to the quantised activations at a fraction of the cost of a full run.
    """
    from spikec.models import build_model

    if not hasattr(ann, "arch_name") or not hasattr(ann, "arch_config"):
        raise ValueError("qcfs_from_relu needs a model built by spikec.models.build_model")
    relus = {name: m for name, m in ann.named_modules() if isinstance(m, nn.ReLU)}
    if not relus:
        raise ValueError(f"{type(ann).__name__} has no ReLU to replace")
    qann = build_model(ann.arch_name, act=lambda: QCFS(levels), **ann.arch_config)
    missing, unexpected = qann.load_state_dict(ann.state_dict(), strict=False)
    if unexpected or any(not key.endswith("threshold") for key in missing):
        raise ValueError(f"{ann.arch_name}: weights do not match its QCFS copy ({(missing + unexpected)[:3]})")
    outputs: dict[str, list] = {name: [] for name in relus}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: outputs[name].append(out.detach().flatten()))
             for name, m in relus.items()]
    was_training = ann.training
    ann.eval()
    try:
        with torch.no_grad():
            for batch in calib.split(batch_size):
                ann(batch)
    finally:
        for h in hooks:
            h.remove()
        ann.train(was_training)
    for name, chunks in outputs.items():
        values = torch.cat(chunks)
        positive = values[values > 0]
        if positive.numel():  # the nearest-rank percentile of every positive output (kthvalue has no size limit)
            k = min(positive.numel(), max(1, math.ceil(percentile / 100 * positive.numel())))
            scale = torch.kthvalue(positive.float(), k).values
        else:
            scale = torch.tensor(1.0)
        module = qann.get_submodule(name)
        if not isinstance(module, QCFS):
            raise ValueError(f"{name}: expected a QCFS at the position of the ReLU, found {type(module).__name__}")
        module.threshold.data.fill_(max(float(scale), 1e-3))
    return qann
