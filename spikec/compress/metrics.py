"""Accuracy, spikes, synaptic operations and the 45 nm compute-energy estimate of one network.

Spikes are counted by :func:`spikec.record` (the project's one spike counter). Synaptic
operations are counted where they happen, at the input of every Conv/Linear layer: an input event
(a non-zero input value at one time step) costs one operation per non-zero weight it reaches, so
``ops = sum over events of non-zero fan-out``, computed exactly (borders and strides included) by
running the layer on the event indicator with the weight's non-zero indicator. Between spiking
layers the events are spikes and each operation is an accumulate (AC); after average pooling an
event is a non-zero pooled value, still one accumulate of a pre-scaled weight. The first layer of
a directly coded network sees analog values: its operations are multiply-accumulates (MAC).

Energy (Horowitz, ISSCC 2014, 45 nm, 32-bit): ``E_AC = 0.9 pJ``, ``E_MAC = 4.6 pJ``. The ANN
reference does every MAC of the dense network once per inference.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from spikec.compress.layers import is_owned_synapse, owner_name, synaptic_layers
from spikec.record import record

E_AC_PJ = 0.9
E_MAC_PJ = 4.6


@dataclass
class LayerOps:
    ac: float = 0.0
    mac: float = 0.0
    dense_macs_per_inference: float = 0.0
    binary_input: bool = True


@dataclass
class Activity:
    """Per-inference averages over the evaluated samples."""

    samples: int
    accuracy: float | None
    spikes_per_inference: float
    sops_per_inference: float
    snn_macs_per_inference: float
    ann_macs_per_inference: float
    layers: dict = field(default_factory=dict)
    spiking_layers: dict = field(default_factory=dict)

    @property
    def snn_energy_pj(self) -> float:
        return self.sops_per_inference * E_AC_PJ + self.snn_macs_per_inference * E_MAC_PJ

    @property
    def ann_energy_pj(self) -> float:
        return self.ann_macs_per_inference * E_MAC_PJ

    @property
    def energy_gain(self) -> float:
        """How many times less compute energy the SNN needs than the dense ANN."""
        return self.ann_energy_pj / max(self.snn_energy_pj, 1e-12)

    def summary(self) -> dict:
        return {
            "samples": self.samples, "accuracy": self.accuracy,
            "spikes_per_inference": self.spikes_per_inference, "sops_per_inference": self.sops_per_inference,
            "snn_macs_per_inference": self.snn_macs_per_inference, "ann_macs_per_inference": self.ann_macs_per_inference,
            "snn_energy_pj": self.snn_energy_pj, "ann_energy_pj": self.ann_energy_pj, "energy_gain": self.energy_gain,
            "layers": self.layers, "spiking_layers": self.spiking_layers,
        }


def layer_ops(module: nn.Module, x: torch.Tensor) -> float:
    """Operations of one call: events of ``x`` times the non-zero fan-out they reach."""
    events = (x.detach() != 0).to(torch.float32)
    connected = (module.weight.detach() != 0).to(torch.float32)
    if isinstance(module, nn.Linear):
        return float((events.reshape(-1, events.shape[-1]) @ connected.sum(0)).sum())
    conv = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
    if module.padding_mode != "zeros":
        raise ValueError(f"op counting supports zero padding only, got {module.padding_mode!r}")
    return float(conv(events, connected, None, module.stride, module.padding, module.dilation, module.groups).sum())


def dense_macs(module: nn.Module, out: torch.Tensor) -> float:
    """MACs of the dense layer for one item of the batch ``out`` came from."""
    per_output = module.weight[0].numel()
    return float(out[0].numel() * per_output)


def synapse_ops(synapse: nn.Module, tau: torch.Tensor) -> tuple[float, float]:
    """``(operations, dense MACs per item)`` of a TTFS synapse fed spike times ``tau`` (1 = silent).

    An event is a source spike (after the synapse's parameter-free input ops, a non-zero value).
    """
    from dataclasses import replace

    from spikec.conversion.ttfs_synapse import apply_linear_op, weighted_op

    spec = synapse.spec
    x = (tau.detach() < 1).to(torch.float32)
    for op in spec.pre:
        x = apply_linear_op(x, op)
    x = (x != 0).to(torch.float32)
    connected = (synapse.weight.detach() != 0).to(torch.float32)
    y = weighted_op(x, connected, None, replace(spec, pre=(), post=()))
    return float(y.sum()), float(y[0].numel() * synapse.weight[0].numel())


@contextlib.contextmanager
def count_ops(model: nn.Module):
    """Count operations of every synaptic layer while the block runs; yields ``{name: LayerOps}``."""
    layers = synaptic_layers(model)
    first = next(iter(layers), None)
    ops = {n: LayerOps() for n in layers}
    handles = []
    owned: dict[str, list[tuple[int, str]]] = {}
    for name, m in layers.items():
        if is_owned_synapse(m):
            owner = owner_name(name)
            owned.setdefault(owner, []).append((int(name.rsplit(".", 1)[1]), name))
            continue

        def hook(mod, inputs, output, name=name):
            x = inputs[0]
            rec = ops[name]
            binary = bool(((x == 0) | (x == 1)).all())
            n = layer_ops(mod, x)
            if binary or name != first:
                rec.ac += n
            else:
                rec.mac += n
            rec.binary_input = rec.binary_input and binary
            rec.dense_macs_per_inference = dense_macs(mod, output)

        handles.append(m.register_forward_hook(hook))
    modules = dict(model.named_modules())
    for owner, members in owned.items():
        def owner_hook(mod, inputs, members=members):
            sources = inputs[0]
            for index, name in members:
                n, dense = synapse_ops(mod.synapses[index], sources[index])
                ops[name].ac += n
                ops[name].dense_macs_per_inference = dense

        handles.append(modules[owner].register_forward_pre_hook(owner_hook))
    try:
        yield ops
    finally:
        for h in handles:
            h.remove()


def activity(model: nn.Module, data, batch_size: int = 256, seed: int = 0, max_samples: int | None = None) -> Activity:
    """Accuracy, spikes, operations and energy of ``model`` on ``data`` (inputs, labels), in eval mode.

    The random state is forked and seeded, so rate-coded inputs are the same draw for every model
    measured with the same ``seed``.
    """
    from spikec.training import batches

    was_training = model.training
    model.eval()
    correct, seen = 0, 0
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), record(model, first_spike_times=False) as rec, \
                count_ops(model) as ops:
            torch.manual_seed(seed)
            for x, y in batches(data, batch_size):
                if max_samples is not None and seen >= max_samples:
                    break
                scores = model(x)
                correct += int((scores.argmax(1) == y).sum())
                seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("no samples to measure")
    ac = sum(o.ac for o in ops.values()) / seen
    mac = sum(o.mac for o in ops.values()) / seen
    ann = sum(o.dense_macs_per_inference for o in ops.values())
    layers = {n: {"sops_per_inference": o.ac / seen, "macs_per_inference": o.mac / seen,
                  "dense_macs": o.dense_macs_per_inference, "binary_input": o.binary_input} for n, o in ops.items()}
    spiking = {n: r.spikes_per_inference for n, r in rec.layers.items()}
    return Activity(seen, correct / seen, rec.spikes_per_inference if rec.layers else 0.0, ac, mac, ann, layers, spiking)


def layer_density(model: nn.Module) -> dict[str, float]:
    """Non-zero fraction of each synaptic layer's weight."""
    return {n: float((m.weight.detach() != 0).float().mean()) for n, m in synaptic_layers(model).items()}
