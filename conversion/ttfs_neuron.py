"""The TTFS neuron: a non-leaky integrate-and-fire neuron with linear post-synaptic potentials.

Time is measured in windows: layer ``n`` fires in window ``n`` (global time ``[n, n + 1]``), and
inside a window the local time ``tau`` runs from 0 (``t_min``) to 1 (``t_max``). A spike at local
time ``tau`` carries the value ``1 - tau``; ``tau = 1`` (or more, or ``inf``) means no spike, value 0.

A neuron's membrane, in these units (Stanojevic et al., Neural Networks 2023, with the slope
normalised to one):

- input phase (the source windows): every input spike at ``tau_j`` switches on a constant
  current ``w_ij`` until the end of its window, so it adds ``w_ij * (1 - tau_j)``; the bias is a
  constant current ``b_i`` over the window before the neuron's own. At the start of its window the
  membrane holds the **charge** ``V_i = sum_j w_ij (1 - tau_j)_+ + b_i``. The neuron cannot fire
  before its window opens.
- output phase (its own window): a constant ramp current of slope 1 is added, so
  ``V_i(tau) = V_i + tau``; the neuron fires once, when ``V_i(tau)`` reaches its threshold
  ``theta_i`` (1 unless scaled per neuron), at ``tau_i = theta_i - V_i`` (0 if ``V_i >= theta_i``).
  Neurons that have not fired by ``stop`` (default ``t_max``, ``tau = 1``) stay silent.

With ``theta = 1`` the value carried by the spike is ``1 - tau_i = clip(V_i, 0, 1)``: the ReLU of
the charge, clipped at 1. That is the exact mapping.

At finite resolution (``steps = 2**time_bits`` per window) the same neuron runs in discrete time:
input spikes come at integer steps, and in step ``m`` of its window the ramp adds ``1/steps`` to
the membrane, which is then compared with ``theta + 1/(2 steps)``; half a step above ``theta`` so
that spike times are rounded to the nearest step rather than truncated. The first step ``m`` that
fires is ``ceil(steps * (theta - V) - 1/2)``.
"""
from __future__ import annotations

import torch

Number = float | torch.Tensor


def values_from_times(tau: torch.Tensor) -> torch.Tensor:
    """What a spike at local time ``tau`` carries: ``(1 - tau)_+`` (0 for no spike, ``tau >= 1`` or ``inf``)."""
    return (1.0 - tau).clamp(min=0.0)


def fired(tau: torch.Tensor) -> torch.Tensor:
    """Boolean mask of neurons that spiked (``tau < 1``)."""
    return tau < 1.0


def fire_analytic(charge: torch.Tensor, threshold: Number = 1.0, stop: Number = 1.0) -> torch.Tensor:
    """Continuous-time spike times of neurons holding ``charge`` when their window opens.

    ``tau = max(threshold - charge, 0)``; neurons with ``tau >= stop`` are silent (returned as 1).
    ``threshold`` and ``stop`` are numbers or tensors broadcastable to ``charge`` (per-neuron
    thresholds, per-sample stop times). Differentiable: ``d tau / d charge = -1`` where the neuron
    fires inside the window, 0 where it saturates at ``tau = 0`` or is silent.
    """
    tau = (threshold - charge).clamp(min=0.0)
    one = torch.ones((), dtype=tau.dtype, device=tau.device)
    return torch.where(tau < stop, tau, one)


def fire_stepped(charge: torch.Tensor, steps: int, threshold: Number = 1.0, stop: Number = 1.0) -> torch.Tensor:
    """Spike times (``step / steps``) of the same neurons simulated with ``steps`` steps per window.

    The step is ``m = max(ceil(steps * (threshold - charge) - 1/2), 0)``, which is exactly what
    :func:`ramp_trace` finds by stepping; neurons with ``m >= stop * steps`` are silent (1).
    The gradient is that of the continuous relation (straight-through for the rounding to steps).
    """
    k = float(steps)
    cont = (threshold - charge).clamp(min=0.0)
    step = torch.ceil(k * (threshold - charge) - 0.5).clamp(min=0.0)
    one = torch.ones((), dtype=cont.dtype, device=cont.device)
    tau = torch.where(step < k * stop, step / k, one)
    cont = torch.minimum(cont, one)
    return cont + (tau - cont).detach()


def ramp_steps(
    charge: torch.Tensor, steps: int, threshold: Number = 1.0, stop: Number = 1.0, keep_trains: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Step the output phase: ``(tau, spike counts, spike trains [steps, ...] or None)`` for ``charge [...]``.

    In step ``m`` the ramp has brought the membrane to ``charge + (m + 1) / steps``; a neuron spikes
    at the first step where it reaches ``threshold + 1 / (2 steps)`` and ``m < stop * steps``, and
    is switched off after its spike (the comparator latches).
    """
    k = int(steps)
    level = torch.as_tensor(threshold, dtype=charge.dtype, device=charge.device) + 0.5 / k
    last = torch.as_tensor(stop, dtype=charge.dtype, device=charge.device) * k
    v = charge.clone()
    done = torch.zeros(torch.broadcast_shapes(charge.shape, level.shape, last.shape), dtype=torch.bool,
                       device=charge.device)
    counts = torch.zeros(done.shape, dtype=charge.dtype, device=charge.device)
    first = torch.full(done.shape, float(k), dtype=charge.dtype, device=charge.device)
    trains = []
    for m in range(k):
        v += 1.0 / k
        spike = (v >= level) & ~done & (m < last)
        done |= spike
        counts += spike
        first = torch.where(spike, torch.full_like(first, float(m)), first)
        if keep_trains:
            trains.append(spike.to(charge.dtype))
    tau = first / k  # silent neurons: steps / steps = 1
    return tau, counts, (torch.stack(trains) if keep_trains else None)


def ramp_trace(
    charge: torch.Tensor, steps: int, threshold: Number = 1.0, stop: Number = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The output phase as ``(spike trains [steps, ...], membrane [steps, ...])``, for inspection and tests."""
    _, _, trains = ramp_steps(charge, steps, threshold, stop, keep_trains=True)
    ramp = torch.arange(1, int(steps) + 1, dtype=charge.dtype, device=charge.device) / int(steps)
    return trains, charge.unsqueeze(0) + ramp.view(-1, *([1] * charge.dim()))


def times_from_trains(spikes: torch.Tensor) -> torch.Tensor:
    """Local first-spike times ``step / steps`` of spike trains ``[steps, ...]`` (1 where silent)."""
    k = spikes.shape[0]
    any_spike = spikes.amax(0) > 0
    first = torch.argmax((spikes > 0).to(torch.int8), dim=0).to(spikes.dtype)
    return torch.where(any_spike, first / k, torch.ones_like(first))


def steps_from_times(tau: torch.Tensor, steps: int) -> torch.Tensor:
    """Integer step of each spike (``steps`` for silent neurons); ``tau`` must lie on the step grid."""
    return torch.round(tau.clamp(max=1.0) * steps)
