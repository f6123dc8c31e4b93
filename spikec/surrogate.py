"""Surrogate gradients: a Heaviside step forward, a smooth derivative backward.

Each surrogate is a small frozen object. ``derivative(x)`` is the documented pseudo-derivative
of the spike with respect to ``x = v - threshold``; calling the object applies the step with that
derivative. Fast kernels read ``name`` and ``alpha`` to evaluate the same derivative in closed form.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, surrogate):
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(x), None


class Surrogate:
    """Base: subclasses define ``name``, ``alpha`` and ``derivative``."""

    name = "base"
    alpha = 1.0

    def derivative(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Spike (1 where ``x >= 0``) with this surrogate's gradient."""
        return _Spike.apply(x, self)


@dataclass(frozen=True)
class ArcTan(Surrogate):
    """d/dx = (alpha/2) / (1 + (pi/2 * alpha * x)^2)  (Fang et al. 2021, spikingjelly default)."""

    alpha: float = 2.0
    name = "arctan"

    def derivative(self, x):
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """d/dx = 1 / (1 + alpha*|x|)^2  (Zenke & Ganguli 2018, SuperSpike; snntorch's slope=25)."""

    alpha: float = 25.0
    name = "fast_sigmoid"

    def derivative(self, x):
        return 1.0 / (1 + self.alpha * x.abs()) ** 2


@dataclass(frozen=True)
class Triangle(Surrogate):
    """d/dx = alpha * max(0, 1 - alpha*|x|): a triangle of half-width 1/alpha and area 1 (Esser et al. 2016)."""

    alpha: float = 1.0
    name = "triangle"

    def derivative(self, x):
        return self.alpha * torch.clamp(1 - self.alpha * x.abs(), min=0)


@dataclass(frozen=True)
class StraightThrough(Surrogate):
    """d/dx = 1: the straight-through estimator (Bengio et al. 2013)."""

    alpha: float = 1.0
    name = "straight_through"

    def derivative(self, x):
        return torch.ones_like(x)


@dataclass(frozen=True, eq=False)
class ThresholdRelative(Surrogate):
    """``base`` on the membrane measured in thresholds, ``x / threshold``, so d/dx = base'(x/thr) / thr.

    A converted network's thresholds are its activation scales (0.1 to 100); a surrogate of fixed
    width then sees a sliver of the membrane range in some layers and all of it in others, and
    fine-tuning stalls (a converted LeNet fell from 99% to 74% when pruned, 97% with this).
    """

    base: Surrogate
    threshold: torch.Tensor
    name = "threshold_relative"

    @property
    def alpha(self) -> float:
        return self.base.alpha

    def derivative(self, x):
        thr = self.threshold.to(x)
        return self.base.derivative(x / thr) / thr


def relative_to_threshold(surrogate: Surrogate, threshold: torch.Tensor) -> Surrogate:
    """``surrogate`` with its width in units of ``threshold`` (see :class:`ThresholdRelative`).

    For one threshold, ArcTan and Triangle stay themselves with ``alpha / threshold`` (the same
    derivative exactly), so the fused kernels still run them.
    """
    threshold = torch.as_tensor(threshold).detach()
    if threshold.numel() == 1 and type(surrogate) in (ArcTan, Triangle):
        return type(surrogate)(alpha=surrogate.alpha / float(threshold))
    return ThresholdRelative(surrogate, threshold)


def by_name(name: str, alpha: float | None = None) -> Surrogate:
    """Surrogate from its name, for configs and checkpoints."""
    kinds = {c.name: c for c in (ArcTan, FastSigmoid, Triangle, StraightThrough)}
    if name not in kinds:
        raise ValueError(f"unknown surrogate {name!r}; choose from {sorted(kinds)}")
    return kinds[name]() if alpha is None else kinds[name](alpha=alpha)
