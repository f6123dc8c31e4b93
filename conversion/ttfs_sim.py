"""Pure functions that run one TTFS layer: spike times out from spike times in, weights passed in.

Two simulators, one contract (``tau`` local spike times in ``[0, 1]``, 1 = silent):

- ``"analytic"``: event-driven and closed form. The membrane is linear in the input spike times,
  so the charge at the start of the layer's window is one Linear/Conv over the input values and
  the spike time follows from it (:func:`~spikec.conversion.ttfs_neuron.fire_analytic`; rounded to
  steps with :func:`~spikec.conversion.ttfs_neuron.fire_stepped` when ``time_bits`` is given).
- ``"stepped"``: discrete time, ``2**time_bits`` steps per window. Input currents switch on at
  their spike steps, the membrane is integrated step by step, the ramp runs step by step and each
  neuron's comparator latches its one spike (:func:`simulate_layer_steps`). Same numbers as the
  analytic simulator at the same ``time_bits`` (tested), ``steps`` times the work.

Each input is a tuple ``(tau, weight, bias, spec)``; a layer with a skip connection has two.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from spikec.conversion.ttfs_neuron import (
    Number, fire_analytic, fire_stepped, ramp_steps, steps_from_times,
)
from spikec.conversion.ttfs_synapse import synapse_charge, synapse_currents

SIMULATORS = ("analytic", "stepped")

SynapseInput = tuple  # (tau [B, ...], weight, bias | None, SynapseSpec)

# Largest tensor (elements) the stepped simulator builds at once; it splits the batch to stay below.
STEPPED_CHUNK_ELEMENTS = 1 << 24


def check_simulation(simulator: str, time_bits: int | None) -> None:
    """Raise ``ValueError`` for an unknown simulator or a bad ``time_bits``."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, got {simulator!r}")
    if time_bits is not None and not (1 <= int(time_bits) <= 24):
        raise ValueError(f"time_bits must be an integer in 1..24 or None, got {time_bits}")
    if simulator == "stepped" and time_bits is None:
        raise ValueError("the stepped simulator needs time_bits (2**time_bits steps per window)")


def layer_charge(inputs: Sequence[SynapseInput]) -> torch.Tensor:
    """Membrane charge at the start of the layer's window: the sum of its synapses' charges."""
    charge = None
    for tau, weight, bias, spec in inputs:
        q = synapse_charge(tau, weight, bias, spec)
        charge = q if charge is None else charge + q
    return charge


def layer_charge_stepped(inputs: Sequence[SynapseInput], steps: int) -> torch.Tensor:
    """The same charge, integrated step by step over the source windows (sum of the per-step currents)."""
    charge = None
    for tau, weight, bias, spec in inputs:
        q = synapse_currents(steps_from_times(tau.detach(), steps), steps, weight.detach(),
                             None if bias is None else bias.detach(), spec).sum(0)
        charge = q if charge is None else charge + q
    return charge


def layer_spike_times(
    inputs: Sequence[SynapseInput],
    *,
    time_bits: int | None = None,
    simulator: str = "analytic",
    threshold_scale: Number | None = None,
    stop: Number | None = None,
) -> torch.Tensor:
    """Output spike times ``[B, ...]`` of one TTFS layer from its inputs' spike times.

    ``threshold_scale`` multiplies the threshold (1) per neuron (broadcastable to one sample's
    neurons, or to the whole ``[B, ...]``); ``stop`` is the local time (0..1, per layer or per
    sample ``[B, 1, ...]``) after which the layer stops: neurons that have not fired by then are
    silent. ``time_bits=None`` is continuous time (analytic only).
    """
    check_simulation(simulator, time_bits)
    theta = 1.0 if threshold_scale is None else threshold_scale
    end = 1.0 if stop is None else stop
    if simulator == "stepped":
        return simulate_layer_steps(inputs, 2 ** int(time_bits), theta, end)[0]
    charge = layer_charge(inputs)
    if time_bits is None:
        return fire_analytic(charge, theta, end)
    return fire_stepped(charge, 2 ** int(time_bits), theta, end)


@dataclass
class SteppedResult:
    """Spike times and what the step-by-step run saw: spikes per neuron and the charge at window start."""

    tau: torch.Tensor
    counts: torch.Tensor
    charge: torch.Tensor


def simulate_layer_steps(
    inputs: Sequence[SynapseInput], steps: int, threshold: Number = 1.0, stop: Number = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a layer in discrete time; returns ``(tau [B, ...], spike counts per neuron [B, ...])``.

    Forward values come from the step-by-step run; gradients (when enabled) flow through the
    piecewise-linear relation of the closed form, which gives the same spike times.
    """
    res = _stepped_no_grad(inputs, steps, threshold, stop)
    if not torch.is_grad_enabled() or not _needs_grad(inputs, threshold):
        return res.tau, res.counts
    relation = fire_stepped(layer_charge(inputs), steps, threshold, stop)
    return relation + (res.tau - relation).detach(), res.counts


def _needs_grad(inputs, threshold) -> bool:
    tensors = [t for tau, w, b, _ in inputs for t in (tau, w, b) if t is not None]
    if isinstance(threshold, torch.Tensor):
        tensors.append(threshold)
    return any(t.requires_grad for t in tensors)


@torch.no_grad()
def _stepped_no_grad(inputs: Sequence[SynapseInput], steps: int, threshold: Number, stop: Number) -> SteppedResult:
    batch = inputs[0][0].shape[0]
    if batch == 0:
        charge = layer_charge(inputs)
        return SteppedResult(torch.ones_like(charge), torch.zeros_like(charge), charge)
    per_sample = max(t[0][0].numel() for t in inputs)
    probe = layer_charge([(tau[:1], w, b, s) for tau, w, b, s in inputs])
    out_numel, ndim = probe[0].numel(), probe.dim()
    chunk = max(1, STEPPED_CHUNK_ELEMENTS // (steps * max(per_sample, out_numel, 1)))
    taus, counts, charges = [], [], []
    for start in range(0, batch, chunk):
        part = [(tau[start:start + chunk], w, b, s) for tau, w, b, s in inputs]
        charge = layer_charge_stepped(part, steps)
        tau, count, _ = ramp_steps(charge, steps, _slice_batch(threshold, start, chunk, ndim),
                                   _slice_batch(stop, start, chunk, ndim))
        taus.append(tau)
        counts.append(count)
        charges.append(charge)
    return SteppedResult(torch.cat(taus), torch.cat(counts), torch.cat(charges))


def _slice_batch(value: Number, start: int, chunk: int, ndim: int) -> Number:
    """Tensors with a batch dimension (as many dims as the charge ``[B, ...]``) are cut to the chunk."""
    if isinstance(value, torch.Tensor) and value.dim() == ndim and value.shape[0] > 1:
        return value[start:start + chunk]
    return value
