"""Penalties added to the fine-tuning loss: group sparsity over pruning groups, and a Lipschitz bound.

Group sparsity (per layer ``l`` with groups ``g`` of :mod:`spikec.compress.groups`, ``G_l`` groups,
``n_l = ||W_l||_F`` at the start, so that every layer weighs the same whatever its scale):

- group lasso (Wen et al., NeurIPS 2016, structured sparsity learning):
  ``GL_l = sum_g ||w_g||_2 / (sqrt(G_l) n_l)``;
- Group-Hoyer-square (Yang, Wen & H. Li, "DeepHoyer", ICLR 2020), scale-invariant, so it pushes
  small groups to zero without shrinking the large ones: ``HS_l = (sum_g ||w_g||_2)^2 /
  (G_l sum_g ||w_g||_2^2)``.

Lipschitz (after CorrectNet, G. L. Zhang et al.: a network whose layers have small Lipschitz
constants amplifies conductance errors less): ``LIP_l = sigma_max(W_l) / sigma_max(W_l at the
start)`` with ``W_l`` unrolled to ``[K, rows]``, the spectral norm from power iteration (the
singular vectors are carried over between steps and not differentiated, so the gradient is
``u v^T / sigma_0``).

Each penalty is the mean over the layers, times its strength.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from spikec.compress import groups
from spikec.compress.masks import latent_weight

_EPS = 1e-24  # (relative) inside the square roots: a zero group has a zero (not NaN) gradient


def group_lasso(w: torch.Tensor, grouping: groups.Grouping, norm0: float) -> torch.Tensor:
    """``sum_g ||w_g|| / (sqrt(G) norm0)`` of one layer."""
    g = grouping.norms(w, _EPS * norm0 ** 2)
    return g.sum() / (math.sqrt(grouping.count) * norm0)


def hoyer_square(w: torch.Tensor, grouping: groups.Grouping, norm0: float) -> torch.Tensor:
    """``(sum_g ||w_g||)^2 / (G sum_g ||w_g||^2)`` of one layer (in ``[1/G, 1]``)."""
    g = grouping.norms(w, _EPS * norm0 ** 2)
    return g.sum() ** 2 / (grouping.count * (g ** 2).sum().clamp(min=_EPS * norm0 ** 2))


class GroupSparsity:
    """``strength * mean_l penalty_l`` over ``layers`` for ``kind`` "group-lasso" or "hoyer-square"."""

    def __init__(self, layers: dict[str, nn.Module], kind: str, strength: float, granularity: str,
                 tile: groups.TileShape | None = None):
        if kind not in ("group-lasso", "hoyer-square"):
            raise ValueError(f"regularizer must be 'group-lasso' or 'hoyer-square', got {kind!r}")
        self.layers, self.strength = layers, float(strength)
        self.penalty = group_lasso if kind == "group-lasso" else hoyer_square
        self.groupings = {n: groups.grouping(latent_weight(m).shape, granularity, tile) for n, m in layers.items()}
        self.norm0 = {n: max(float(latent_weight(m).detach().norm()), 1e-12) for n, m in layers.items()}

    def __call__(self) -> torch.Tensor:
        terms = [self.penalty(latent_weight(m), self.groupings[n], self.norm0[n]) for n, m in self.layers.items()]
        return self.strength * torch.stack(terms).mean()


def spectral_norm(w: torch.Tensor, u: torch.Tensor, iterations: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, u)``: the largest singular value of ``w [K, N]`` (differentiable, as ``u^T w v``) after
    ``iterations`` power steps from ``u [K]``."""
    with torch.no_grad():
        wd = w.detach()
        for _ in range(max(1, iterations)):
            v = torch.nn.functional.normalize(wd.t() @ u, dim=0, eps=1e-12)
            u = torch.nn.functional.normalize(wd @ v, dim=0, eps=1e-12)
    return u @ (w @ v), u


class Lipschitz:
    """``strength * mean_l sigma_max(W_l) / sigma_max(W_l^0)`` (see the module docstring)."""

    def __init__(self, layers: dict[str, nn.Module], strength: float, seed: int = 0, warmup: int = 30):
        self.layers, self.strength = layers, float(strength)
        gen = torch.Generator().manual_seed(seed)
        self.u, self.sigma0 = {}, {}
        for n, m in layers.items():
            w = latent_weight(m).detach()
            w = w.reshape(w.shape[0], -1)
            u = torch.nn.functional.normalize(torch.randn(w.shape[0], generator=gen, dtype=w.dtype), dim=0)
            s, u = spectral_norm(w, u, warmup)
            self.u[n], self.sigma0[n] = u, max(float(s), 1e-12)

    def __call__(self) -> torch.Tensor:
        terms = []
        for n, m in self.layers.items():
            w = latent_weight(m)
            s, self.u[n] = spectral_norm(w.reshape(w.shape[0], -1), self.u[n].to(w))
            terms.append(s / self.sigma0[n])
        return self.strength * torch.stack(terms).mean()
