"""Reference integrate-and-fire updates. These loops are the specification every kernel must match.

One step of a LIF neuron with leak ``beta`` (``beta = 1`` is the IF neuron)::

    v <- beta * v + x                     charge
    s <- H(v - threshold)                 fire (H(0) = 1, gradient from the surrogate)
    v <- v - s * threshold                reset="subtract" (soft reset)
    v <- v * (1 - s)                      reset="zero"     (hard reset to 0)

With ``detach_reset`` the reset term carries no gradient (Zenke & Vogels 2021).
"""
from __future__ import annotations

import torch

from spikec.surrogate import ArcTan, Surrogate

RESETS = ("subtract", "zero")
_DEFAULT_SURROGATE = ArcTan()


def check_reset(reset: str) -> str:
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
    return reset


def lif_step(
    x: torch.Tensor,
    v: torch.Tensor,
    beta: float | torch.Tensor = 1.0,
    threshold: float | torch.Tensor = 1.0,
    reset: str = "subtract",
    surrogate: Surrogate = _DEFAULT_SURROGATE,
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One time step; returns ``(spikes, v)``."""
    v = beta * v + x
    s = surrogate(v - threshold)
    r = s.detach() if detach_reset else s
    if reset == "subtract":
        v = v - r * threshold
    elif reset == "zero":
        v = v * (1 - r)
    else:
        check_reset(reset)
    return s, v


def if_step(x, v, threshold=1.0, reset="subtract", surrogate=_DEFAULT_SURROGATE, detach_reset=False):
    """One IF step (no leak); returns ``(spikes, v)``."""
    return lif_step(x, v, 1.0, threshold, reset, surrogate, detach_reset)


def lif_multistep(
    x: torch.Tensor,
    v: torch.Tensor,
    beta: float | torch.Tensor = 1.0,
    threshold: float | torch.Tensor = 1.0,
    reset: str = "subtract",
    surrogate: Surrogate = _DEFAULT_SURROGATE,
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``x`` of shape ``[T, ...]`` from membrane ``v`` (shape ``[...]``); returns ``(spikes [T, ...], v_T)``."""
    check_reset(reset)
    spikes = []
    for t in range(x.shape[0]):
        s, v = lif_step(x[t], v, beta, threshold, reset, surrogate, detach_reset)
        spikes.append(s)
    return torch.stack(spikes), v


def if_multistep(x, v, threshold=1.0, reset="subtract", surrogate=_DEFAULT_SURROGATE, detach_reset=False):
    """IF over ``[T, ...]``; returns ``(spikes, v_T)``."""
    return lif_multistep(x, v, 1.0, threshold, reset, surrogate, detach_reset)
