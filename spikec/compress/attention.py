"""Attention maps and the attention-transfer loss (Zagoruyko & Komodakis 2017, as used by Spike-Thrift).

The attention map of activations ``f [B, C, ...]`` is ``A(f) = normalise(flatten(mean_c |f|^p))``:
the mean over channels of the p-th power of the absolute activation, flattened per sample and
divided by its L2 norm. For a fully connected layer ``f [B, N]`` there is no channel axis and each
neuron is one position. For a spiking layer the activation is its output spikes averaged over
time (its firing rate map) by default; see :class:`~spikec.compress.config.AttentionConfig`.

The loss that pulls a compressed student towards its uncompressed teacher is
``beta * sum_l mean_b ||A_s(l) - A_t(l)||_2^2`` over intermediate layers ``l``.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from spikec.compress.layers import intermediate_spiking_layers, is_synaptic
from spikec.module import SpikingModule

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Hardtanh, nn.Sigmoid, nn.Tanh)


def attention_map(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``[B, positions]``: mean over channels of ``|f|^p``, flattened and L2-normalised per sample."""
    if f.dim() < 2:
        raise ValueError(f"attention_map expects [B, C, ...] or [B, N], got shape {tuple(f.shape)}")
    a = f.abs().pow(p)
    a = a.mean(1).flatten(1) if f.dim() > 2 else a
    return F.normalize(a, p=2, dim=1, eps=1e-12)


def attention_loss(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], beta: float = 1.0,
                   p: float = 2.0) -> torch.Tensor:
    """``beta * sum_l mean_b ||A(student_l) - A(teacher_l)||^2`` over the layers both dicts hold."""
    names = [n for n in student if n in teacher]
    if not names:
        raise ValueError("no common layer between student and teacher activations")
    total = 0.0
    for n in names:
        a_s = attention_map(student[n], p)
        a_t = attention_map(teacher[n].detach().to(a_s.dtype), p)
        if a_s.shape != a_t.shape:
            raise ValueError(f"layer {n!r}: student attention {tuple(a_s.shape)} vs teacher {tuple(a_t.shape)}")
        total = total + (a_s - a_t).pow(2).sum(1).mean()
    return beta * total


def is_activation(m: nn.Module) -> bool:
    if isinstance(m, _ACTIVATIONS):
        return True
    return type(m).__name__ == "QCFS"


def default_attention_layers(model: nn.Module) -> list[str]:
    """The hidden spiking layers (or, in an ANN, the activations before the last Conv/Linear)."""
    hidden = intermediate_spiking_layers(model)
    if hidden:
        return hidden
    named = list(model.named_modules())
    last_syn = max((i for i, (_, m) in enumerate(named) if is_synaptic(m)), default=-1)
    return [n for i, (n, m) in enumerate(named) if i < last_syn and is_activation(m)]


def spiking_activation(module: nn.Module, inputs, output: torch.Tensor, source: str) -> torch.Tensor:
    """``[B, ...]`` activation of a spiking layer for its attention map.

    Time-stepped layers give ``[T, B, ...]`` spikes (see :func:`time_summary`). A TTFS layer (one
    that has a ``window``) gives spike times ``tau`` with ``1`` = silent; its activation is the
    value its spikes carry, ``(1 - tau)_+`` (the converted ReLU's output over its scale), whatever
    ``source`` says.
    """
    if hasattr(module, "window"):
        return (1.0 - output).clamp(min=0.0)
    if source == "current":
        return time_summary(inputs[0], "rate")
    return time_summary(output, source)


def time_summary(spikes_or_current: torch.Tensor, source: str) -> torch.Tensor:
    """``[T, B, ...] -> [B, ...]``: mean over time, or earliness-weighted spike sum for "latency"."""
    if source == "latency":
        T = spikes_or_current.shape[0]
        w = (T - torch.arange(T, device=spikes_or_current.device, dtype=spikes_or_current.dtype)) / T
        return (spikes_or_current * w.view(-1, *([1] * (spikes_or_current.dim() - 1)))).sum(0)
    return spikes_or_current.mean(0)


@contextlib.contextmanager
def tap(model: nn.Module, layers: list[str], source: str = "rate"):
    """Collect the activations of ``layers`` during forward passes in the block: yields a dict
    ``{name: [B, ...]}`` (the last call's values, with their autograd history)."""
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"no layer named {missing[0]!r} in {type(model).__name__}")
    out: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        m = modules[name]
        if isinstance(m, SpikingModule):
            def hook(mod, inputs, output, name=name):
                out[name] = spiking_activation(mod, inputs, output, source)
        else:
            def hook(mod, inputs, output, name=name):
                out[name] = output
        handles.append(m.register_forward_hook(hook))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()
