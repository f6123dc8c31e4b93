"""Rewrite a prepared ANN graph into the per-step graph of a rate-coded SNN.

Every value in the new graph is either a *current* (an analog value per step, as in the ANN) or
*spikes* standing for ``scale * spikes`` of the ANN value. Activations become
:class:`~spikec.conversion.rate_modules.BalancedIF` neurons with threshold = scale, whose input
must be a current and whose output is spikes. Spikes flow unchanged through reshapes, average
and max pooling (spike-based); a Conv/Linear fed by spikes absorbs the scale into its weights
(per input channel), so the spikes it receives stay binary and its bias is a constant current.
Where spikes meet anything else (a residual addition, the output) a
:class:`~spikec.conversion.rate_modules.SpikeScale` turns them back into a current; a residual
addition therefore adds both branches in the same units, and the neurons after it get their own
threshold from the calibrated sum.

The graph is built from shapes alone plus the given scales, so the same call with placeholder
scales rebuilds the module structure of a saved network.
"""
from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from spikec.conversion.graph import ADAPTIVE_MAXPOOL_MODULES, UnsupportedOpError, op_kind, where
from spikec.conversion.maxpool import SpikeMaxPool
from spikec.conversion.rate_modules import BalancedIF, SpikeScale


def propagate_shapes(prepared: fx.GraphModule, input_shape) -> None:
    """Record each node's output shape in ``node.meta['tensor_meta']`` from one zero sample."""
    param = next(prepared.parameters(), None)
    like = {"dtype": param.dtype, "device": param.device} if param is not None else {}
    example = torch.zeros(1, *input_shape, **like)
    with torch.no_grad():
        prepared(example)  # fails quietly on a wrong shape, where ShapeProp would print a traceback
        ShapeProp(prepared).propagate(example)


def sample_shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else ()


def channel_shape(node: fx.Node) -> tuple[int, ...]:
    """Shape of a per-channel scale of this node's output: ``[C, 1, ...]``."""
    shape = sample_shape(node)
    return (shape[0],) + (1,) * (len(shape) - 1) if shape else ()


def build_rate_graph(prepared: fx.GraphModule, scales: dict[str, torch.Tensor], v_init: float = 0.5,
                     maxpool: str = "count", reset: str = "subtract") -> fx.GraphModule:
    """The SNN graph of a prepared ANN whose shapes were propagated (:func:`propagate_shapes`).

    ``scales`` maps each activation's module path to its scale (a scalar or one per channel);
    ``reset`` is the neurons' reset, ``"subtract"`` or ``"zero"``.
    """
    return _Builder(prepared, scales, v_init, maxpool, reset).build()


