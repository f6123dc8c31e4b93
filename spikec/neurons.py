"""IF and LIF neuron layers over time-first input ``[T, B, ...]``.

The layers hold their membrane between calls (streaming); ``spikec.reset(model)`` clears it.
The update itself is :func:`spikec.functional.lif_multistep`, run by the chosen backend.
"""
from __future__ import annotations

import torch
from torch import nn

from spikec.functional.neurons import check_reset
from spikec.kernels import BACKENDS, run_lif
from spikec.module import SpikingModule
from spikec.surrogate import ArcTan, Surrogate


class LIF(SpikingModule):
    """Leaky integrate-and-fire: ``v <- beta*v + x``, spike at ``v >= threshold``, then reset.

    ``learn_beta`` makes the leak a parameter ``w`` with ``beta = sigmoid(w)`` (the parametric LIF
    of Fang et al. 2021); ``learn_threshold`` makes the threshold a parameter. ``v_init`` is the
    membrane each sequence starts from (a number, or a tensor broadcastable to one sample).
    """

    def __init__(
        self,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        v_init: float | torch.Tensor = 0.0,
        surrogate: Surrogate | None = None,
        detach_reset: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        backend: str = "auto",
    ):
        super().__init__()
        if not 0.0 < float(beta) <= 1.0:
            raise ValueError(f"beta must lie in (0, 1], got {beta}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.reset_mode = check_reset(reset)
        self.surrogate = surrogate if surrogate is not None else ArcTan()
        self.detach_reset = bool(detach_reset)
        self.backend = backend
        self.learn_beta = bool(learn_beta)
        if self.learn_beta:
            b = min(float(beta), 1 - 1e-6)
            self.beta_logit = nn.Parameter(torch.tensor(float(torch.logit(torch.tensor(b)))))
        else:
            self.register_buffer("_beta", torch.tensor(float(beta)), persistent=False)
        if learn_threshold:
            self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        else:
            self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float32).clone())
        self.v_init = v_init
        self.v: torch.Tensor | None = None

    @property
    def beta(self) -> torch.Tensor:
        return torch.sigmoid(self.beta_logit) if self.learn_beta else self._beta

    def reset_state(self) -> None:
        self.v = None

    def _initial_v(self, x0: torch.Tensor) -> torch.Tensor:
        v0 = torch.as_tensor(self.v_init, dtype=x0.dtype, device=x0.device)
        return torch.zeros_like(x0) + v0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"{type(self).__name__} expects time-first input [T, B, ...], got shape {tuple(x.shape)}")
        v = self.v
        if v is None:
            v = self._initial_v(x[0])
        elif v.shape != x.shape[1:]:
            raise ValueError(
                f"{type(self).__name__}: input sample shape {tuple(x.shape[1:])} does not match the held state "
                f"{tuple(v.shape)}; call spikec.reset(model) between sequences"
            )
        threshold = self.threshold.to(x.dtype)
        beta = self.beta.to(x.dtype)
        spikes, self.v = run_lif(x, v, beta, threshold, self.reset_mode, self.step_surrogate(threshold),
                                 self.detach_reset, self.backend)
        return spikes

    def step_surrogate(self, threshold: torch.Tensor) -> Surrogate:
        """The surrogate this forward pass uses; subclasses may adapt it to the threshold."""
        return self.surrogate

    def extra_repr(self) -> str:
        thr = self.threshold
        thr = f"{thr.item():.4g}" if thr.numel() == 1 else f"tensor{tuple(thr.shape)}"
        parts = [f"threshold={thr}", f"reset={self.reset_mode!r}"]
        if not isinstance(self, IF):
            parts.insert(0, f"beta={self.beta.item():.4g}" + (" (learned)" if self.learn_beta else ""))
        if self.detach_reset:
            parts.append("detach_reset=True")
        if self.backend != "auto":
            parts.append(f"backend={self.backend!r}")
        return ", ".join(parts)


class IF(LIF):
    """Integrate-and-fire (no leak): ``v <- v + x``; the neuron of rate-coded ANN-to-SNN conversion."""

    def __init__(
        self,
        threshold: float = 1.0,
        reset: str = "subtract",
        v_init: float | torch.Tensor = 0.0,
        surrogate: Surrogate | None = None,
        detach_reset: bool = False,
        learn_threshold: bool = False,
        backend: str = "auto",
    ):
        super().__init__(1.0, threshold, reset, v_init, surrogate, detach_reset, False, learn_threshold, backend)
