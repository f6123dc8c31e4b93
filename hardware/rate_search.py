"""A rate SNN's accuracy and per-sample spikes at several step counts, from one run that can stop early.

The equal-accuracy search asks for the fewest ``T`` (of 1, 2, 4, ...) at which the rate SNN reaches
a target accuracy over *all* samples. Running each ``T`` afresh costs ``sum(T)`` steps per sample, and
an unchunked run holds ``[T * B, ...]`` activations, so memory grew with ``T`` (at ``T = 256`` a
CIFAR VGG batch alone took gigabytes). Here every batch keeps its own neuron state (a copy of the
network's modules that shares its weights), time advances for all batches together in chunks of at
most ``chunk`` steps, and the accuracy over every sample is read at each candidate ``T``: the search
stops at the first ``T`` that reaches the target, having simulated just that many steps, and memory
is the neuron state of all samples plus one chunk of one batch.

The first ``t`` steps of a ``T``-step run are the ``t``-step run for direct and rate input
(:attr:`SpikingClassifier.prefix_consistent`; rate spikes come from a generator seeded per batch),
so each ``T`` read here equals a fresh ``T``-step run (tests/hardware/test_rate_search.py).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from spikec.errors import SpikecError
from spikec.evaluation import segment_ends
from spikec.hardware.memory import release_freed_memory
from spikec.module import reset
from spikec.record import record

DEFAULT_CHUNK = 8
# samples x steps of one forward call: the rate search ran fastest at about 256 on a CIFAR ResNet-20
# (256 images to T = 32 on 2 threads: 26.8 s at 256 samples x 8 steps, 11.8-14.3 s at 32 x 8, 11.9 s at
# 8 x 32; benchmarks/results/pe_simulator_speed.json)
IMAGE_STEPS = 256


@dataclass(frozen=True)
class StepCounts:
    """What the rate SNN did in its first ``timesteps`` steps."""

    timesteps: int
    accuracy: float
    layer_spikes: tuple  # per spiking layer, in module order: [samples] float64 spikes in the first T steps
    layer_neurons: tuple  # per spiking layer: neurons per sample

    @property
    def spikes_per_inference(self) -> float:
        n = self.layer_spikes[0].numel() if self.layer_spikes else 0
        return float(sum(s.sum() for s in self.layer_spikes)) / max(n, 1)


def _state_copy(snn):
    """A copy of ``snn``'s modules (own neuron state) that shares its parameters and buffers."""
    memo = {id(t): t for t in list(snn.parameters()) + list(snn.buffers())}
    return copy.deepcopy(snn, memo)


def rate_step_counts(snn, x: torch.Tensor, y: torch.Tensor, timesteps, target: float | None = None,
                     batch_size: int | None = None, chunk: int | None = DEFAULT_CHUNK, seed: int = 0,
                     progress: bool = False, stop: Callable[[StepCounts], bool] | None = None) -> list[StepCounts]:
    """:class:`StepCounts` at each of ``timesteps`` (ascending), stopping after the first whose accuracy
    reaches ``target`` or for which ``stop(counts)`` is true.

    ``snn``: a :class:`~spikec.snn.SpikingClassifier` with direct or rate input; it is not changed.
    ``batch_size``: samples per batch (default :data:`IMAGE_STEPS` // ``chunk``). Rate input of batch
    ``b`` is drawn from a generator seeded with ``seed + b``, so results depend on ``batch_size`` for
    rate input only. ``progress``: a bar over the simulated steps (at most ``max(timesteps)``; the
    search may stop earlier).
    """
    if not getattr(snn, "prefix_consistent", False):
        raise SpikecError(f"rate baseline: {getattr(snn, 'encoding', type(snn).__name__)} input is not a prefix "
                          "of a longer run; the step search needs direct or rate input")
    steps = sorted({int(t) for t in timesteps})
    if not steps or steps[0] < 1:
        raise SpikecError(f"rate baseline: timesteps must be positive, got {list(timesteps)}")
    if x.shape[0] == 0:
        raise SpikecError("rate baseline: no samples to evaluate")
    total = steps[-1]
    if batch_size is None:
        batch_size = max(1, IMAGE_STEPS // max(1, int(chunk or total)))
    bounds = [(a, min(a + int(batch_size), x.shape[0])) for a in range(0, x.shape[0], int(batch_size))]
    results: list[StepCounts] = []
    with contextlib.ExitStack() as stack, torch.no_grad():
        runs = []
        for b, (a, e) in enumerate(bounds):
            net = reset(_state_copy(snn).eval())
            rec = stack.enter_context(record(net, first_spike_times=False))
            gen = torch.Generator(device=x.device).manual_seed(int(seed) + b) if net.encoding == "rate" else None
            runs.append({"net": net, "rec": rec, "gen": gen, "x": x[a:e], "y": y[a:e], "outs": []})
        start = 0
        bar = tqdm(total=total, desc="rate search", unit="step", disable=not progress, leave=False)
        stack.callback(bar.close)
        for end in segment_ends(steps, chunk):
            for r in runs:
                net = r["net"]
                r["outs"].append(net.net(net.encode_steps(r["x"], start, end - start, timesteps=total, generator=r["gen"])))
                release_freed_memory()  # chunks of changing sizes otherwise grow the heap by gigabytes
            bar.update(end - start)
            start = end
            if end not in steps:
                continue
            correct = 0
            for r in runs:
                r["outs"] = [torch.cat(r["outs"])] if len(r["outs"]) > 1 else r["outs"]
                correct += int((r["net"].decode(r["outs"][0]).argmax(1) == r["y"]).sum())
            names = list(runs[0]["rec"].layers)
            spikes = tuple(torch.cat([_sample_spikes(r["rec"].layers[n]) for r in runs]) for n in names)
            neurons = tuple(runs[0]["rec"].layers[n].num_neurons for n in names)
            results.append(StepCounts(end, correct / x.shape[0], spikes, neurons))
            bar.set_postfix(T=end, acc=f"{results[-1].accuracy:.4f}")
            if target is not None and results[-1].accuracy >= target - 1e-12:
                break
            if stop is not None and stop(results[-1]):
                break
    return results


def _sample_spikes(layer) -> torch.Tensor:
    """``[B]`` spikes of one batch's layer over all its calls so far (each call is one time segment)."""
    parts = layer.spikes_per_sample
    if len(parts) > 1:  # keep the list short: one running total
        parts[:] = [torch.stack(parts).sum(0)]
    return parts[0].clone()