class _Builder:
    def __init__(self, prepared, scales, v_init, maxpool, reset="subtract"):
        self.prepared, self.scales, self.v_init, self.maxpool = prepared, scales, v_init, maxpool
        self.reset = reset
        self.modules = dict(prepared.named_modules())
        self.graph = fx.Graph()
        self.root: dict[str, object] = {}
        self.env: dict[fx.Node, tuple[fx.Node, torch.Tensor | None]] = {}
        self.as_current: dict[fx.Node, fx.Node] = {}

    def build(self) -> fx.GraphModule:
        for node in self.prepared.graph.nodes:
            kind = op_kind(node, self.modules)
            handler = getattr(self, f"_{kind}", None)
            if handler is None:
                raise UnsupportedOpError(f"rate conversion cannot map {kind or 'this op'} at {where(node)}")
            self.env[node] = handler(node)
        return fx.GraphModule(self.root, self.graph, class_name="RateSNNNet")

    # --- helpers -------------------------------------------------------------------------
    def _value(self, arg):
        return self.env[arg][0] if isinstance(arg, fx.Node) else arg

    def _scale(self, arg) -> torch.Tensor | None:
        return self.env[arg][1] if isinstance(arg, fx.Node) else None

    def _current(self, arg):
        """``arg`` as a current: spikes times their scale."""
        if not isinstance(arg, fx.Node) or self.env[arg][1] is None:
            return self._value(arg)
        if arg not in self.as_current:
            name = self._name(f"{self.env[arg][0].name}_scale")
            self.root[name] = SpikeScale(self.env[arg][1])
            self.as_current[arg] = self.graph.call_module(name, (self.env[arg][0],))
        return self.as_current[arg]

    def _name(self, base: str) -> str:
        name, k = base, 1
        while name in self.root:
            name, k = f"{base}_{k}", k + 1
        return name

    def _copy(self, node: fx.Node, args_as=None) -> fx.Node:
        """The same op on mapped arguments (currents where ``args_as`` says so)."""
        mapper = args_as or self._value
        if node.op == "call_module":
            name = node.target
            if self.root.get(name) is not self.modules[name]:
                name = self._name(node.target) if name in self.root else name
                self.root[name] = self.modules[node.target]
            return self.graph.call_module(name, fx.node.map_arg(node.args, mapper), fx.node.map_arg(node.kwargs, mapper))
        return self.graph.node_copy(node, lambda n: mapper(n))

    def _channel_preserving(self, node: fx.Node, scale):
        """Scale of an op that keeps the channel axis (pooling): scalar or ``[C, 1, ...]`` pass, else None."""
        if scale is None or scale.dim() == 0:
            return scale
        shape = channel_shape(node.args[0])
        if tuple(scale.shape) == shape and len(sample_shape(node)) == len(shape):
            return scale
        return None

    # --- one handler per kind --------------------------------------------------------------
    def _input(self, node):
        return self.graph.placeholder(node.target), None

    def _constant(self, node):
        value = self.prepared
        for part in node.target.split("."):
            value = getattr(value, part)
        self.root[node.target] = value
        return self.graph.get_attr(node.target), None

    def _shape(self, node):
        return self._copy(node), None

    def _output(self, node):
        return self.graph.output(self._current(node.args[0])), None

    def _shift_current(self, node):
        name = self._name(node.target)
        self.root[name] = copy.deepcopy(self.modules[node.target])
        return self.graph.call_module(name, (self._value(node.args[0]),)), None

    def _add(self, node):
        a, b = node.args[0], node.args[1]
        return self.graph.call_function(operator.add, (self._current(a), self._current(b))), None

    def _weighted(self, node):
        source = node.args[0]
        scale = self._scale(source)
        layer = copy.deepcopy(self.modules[node.target])
        if scale is not None and _absorb_input_scale(layer, scale):
            inp = self._value(source)
        else:
            inp = self._current(source)
        name = self._name(node.target)
        self.root[name] = layer
        return self.graph.call_module(name, (inp,)), None

    def _activation(self, node):
        scale = self.scales[node.target].detach().float()
        name = self._name(node.target)
        self.root[name] = BalancedIF(scale, self.v_init, reset=self.reset)
        return self.graph.call_module(name, (self._current(node.args[0]),)), scale

    def _avgpool(self, node):
        scale = self._scale(node.args[0])
        if scale is not None and node.target in ("mean", torch.mean):
            return self._mean(node, scale)
        kept = self._channel_preserving(node, scale)
        if scale is not None and kept is None:
            return self._copy(node, self._current), None
        return self._copy(node), kept

    def _mean(self, node, scale):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if scale.dim() == 0:
            return self._copy(node), scale
        if 1 in dims or tuple(scale.shape) != channel_shape(node.args[0]):
            return self._copy(node, self._current), None
        out = sample_shape(node)
        return self._copy(node), scale.reshape((scale.shape[0],) + (1,) * (len(out) - 1))

    def _maxpool(self, node):
        source = node.args[0]
        scale = self._channel_preserving(node, self._scale(source))
        if scale is None:  # a max over currents: taken per step
            return self._copy(node, self._current), None
        pool = self.modules[node.target]
        if isinstance(pool, ADAPTIVE_MAXPOOL_MODULES):
            pool = _fixed_pool(pool, sample_shape(source)[1:], sample_shape(node)[1:], where(node))
        name = self._name(node.target)
        self.root[name] = SpikeMaxPool.like(pool, self.maxpool)
        return self.graph.call_module(name, (self._value(source),)), scale

    def _reshape(self, node):
        scale = self._scale(node.args[0])
        if scale is not None and scale.dim() > 0:
            scale = scale.expand(sample_shape(node.args[0])).reshape(sample_shape(node)).clone()
        new = self._copy(node)
        if new.op == "call_method" and new.target == "view":  # spiking pools may return non-contiguous spikes
            new.target = "reshape"
        return new, scale


def _absorb_input_scale(layer: nn.Module, scale: torch.Tensor) -> bool:
    """Multiply ``layer``'s weights by the scale of its (spike) input; False if the scale's shape does not fit."""
    W = layer.weight
    with torch.no_grad():
        if scale.dim() == 0:
            W.mul_(scale)
            return True
        if isinstance(layer, nn.Linear):
            if tuple(scale.shape) != (layer.in_features,):
                return False
            W.mul_(scale)
            return True
        channels = layer.in_channels
        if scale.shape[0] != channels or scale.numel() != channels:
            return False
        g = layer.groups
        per = scale.reshape(g, 1, channels // g).expand(g, layer.out_channels // g, channels // g)
        W.mul_(per.reshape(layer.out_channels, channels // g, *([1] * (W.dim() - 2))))
        return True


def _fixed_pool(pool: nn.Module, in_size, out_size, at: str) -> nn.Module:
    """The fixed-window max pool an adaptive one amounts to when sizes divide evenly."""
    if any(i % o for i, o in zip(in_size, out_size)):
        raise UnsupportedOpError(f"adaptive max pooling from {tuple(in_size)} to {tuple(out_size)} at {at} has "
                                 f"uneven windows; use a MaxPool with a fixed kernel")
    kernel = tuple(i // o for i, o in zip(in_size, out_size))
    cls = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[len(kernel)]
    return cls(kernel, kernel)
