"""Input encoders (static ``[B, ...]`` -> time-first ``[T, B, ...]``) and output decoders.

Encoders expect intensities scaled to ``[0, 1]`` where a probability or a latency is implied.
"""
from __future__ import annotations

import torch


def rate_encode(x: torch.Tensor, timesteps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli spikes with probability ``clamp(x, 0, 1)`` per step: the discrete-time Poisson process.

    The expected count over ``timesteps`` steps is ``timesteps * x``. Steps are drawn one after
    the other, so the first ``t`` steps of a longer draw are the ``t``-step draw from the same
    generator state, on any device, and drawing a run in time chunks gives the same spikes.
    """
    _check_steps(timesteps)
    p = x.clamp(0, 1)
    return torch.stack([torch.bernoulli(p, generator=generator) for _ in range(int(timesteps))]).to(x.dtype)


poisson_encode = rate_encode


def direct_encode(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """The same analog input current at every step (the "direct" coding of converted SNNs)."""
    _check_steps(timesteps)
    return x.unsqueeze(0).expand(timesteps, *x.shape)


def latency_encode(x: torch.Tensor, timesteps: int, x_min: float = 0.0, start: int = 0,
                   steps: int | None = None) -> torch.Tensor:
    """One spike per input at step ``round((1 - x) * (timesteps - 1))``: larger values fire earlier.

    Inputs ``<= x_min`` do not spike (a zero carries no event, as in TTFS hardware). ``start`` and
    ``steps`` select the window ``[start, start + steps)`` of the ``timesteps``-step train (default
    all of it), for time-chunked runs. A spike's step depends on ``timesteps``, so unlike rate and
    direct coding a shorter train is not the beginning of a longer one.
    """
    _check_steps(timesteps)
    steps = int(timesteps) - int(start) if steps is None else int(steps)
    t = latency_times(x, timesteps, x_min)
    index = torch.arange(int(start), int(start) + steps, device=x.device).view(-1, *([1] * x.dim()))
    return (index == t.unsqueeze(0)).to(x.dtype)


def latency_times(x: torch.Tensor, timesteps: int, x_min: float = 0.0) -> torch.Tensor:
    """Spike step of each input under :func:`latency_encode` (``inf`` where it does not spike)."""
    t = torch.round((1 - x.clamp(0, 1)) * (timesteps - 1))
    return torch.where(x > x_min, t, torch.full_like(t, float("inf")))


def spike_count(spikes: torch.Tensor) -> torch.Tensor:
    """Spikes per neuron summed over time: ``[T, B, ...] -> [B, ...]``."""
    return spikes.sum(0)


def spike_rate(spikes: torch.Tensor) -> torch.Tensor:
    """Mean spikes per step: ``[T, B, ...] -> [B, ...]``."""
    return spikes.mean(0)


def mean_membrane(out: torch.Tensor) -> torch.Tensor:
    """Accumulated output of a non-spiking readout divided by T: ``[T, B, ...] -> [B, ...]``."""
    return out.mean(0)


def first_spike_time(spikes: torch.Tensor, no_spike: float | None = None) -> torch.Tensor:
    """Step of each neuron's first spike, ``[T, B, ...] -> [B, ...]``; ``no_spike`` (default T) where silent.

    Differentiable through the spike values, as a weighted sum of step indices with only the first
    spike weighted: ``t = sum_t t * s_t * prod_{u<t} (1 - s_u) + T * prod_t (1 - s_t)``.
    """
    T = spikes.shape[0]
    fill = float(T if no_spike is None else no_spike)
    not_yet = torch.cumprod(torch.cat([torch.ones_like(spikes[:1]), 1 - spikes[:-1]]), 0)
    first = spikes * not_yet
    steps = torch.arange(T, device=spikes.device, dtype=spikes.dtype).view(-1, *([1] * (spikes.dim() - 1)))
    never = not_yet[-1] * (1 - spikes[-1])
    return (first * steps).sum(0) + never * fill


def _check_steps(timesteps: int) -> None:
    if int(timesteps) < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
