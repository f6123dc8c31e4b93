"""Choose and run a backend for the multi-step LIF/IF update."""
from __future__ import annotations

import torch

from spikec.functional.neurons import lif_multistep
from spikec.surrogate import Surrogate

BACKENDS = ("auto", "torch", "triton", "cpu")


def run_lif(
    x: torch.Tensor,
    v: torch.Tensor,
    beta,
    threshold,
    reset: str,
    surrogate: Surrogate,
    detach_reset: bool,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-step update of ``x [T, ...]`` from ``v [...]``; returns ``(spikes, v_T)``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "torch"):
        return lif_multistep(x, v, beta, threshold, reset, surrogate, detach_reset)
    raise RuntimeError(f"backend {backend!r} is not available in this build")
