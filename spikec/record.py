"""``spikec.record(model)``: the one way to observe spikes.

Forward hooks on every :class:`~spikec.module.SpikingModule` collect, per layer and accumulated
over all forward passes inside the ``with`` block: spikes per sample, neurons per sample,
per-neuron first-spike times and the largest spike count of any neuron in any sample.
Compression metrics and the energy model read spikes only through this.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from spikec.module import SpikingModule


@dataclass
class LayerRecord:
    """What one spiking layer did over the recorded samples."""

    name: str
    num_neurons: int = 0
    samples: int = 0
    spikes: float = 0.0
    max_spikes_per_neuron: float = 0.0
    spikes_per_sample: list = field(default_factory=list)  # tensors [B]
    first_times: list = field(default_factory=list)  # tensors [B, N], inf where silent
    keep_times: bool = True
    fired: int = 0  # (sample, neuron) pairs that fired at least once

    def add(self, counts: torch.Tensor, first: torch.Tensor | None) -> None:
        B, N = counts.shape
        self.num_neurons = N
        self.samples += B
        per_sample = counts.sum(1, dtype=torch.float64).cpu()  # exact integers however many spikes
        self.spikes += float(per_sample.sum())
        self.spikes_per_sample.append(per_sample)
        if counts.numel():
            self.max_spikes_per_neuron = max(self.max_spikes_per_neuron, float(counts.max()))
            self.fired += int((counts > 0).sum())
        if self.keep_times:
            self.first_times.append(first.float().cpu())

    @property
    def spikes_per_inference(self) -> float:
        return self.spikes / max(self.samples, 1)

    @property
    def spikes_per_neuron(self) -> float:
        """Mean spikes per neuron per inference."""
        return self.spikes_per_inference / max(self.num_neurons, 1)

    @property
    def first_spike_times(self) -> torch.Tensor:
        """``[samples, N]`` first-spike step of each neuron (``inf`` if it never fired)."""
        if not self.first_times:
            return torch.empty(0, self.num_neurons)
        return torch.cat(self.first_times)

    @property
    def sample_spikes(self) -> torch.Tensor:
        """``[samples]`` spikes of this layer in each sample."""
        return torch.cat(self.spikes_per_sample) if self.spikes_per_sample else torch.empty(0)

    @property
    def fired_fraction(self) -> float:
        """Fraction of (sample, neuron) pairs that fired at least once (kept without the spike times)."""
        pairs = self.samples * self.num_neurons
        return self.fired / pairs if pairs else 0.0


class Recording:
    """Per-layer records, in module order, with model totals."""

    def __init__(self):
        self.layers: dict[str, LayerRecord] = {}

    def __getitem__(self, name: str) -> LayerRecord:
        return self.layers[name]

    @property
    def samples(self) -> int:
        return max((r.samples for r in self.layers.values()), default=0)

    @property
    def total_spikes(self) -> float:
        """All spikes of all layers over all recorded samples."""
        return sum(r.spikes for r in self.layers.values())

    @property
    def spikes_per_inference(self) -> float:
        return self.total_spikes / max(self.samples, 1)

    @property
    def num_neurons(self) -> int:
        """Spiking neurons per sample, over all layers."""
        return sum(r.num_neurons for r in self.layers.values())

    @property
    def spikes_per_neuron(self) -> float:
        """Mean spikes per neuron per inference."""
        return self.spikes_per_inference / max(self.num_neurons, 1)

    @property
    def max_spikes_per_neuron(self) -> float:
        return max((r.max_spikes_per_neuron for r in self.layers.values()), default=0.0)

    def summary(self) -> dict:
        """Plain numbers, for JSON."""
        return {
            "samples": self.samples,
            "total_spikes": self.total_spikes,
            "num_neurons": self.num_neurons,
            "spikes_per_inference": self.spikes_per_inference,
            "spikes_per_neuron": self.spikes_per_neuron,
            "max_spikes_per_neuron": self.max_spikes_per_neuron,
            "layers": {
                n: {
                    "num_neurons": r.num_neurons,
                    "spikes_per_inference": r.spikes_per_inference,
                    "spikes_per_neuron": r.spikes_per_neuron,
                    "max_spikes_per_neuron": r.max_spikes_per_neuron,
                    "fired_fraction": r.fired_fraction,
                }
                for n, r in self.layers.items()
            },
        }


@contextlib.contextmanager
def record(model: nn.Module, first_spike_times: bool = True):
    """Observe every spiking layer of ``model`` while the block runs; yields a :class:`Recording`.

    ``first_spike_times=False`` keeps only counts (less memory on large evaluations). Every call of
    a layer counts as its own samples; a run fed in time chunks is therefore read through the spike
    totals only (``LayerRecord.spikes`` after each chunk), as :func:`spikec.evaluation.evaluate_steps` does.
    """
    rec = Recording()
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, SpikingModule):
            layer = rec.layers.setdefault(name or type(m).__name__, LayerRecord(name or type(m).__name__, keep_times=first_spike_times))

            def hook(mod, inputs, output, layer=layer):
                layer.add(*_stats(mod, output, layer.keep_times))

            handles.append(m.register_forward_hook(hook))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


def _stats(mod: SpikingModule, output: torch.Tensor, keep_times: bool):
    """``(counts, first_times)`` of one call; without times, the default statistics skip computing them."""
    if not keep_times and type(mod).spike_stats is SpikingModule.spike_stats:
        s = output.detach()
        return s.reshape(s.shape[0], s.shape[1], -1).sum(0), None
    stats = mod.spike_stats(output)
    return stats.counts, stats.first_times
