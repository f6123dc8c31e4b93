"""Compile a (BN-folded) ANN graph into a TTFS network program.

Walks the ``torch.fx`` graph once, tracking what each node's value is in the spiking network:

- ``_Spikes``: spike times in a slot (after a ReLU, a max pooling or a reshape of spikes);
- ``_Sum``: a linear combination of spike values not yet turned into spikes: terms
  ``post(weighted(pre(values)))``. It is "weighted" once a Conv/Linear has been applied.

A ReLU turns a ``_Sum`` into a :class:`TTFSLayer` (its weights scaled into SNN units with the
calibrated windows); the graph output becomes the :class:`TTFSReadout`. Residual additions are
sums of terms from different windows: the neuron integrates each source in its own window,
which is exact because the neurons are non-leaky and cannot fire before their window opens.
Anything else raises :class:`~spikec.errors.SpikecError` naming the node.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.operator_schemas import normalize_function

from spikec.conversion.shift_current import InputShiftCurrent
from spikec.conversion.ttfs_calibrate import NodeRange
from spikec.conversion.ttfs_layers import Synapse, TTFSEncoder, TTFSLayer, TTFSReadout, TTFSTimeOp
from spikec.conversion.ttfs_synapse import Op, SynapseSpec, make_op
from spikec.errors import SpikecError


@dataclass(frozen=True)
class _Spikes:
    slot: int
    scale: float
    window: int


@dataclass(frozen=True)
class _Term:
    source: _Spikes
    coef: float = 1.0
    pre: tuple = ()
    module: nn.Module | None = None  # Conv/Linear of the folded ANN, None = gain
    post: tuple = ()
    bias: bool = False
    out_coef: float = 1.0  # multiplies the weighted op's output, bias included


@dataclass(frozen=True)
class _Sum:
    terms: tuple
    weighted: bool = False
    after_fire: tuple = ()  # max poolings met between the weighted op and its ReLU
    names: tuple = ()  # ANN modules feeding it, for layer names and errors


@dataclass
class Compiled:
    encoder: TTFSEncoder
    ops: dict = field(default_factory=dict)
    program: list = field(default_factory=list)


_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)
_RELU_FUNCS = (F.relu, torch.relu)
_ADD_FUNCS = (operator.add, torch.add)
_MUL_FUNCS = (operator.mul, torch.mul)
_DIV_FUNCS = (operator.truediv, torch.div)
_SUB_FUNCS = (operator.sub, torch.sub)
_NEG_FUNCS = (operator.neg, torch.neg)
_PASS_MODULES = (nn.Dropout, nn.Identity)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Compiler:
    def __init__(self, gm: fx.GraphModule, ranges: dict[str, NodeRange], margin: float):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.ranges = ranges
        self.margin = float(margin)
        self.values: dict[str, object] = {}
        self.out = None
        self.next_slot = 0

    # -- driver ----------------------------------------------------------------------------------
    def compile(self) -> Compiled:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self._input(node)
            elif node.op == "output":
                self._output(node)
            elif self.ranges.get(node.name) is not None and self.ranges[node.name].shape is None:
                self.values[node.name] = None  # sizes and other non-tensors: only used for shapes
            elif node.op == "call_module":
                self._call_module(node)
            elif node.op == "call_function":
                self._call_function(node)
            elif node.op == "call_method":
                self._call_method(node)
            else:
                raise SpikecError(f"TTFS conversion does not support {node.op} node {node.name!r} ({node.target})")
        return self.out

    def _slot(self) -> int:
        s = self.next_slot
        self.next_slot += 1
        return s

    def _arg(self, node: fx.Node, i: int = 0):
        a = node.args[i] if len(node.args) > i else None
        if not isinstance(a, fx.Node) or self.values.get(a.name) is None:
            raise SpikecError(f"TTFS conversion: node {node.name!r} ({_what(node)}) does not take a network value as input {i}")
        return self.values[a.name]

    # -- graph ends ------------------------------------------------------------------------------
    def _input(self, node: fx.Node) -> None:
        if self.out is not None:
            raise SpikecError(f"TTFS conversion needs a network with one input; {node.name!r} is another")
        r = self.ranges[node.name]
        signed = r.min < 0
        scale = r.abs_max if signed else r.max
        scale = scale if scale > 0 else 1.0
        self.out = Compiled(TTFSEncoder(scale, signed))
        pos = _Spikes(self._slot(), scale, 0)
        if signed:
            neg = _Spikes(self._slot(), scale, 0)
            self.values[node.name] = _Sum((_Term(pos, 1.0), _Term(neg, -1.0)))
        else:
            self.values[node.name] = pos

    def _output(self, node: fx.Node) -> None:
        value = self._arg(node)
        if isinstance(value, _Sum) and value.after_fire:
            raise SpikecError(f"TTFS conversion: the output of {node.args[0].name!r} is max-pooled logits; not supported")
        scale = self.ranges[node.args[0].name].abs_max
        self._emit_layer(_as_sum(value), TTFSReadout, scale if scale > 0 else 1.0, "readout")

    # -- node kinds ------------------------------------------------------------------------------
    def _call_module(self, node: fx.Node) -> None:
        m = self.modules[node.target]
        name = node.name
        if isinstance(m, _WEIGHTED):
            self.values[name] = self._weighted(node, m)
        elif isinstance(m, nn.ReLU):
            self.values[name] = self._relu(node)
        elif isinstance(m, nn.ReLU6):
            self.values[name] = self._relu(node, cap=6.0)
        elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            if m.return_indices:
                raise SpikecError(f"TTFS conversion: max pooling {node.target!r} with return_indices is not supported")
            kind = "max_pool1d" if isinstance(m, nn.MaxPool1d) else "max_pool2d"
            self.values[name] = self._max_pool(node, make_op(
                kind, kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                ceil_mode=m.ceil_mode))
        elif isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            if m.return_indices:
                raise SpikecError(f"TTFS conversion: max pooling {node.target!r} with return_indices is not supported")
            kind = "adaptive_max_pool1d" if isinstance(m, nn.AdaptiveMaxPool1d) else "adaptive_max_pool2d"
            self.values[name] = self._max_pool(node, make_op(kind, output_size=m.output_size))
        elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
            kind = "avg_pool1d" if isinstance(m, nn.AvgPool1d) else "avg_pool2d"
            kw = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, ceil_mode=m.ceil_mode,
                      count_include_pad=m.count_include_pad)
            if isinstance(m, nn.AvgPool2d):
                kw["divisor_override"] = m.divisor_override
            self.values[name] = self._linear_op(node, make_op(kind, **kw))
        elif isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            kind = "adaptive_avg_pool1d" if isinstance(m, nn.AdaptiveAvgPool1d) else "adaptive_avg_pool2d"
            self.values[name] = self._linear_op(node, make_op(kind, output_size=m.output_size))
        elif isinstance(m, (nn.Flatten, nn.Unflatten)):
            self.values[name] = self._reshape(node)
        elif isinstance(m, _PASS_MODULES):
            self.values[name] = self._arg(node)
        elif isinstance(m, _BN):
            raise SpikecError(f"TTFS conversion: batch norm {node.target!r} was not folded into a Conv/Linear "
                              f"(it must directly follow one)")
        elif isinstance(m, InputShiftCurrent):
            raise SpikecError(f"TTFS conversion: {node.target!r} is the shift of an input normalisation (or a batch norm "
                              f"after a ReLU) cut by zero padding, a per-position current TTFS layers do not have; "
                              f"train without --normalize for TTFS")
        else:
            raise SpikecError(f"TTFS conversion does not support {type(m).__name__} at {node.target!r}")

    def _call_function(self, node: fx.Node) -> None:
        f = node.target
        name = node.name
        if f in _RELU_FUNCS:
            self.values[name] = self._relu(node)
        elif f is F.relu6:
            self.values[name] = self._relu(node, cap=6.0)
        elif f in _ADD_FUNCS:
            self.values[name] = self._add(node)
        elif f in _SUB_FUNCS:
            self.values[name] = self._add(node, sign=-1.0)
        elif f in _NEG_FUNCS:
            self.values[name] = _scale(self._arg(node), -1.0, node)
        elif f in _MUL_FUNCS or f in _DIV_FUNCS:
            self.values[name] = self._mul(node, divide=f in _DIV_FUNCS)
        elif f is torch.mean:
            self.values[name] = self._mean(node)
        elif f is torch.flatten:
            self.values[name] = self._reshape(node)
        elif f is F.dropout:
            self.values[name] = self._arg(node)
        elif f in (F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d):
            self.values[name] = self._linear_op(node, make_op(f.__name__, **_function_kwargs(node)))
        elif f in (F.max_pool1d, F.max_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d):
            kw = _function_kwargs(node)
            if kw.pop("return_indices", False):
                raise SpikecError(f"TTFS conversion: max pooling {name!r} with return_indices is not supported")
            base = f.__name__.replace("_with_indices", "")
            self.values[name] = self._max_pool(node, make_op(base, **kw))
        else:
            raise SpikecError(f"TTFS conversion does not support the function {_what(node)} at node {name!r}")

    def _call_method(self, node: fx.Node) -> None:
        name = node.name
        if node.target == "relu":
            self.values[name] = self._relu(node)
        elif node.target == "add":
            self.values[name] = self._add(node)
        elif node.target == "sub":
            self.values[name] = self._add(node, sign=-1.0)
        elif node.target == "neg":
            self.values[name] = _scale(self._arg(node), -1.0, node)
        elif node.target in ("mul", "div"):
            self.values[name] = self._mul(node, divide=node.target == "div")
        elif node.target == "mean":
            self.values[name] = self._mean(node)
        elif node.target in ("view", "reshape", "flatten", "unflatten"):
            self.values[name] = self._reshape(node)
        elif node.target in ("contiguous", "clone"):
            self.values[name] = self._arg(node)
        else:
            raise SpikecError(f"TTFS conversion does not support the method .{node.target}() at node {name!r}")

    # -- value transforms ------------------------------------------------------------------------
    def _weighted(self, node: fx.Node, m: nn.Module):
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.padding_mode != "zeros":
            raise SpikecError(f"TTFS conversion: conv {node.target!r} uses padding_mode={m.padding_mode!r}; only zeros")
        value = _as_sum(self._arg(node))
        if value.weighted:
            raise SpikecError(f"TTFS conversion: {node.target!r} follows {', '.join(value.names)} with no ReLU between; "
                              f"merge the two weighted layers first")
        terms = tuple(replace(t, module=m, bias=(i == 0)) for i, t in enumerate(value.terms))
        return _Sum(terms, weighted=True, names=(node.target,))

    def _linear_op(self, node: fx.Node, op: Op):
        value = _as_sum(self._arg(node))
        if value.after_fire:
            raise SpikecError(f"TTFS conversion: {node.name!r} ({op.name}) comes between a max pooling and its ReLU")
        if value.weighted:
            terms = tuple(replace(t, post=t.post + (op,)) for t in value.terms)
        else:
            terms = tuple(replace(t, pre=t.pre + (op,)) for t in value.terms)
        return replace(value, terms=terms)

    def _reshape(self, node: fx.Node):
        value = self._arg(node)
        op = make_op("reshape", shape=self.ranges[node.name].shape)
        if isinstance(value, _Spikes):
            return self._time_op(node, value, op)
        return self._linear_op(node, op)

    def _max_pool(self, node: fx.Node, op: Op):
        value = self._arg(node)
        if isinstance(value, _Spikes):
            return self._time_op(node, value, op)
        if value.weighted and not any(t.post for t in value.terms):
            # max-pooling the charge commutes with the neurons (both monotone): pool their spike times
            return replace(value, after_fire=value.after_fire + (op,))
        raise SpikecError(f"TTFS conversion: max pooling {node.name!r} of a linear combination of spikes "
                          f"(after average pooling or an addition) is not supported")

    def _time_op(self, node: fx.Node, value: _Spikes, op: Op) -> _Spikes:
        out = _Spikes(self._slot(), value.scale, value.window)
        name = _unique(self.out.ops, node.name)
        self.out.ops[name] = TTFSTimeOp(op)
        self.out.program.append((name, (value.slot,), out.slot))
        return out

    def _relu(self, node: fx.Node, cap: float | None = None):
        value = self._arg(node)
        r = self.ranges[node.name]
        if cap is None or r.max < cap:  # a clipping ReLU that never clips is a ReLU
            if isinstance(value, _Spikes):
                return value
            if not value.weighted and all(t.coef >= 0 for t in value.terms):
                return value  # non-negative already: no neurons needed
        scale = self.margin * r.max if r.max > 0 else 1.0
        if cap is not None:
            scale = min(scale, cap)  # the window's own clipping at its scale is then the ReLU6's
        value = _as_sum(value)
        base = value.names[0] if value.names else node.name
        spikes = self._emit_layer(value, TTFSLayer, scale, base)
        for op in value.after_fire:
            spikes = self._time_op(node, spikes, op)
        return spikes

    def _add(self, node: fx.Node, sign: float = 1.0):
        if len(node.args) != 2 or node.kwargs:
            raise SpikecError(f"TTFS conversion: addition {node.name!r} must add exactly two network values")
        a = _as_sum(self._arg(node, 0))
        b = _as_sum(_scale(self._arg(node, 1), sign, node))
        if a.after_fire or b.after_fire:
            raise SpikecError(f"TTFS conversion: addition {node.name!r} of a max-pooled charge is not supported")
        return _Sum(a.terms + b.terms, weighted=a.weighted or b.weighted, names=a.names + b.names)

    def _mul(self, node: fx.Node, divide: bool):
        """A network value times (or divided by) a constant number."""
        a, b = (node.args + (None, None))[:2]
        if divide and isinstance(a, fx.Node) and isinstance(b, (int, float)) and b != 0:
            return _scale(self._arg(node, 0), 1.0 / b, node)
        if not divide and isinstance(a, fx.Node) and isinstance(b, (int, float)):
            return _scale(self._arg(node, 0), float(b), node)
        if not divide and isinstance(b, fx.Node) and isinstance(a, (int, float)):
            return _scale(self._arg(node, 1), float(a), node)
        raise SpikecError(f"TTFS conversion: {_what(node)} at node {node.name!r} must scale a network value by a "
                          f"constant number")

    def _mean(self, node: fx.Node):
        kw = _function_kwargs(node) if node.op == "call_function" else _method_kwargs(node)
        dims = kw.get("dim")
        ndim = len(self.ranges[node.args[0].name].shape) + 1
        dims = tuple(d % ndim for d in (dims if isinstance(dims, (tuple, list)) else (dims,))) if dims is not None else ()
        if not dims or 0 in dims or kw.get("dtype") is not None:
            raise SpikecError(f"TTFS conversion: mean {node.name!r} must average over non-batch dims")
        return self._linear_op(node, make_op("mean", dim=dims, keepdim=bool(kw.get("keepdim", False))))

    # -- emitting layers -------------------------------------------------------------------------
    def _emit_layer(self, value: _Sum, cls, scale: float, base: str) -> _Spikes:
        synapses = [_synapse(t, scale) for t in value.terms]
        window = 1 + max(t.source.window for t in value.terms)
        name = _unique(self.out.ops, base.replace(".", "_"))
        self.out.ops[name] = cls(synapses, window, scale)
        slot = self._slot()
        self.out.program.append((name, tuple(t.source.slot for t in value.terms), slot))
        return _Spikes(slot, scale, window)


def _as_sum(value) -> _Sum:
    return _Sum((_Term(value),)) if isinstance(value, _Spikes) else value


def _scale(value, c: float, node: fx.Node):
    """``c`` times a value: a positive factor on spikes just changes what their times mean."""
    if c == 1.0:
        return value
    if isinstance(value, _Spikes) and c > 0:
        return replace(value, scale=value.scale * c)
    value = _as_sum(value)
    if value.after_fire and c < 0:
        raise SpikecError(f"TTFS conversion: {node.name!r} negates a max-pooled charge; not supported")
    if value.weighted:
        return replace(value, terms=tuple(replace(t, out_coef=t.out_coef * c) for t in value.terms))
    return replace(value, terms=tuple(replace(t, coef=t.coef * c) for t in value.terms))


def _method_kwargs(node: fx.Node) -> dict:
    """Arguments of ``x.mean(dim, keepdim)``-style method calls."""
    args = list(node.args[1:])
    kw = dict(node.kwargs)
    for key, value in zip(("dim", "keepdim"), args):
        kw[key] = value
    return kw


def _synapse(term: _Term, out_scale: float) -> Synapse:
    """One term as a synapse in SNN units: weights times ``coef * M_source / M_layer``, bias over ``M_layer``."""
    m = term.module
    gain = term.coef * term.out_coef * term.source.scale / out_scale
    if m is None:
        spec = SynapseSpec("gain", pre=term.pre, post=term.post)
        weight = torch.tensor(gain, dtype=torch.float64)  # cast to the ANN's dtype with the network
        return Synapse(spec, weight, None, term.source.window)
    if isinstance(m, nn.Linear):
        spec = SynapseSpec("linear", pre=term.pre, post=term.post)
    else:
        kind = "conv1d" if isinstance(m, nn.Conv1d) else "conv2d"
        spec = SynapseSpec(kind, stride=tuple(m.stride), padding=m.padding if isinstance(m.padding, str) else tuple(m.padding),
                           dilation=tuple(m.dilation), groups=int(m.groups), pre=term.pre, post=term.post)
    w = m.weight.detach()
    weight = (w.double() * gain).to(w.dtype)
    bias = None
    if term.bias and m.bias is not None:
        bias = (m.bias.detach().double() * term.out_coef / out_scale).to(w.dtype)
    return Synapse(spec, weight, bias, term.source.window)


def _function_kwargs(node: fx.Node) -> dict:
    """Keyword arguments of a functional call, the tensor argument left out."""
    args = tuple(torch.empty(0) if isinstance(a, fx.Node) else a for a in node.args)
    norm = normalize_function(node.target, args, dict(node.kwargs), normalize_to_only_use_kwargs=True)
    if norm is None:
        raise SpikecError(f"TTFS conversion: cannot read the arguments of {_what(node)} at node {node.name!r}")
    kw = dict(norm.kwargs)
    kw.pop("input", None)
    if any(isinstance(v, fx.Node) for v in kw.values()):
        raise SpikecError(f"TTFS conversion: {_what(node)} at node {node.name!r} has computed arguments")
    return kw


def _what(node: fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target))


def _unique(existing: dict, name: str) -> str:
    if not name[:1].isalpha():
        name = f"layer{name}" if name[:1].isdigit() else f"op{name}"
    if name not in existing and not hasattr(nn.ModuleDict(), name):
        return name
    i = 1
    while f"{name}_{i}" in existing:
        i += 1
    return f"{name}_{i}"


def compile_graph(gm: fx.GraphModule, ranges: dict[str, NodeRange], margin: float) -> Compiled:
    """Encoder, modules and program of the TTFS network equivalent to ``gm``."""
    compiled = _Compiler(gm, ranges, margin).compile()
    if compiled is None or not compiled.program:
        raise SpikecError("TTFS conversion: the network has no input or no output")
    return compiled
