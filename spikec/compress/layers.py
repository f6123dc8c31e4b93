"""Finding the layers a compression touches, and the spiking layer each one drives.

Synaptic layers are ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` modules and the weighted synapses
of TTFS networks (modules with a ``spec`` of kind linear/conv and a weight of two or more
dimensions, whose weights their owning layer reads directly), in ``model.named_modules()`` order:
the order they are built in, which for the networks here is the order data flows.
"""
from __future__ import annotations

import torch
from torch import nn

from spikec.compress.config import LayerSelection
from spikec.errors import UsageError
from spikec.module import SpikingModule

SYNAPTIC = (nn.Conv1d, nn.Conv2d, nn.Linear)
# Layers that change the scale of a synaptic layer's output before it reaches a neuron.
_RESCALING = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
_SYNAPSE_KINDS = ("linear", "conv1d", "conv2d")
_OWNED = ".synapses."


def is_owned_synapse(m: nn.Module) -> bool:
    """A TTFS-style synapse: weights read by its owning layer rather than by its own forward."""
    spec = getattr(m, "spec", None)
    w = m._parameters.get("weight_fp", m._parameters.get("weight"))
    return getattr(spec, "kind", None) in _SYNAPSE_KINDS and w is not None and w.dim() >= 2


def is_synaptic(m: nn.Module) -> bool:
    return isinstance(m, SYNAPTIC) or is_owned_synapse(m)


def synaptic_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every synaptic layer of ``model`` by qualified name, in module order."""
    return {name: m for name, m in model.named_modules() if is_synaptic(m)}


def owner_name(name: str) -> str | None:
    """The module that runs an owned synapse ``<owner>.synapses.<i>``."""
    return name.rsplit(_OWNED, 1)[0] if _OWNED in name else None


def forward_module(model: nn.Module, name: str) -> nn.Module:
    """The module whose forward pass reads layer ``name``'s weight (itself, or a synapse's owner)."""
    modules = dict(model.named_modules())
    m = modules[name]
    if is_owned_synapse(m):
        owner = owner_name(name)
        if owner is None or owner not in modules:
            raise ValueError(f"synapse {name!r} has no owning layer")
        return modules[owner]
    return m


def select_layers(model: nn.Module, selection: LayerSelection) -> dict[str, nn.Module]:
    """The synaptic layers ``selection`` keeps; raises a one-line error naming an unknown excluded layer."""
    layers = synaptic_layers(model)
    if not layers:
        raise UsageError(f"{type(model).__name__} has no Conv or Linear layer to compress")
    unknown = [n for n in selection.exclude if n not in layers]
    if unknown:
        raise UsageError(f"no Conv/Linear layer named {unknown[0]!r}; layers: {', '.join(layers)}")
    names = list(layers)
    drop = set(selection.exclude)
    if selection.skip_first:
        drop.add(names[0])
    if selection.skip_last:
        drop.add(names[-1])
    chosen = {n: layers[n] for n in names if n not in drop}
    if not chosen:
        raise UsageError("the layer selection leaves no layer to compress")
    return chosen


def driven_neurons(model: nn.Module) -> dict[str, SpikingModule | None]:
    """For each synaptic layer, the spiking layer its output reaches directly: its owner for a
    synapse, else the next spiking module (None if another synaptic or a normalisation layer
    comes first, or if nothing spikes after it)."""
    modules = dict(model.named_modules())
    out: dict[str, SpikingModule | None] = {}
    pending: str | None = None
    for name, m in modules.items():
        if is_owned_synapse(m):
            owner = modules.get(owner_name(name) or "")
            out[name] = owner if isinstance(owner, SpikingModule) else None
        elif isinstance(m, SYNAPTIC):
            if pending is not None:
                out[pending] = None
            pending = name
        elif pending is not None and isinstance(m, SpikingModule):
            out[pending] = m
            pending = None
        elif pending is not None and isinstance(m, _RESCALING):
            out[pending] = None
            pending = None
    if pending is not None:
        out[pending] = None
    return out


def following_norms(model: nn.Module) -> dict[str, nn.Module]:
    """For each Conv/Linear layer directly followed (in module order, the next leaf module) by an
    affine batch norm over its output channels, that norm."""
    out: dict[str, nn.Module] = {}
    pending: tuple[str, nn.Module] | None = None
    for name, m in model.named_modules():
        if next(m.children(), None) is not None:
            continue  # containers come before their children
        if isinstance(m, SYNAPTIC):
            pending = (name, m)
            continue
        if pending is not None and isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine \
                and m.num_features == pending[1].weight.shape[0]:
            out[pending[0]] = m
        pending = None
    return out


def neuron_threshold(neuron: nn.Module | None):
    """A spiking layer's firing threshold (a tensor or number), or None if it has none we know of."""
    if neuron is None:
        return None
    thr = getattr(neuron, "threshold", None)
    if thr is not None:
        return thr
    if hasattr(neuron, "threshold_scale"):  # TTFS layers: threshold 1, optionally scaled per neuron
        return 1.0 if neuron.threshold_scale is None else neuron.threshold_scale
    return None


def threshold_unit(neuron, out_channels: int, per_channel: bool) -> torch.Tensor | None:
    """The threshold a layer's scale should divide: one value, or one per channel (else None)."""
    thr = neuron_threshold(neuron)
    if not torch.is_tensor(thr):
        return None if thr is None else torch.tensor([float(thr)])
    thr = thr.detach().float().flatten()
    if thr.numel() == 1:
        return thr.clone()
    if per_channel and thr.numel() == out_channels:
        return thr.clone()
    return None


def intermediate_spiking_layers(model: nn.Module) -> list[str]:
    """Spiking layers fed by a synaptic layer (before them, or inside them) that feed another one
    after them: the hidden layers, without input encoders or output layers."""
    named = list(model.named_modules())
    syn = [(i, n) for i, (n, m) in enumerate(named) if is_synaptic(m)]
    out = []
    for i, (name, m) in enumerate(named):
        if not isinstance(m, SpikingModule):
            continue
        inside = [j for j, n in syn if n.startswith(name + ".")]
        fed = inside or [j for j, _ in syn if j < i]
        after = [j for j, n in syn if j > i and not n.startswith(name + ".")]
        if fed and after:
            out.append(name)
    return out
