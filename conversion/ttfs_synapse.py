"""Synapses of a TTFS layer: how one source's spikes become charge on the layer's membranes.

A synapse is ``post(weighted(pre(values)))`` where ``values = (1 - tau)_+`` are the values the
source spikes carry, ``pre`` and ``post`` are parameter-free linear ops (average pooling,
reshapes) and ``weighted`` is a Linear, a Conv or a scalar gain (an identity skip connection).
Because every op is linear, the charge is the time integral of the linear post-synaptic
potentials, whether computed in one shot (:func:`synapse_charge`) or step by step
(:func:`synapse_charge_trace`). The spec is plain data so that checkpoints can store it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from spikec.conversion.ttfs_neuron import values_from_times

WEIGHTED_KINDS = ("linear", "conv1d", "conv2d", "gain")


@dataclass(frozen=True)
class Op:
    """A parameter-free op by name with its keyword arguments (plain data)."""

    name: str
    kwargs: tuple = ()  # ((key, value), ...)

    def to_dict(self) -> dict:
        return {"name": self.name, "kwargs": dict(self.kwargs)}

    @staticmethod
    def from_dict(d: dict) -> "Op":
        return Op(d["name"], tuple((k, _tupled(v)) for k, v in d["kwargs"].items()))


def make_op(name: str, **kwargs) -> Op:
    return Op(name, tuple((k, _tupled(v)) for k, v in kwargs.items()))


def _tupled(v):
    return tuple(_tupled(x) for x in v) if isinstance(v, (list, tuple)) else v


def apply_linear_op(x: torch.Tensor, op: Op) -> torch.Tensor:
    """Apply an average pooling, a mean over non-batch dims or a reshape (``shape`` per sample) to ``[B, ...]``."""
    kw = dict(op.kwargs)
    if op.name == "reshape":
        return x.reshape(x.shape[0], *kw["shape"])
    if op.name == "mean":
        return x.mean(dim=kw["dim"], keepdim=kw["keepdim"])
    if op.name in ("avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d"):
        return getattr(F, op.name)(x, **kw)
    raise ValueError(f"unknown linear op {op.name!r}")


def apply_time_op(tau: torch.Tensor, op: Op) -> torch.Tensor:
    """Apply a max pooling (earliest spike wins: the min of spike times) or a reshape to spike times."""
    kw = dict(op.kwargs)
    if op.name == "reshape":
        return tau.reshape(tau.shape[0], *kw["shape"])
    if op.name in ("max_pool1d", "max_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d"):
        return -getattr(F, op.name)(-tau, **kw)
    raise ValueError(f"unknown spike-time op {op.name!r}")


@dataclass(frozen=True)
class SynapseSpec:
    """The shape of a synapse: ``kind`` of weighted op, its conv arguments, and the ops around it.

    ``kind``: ``"linear"`` (weight ``[out, in]``), ``"conv1d"``/``"conv2d"`` (weight
    ``[out, in/groups, *kernel]``, with ``stride``, ``padding``, ``dilation``, ``groups``) or
    ``"gain"`` (a scalar weight: an identity connection).
    """

    kind: str
    stride: tuple = (1,)
    padding: tuple | str = (0,)
    dilation: tuple = (1,)
    groups: int = 1
    pre: tuple[Op, ...] = field(default_factory=tuple)
    post: tuple[Op, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.kind not in WEIGHTED_KINDS:
            raise ValueError(f"synapse kind must be one of {WEIGHTED_KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation), "groups": self.groups,
            "pre": [op.to_dict() for op in self.pre], "post": [op.to_dict() for op in self.post],
        }

    @staticmethod
    def from_dict(d: dict) -> "SynapseSpec":
        pad = d["padding"]
        return SynapseSpec(
            kind=d["kind"], stride=tuple(d["stride"]), padding=pad if isinstance(pad, str) else tuple(pad),
            dilation=tuple(d["dilation"]), groups=int(d["groups"]),
            pre=tuple(Op.from_dict(o) for o in d["pre"]), post=tuple(Op.from_dict(o) for o in d["post"]),
        )


def weighted_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: SynapseSpec) -> torch.Tensor:
    """``pre`` ops, the weighted op with ``weight``/``bias``, then ``post`` ops, on a ``[B, ...]`` tensor."""
    for op in spec.pre:
        x = apply_linear_op(x, op)
    if spec.kind == "linear":
        x = F.linear(x, weight, bias)
    elif spec.kind in ("conv1d", "conv2d"):
        conv = F.conv1d if spec.kind == "conv1d" else F.conv2d
        x = conv(x, weight, bias, spec.stride, spec.padding, spec.dilation, spec.groups)
    else:
        x = x * weight
        if bias is not None:
            x = x + bias
    for op in spec.post:
        x = apply_linear_op(x, op)
    return x


def synapse_charge(tau: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: SynapseSpec) -> torch.Tensor:
    """Charge a synapse puts on its target membranes over its source window, in one shot.

    ``tau`` are the source spike times ``[B, ...]`` (local, 1 or more = silent); the result is
    ``post(W * pre((1 - tau)_+)) + b`` shaped like the layer's neurons.
    """
    return weighted_op(values_from_times(tau), weight, bias, spec)


def synapse_currents(
    step_index: torch.Tensor, steps: int, weight: torch.Tensor, bias: torch.Tensor | None, spec: SynapseSpec
) -> torch.Tensor:
    """The current a synapse drives into its targets in each step of the source window: ``[steps, B, ...]``.

    ``step_index`` holds each source spike's step (``steps`` = silent). From its spike on, a source
    drives the constant current ``w`` into its targets, so in step ``k`` the synapse adds
    ``weighted(active_k) / steps`` with ``active_k = [k >= step_j]`` (the bias, if any, adds
    ``b / steps`` every step). All steps run as one merged ``[steps * B, ...]`` batch.
    """
    k = int(steps)
    ks = torch.arange(k, device=step_index.device, dtype=step_index.dtype).view(-1, *([1] * step_index.dim()))
    active = (ks >= step_index.unsqueeze(0)).to(weight.dtype)  # [steps, B, ...]
    return weighted_op(active.flatten(0, 1), weight, bias, spec).unflatten(0, (k, -1)) / k


def synapse_charge_trace(
    step_index: torch.Tensor, steps: int, weight: torch.Tensor, bias: torch.Tensor | None, spec: SynapseSpec
) -> torch.Tensor:
    """Membrane charge after each step of the source window, ``[steps, B, ...]`` (running sum of the currents)."""
    return torch.cumsum(synapse_currents(step_index, steps, weight, bias, spec), 0)
