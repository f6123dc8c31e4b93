"""Tracing an ANN with torch.fx and naming what each graph node does.

Conversion works on the fx graph of the ANN. :func:`trace` keeps torch.nn layers, QCFS and
spiking layers as leaves; :func:`op_kind` sorts a node into the few kinds rate conversion knows
(weighted layer, activation, pooling, reshape, addition, ...) or ``None`` when it does not
know it; :func:`where` names a node for error messages.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from spikec.conversion.qcfs import QCFS
from spikec.conversion.shift_current import InputShiftCurrent
from spikec.errors import SpikecError
from spikec.module import SpikingModule


class UnsupportedOpError(SpikecError):
    """The ANN contains an operation that conversion cannot map onto spiking neurons."""


class _ConversionTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # batch norms stay whole (subclasses too, such as InputNormalization), so folding sees them
        return isinstance(m, (QCFS, SpikingModule, *BATCHNORMS)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """fx graph of ``model``; raises :class:`UnsupportedOpError` when it cannot be traced."""
    try:
        graph = _ConversionTracer().trace(model)
    except Exception as exc:  # fx raises many kinds for data-dependent control flow
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedOpError(
            f"cannot trace {type(model).__name__} with torch.fx (data-dependent control flow?): {first}"
        ) from exc
    return fx.GraphModule(model, graph, class_name=type(model).__name__)


WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
AVGPOOL_MODULES = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)
MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
ADAPTIVE_MAXPOOL_MODULES = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
DROPOUT_MODULES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
)
RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)

RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu_)
RELU_METHODS = ("relu", "relu_")
CLAMP_FUNCTIONS = (torch.clamp, torch.clip, torch.clamp_min, F.relu6, F.hardtanh)
CLAMP_METHODS = ("clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_")
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
ADD_METHODS = ("add", "add_")
RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape)
RESHAPE_METHODS = ("view", "reshape", "flatten", "contiguous")
SHAPE_METHODS = ("size", "dim")
AVGPOOL_FUNCTIONS = (
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.mean,
)
AVGPOOL_METHODS = ("mean",)
MAXPOOL_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d)
DROPOUT_FUNCTIONS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)

# What each kind means to rate conversion.
KINDS = (
    "input", "output", "constant", "weighted", "batchnorm", "activation", "add", "avgpool", "maxpool",
    "reshape", "shape", "dropout", "spiking", "shift_current",
)


def op_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The kind of ``node`` (one of :data:`KINDS`), or ``None`` when conversion does not support it."""
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    if node.op == "get_attr":
        return "constant"
    if node.op == "call_module":
        return _module_kind(modules[node.target])
    if node.op == "call_function":
        return _function_kind(node)
    if node.op == "call_method":
        return _method_kind(node)
    return None


def _module_kind(m: nn.Module) -> str | None:
    if isinstance(m, SpikingModule):
        return "spiking"
    if isinstance(m, WEIGHTED):
        return "weighted"
    if isinstance(m, InputShiftCurrent):
        return "shift_current"
    if isinstance(m, BATCHNORMS):
        return "batchnorm"
    if isinstance(m, (nn.ReLU, nn.ReLU6, QCFS)):
        return "activation"
    if isinstance(m, nn.Hardtanh):
        return "activation" if m.min_val == 0 and m.max_val > 0 else None
    if isinstance(m, AVGPOOL_MODULES):
        return "avgpool"
    if isinstance(m, MAXPOOL_MODULES + ADAPTIVE_MAXPOOL_MODULES):
        return None if m.return_indices else "maxpool"
    if isinstance(m, DROPOUT_MODULES):
        return "dropout"
    if isinstance(m, RESHAPE_MODULES):
        return "reshape"
    return None


def _function_kind(node: fx.Node) -> str | None:
    fn = node.target
    if fn in RELU_FUNCTIONS:
        return "activation"
    if fn in CLAMP_FUNCTIONS:
        return "activation" if clamp_bounds(node) is not None else None
    if fn in ADD_FUNCTIONS:
        return "add" if "alpha" not in node.kwargs else None
    if fn in RESHAPE_FUNCTIONS:
        return "reshape"
    if fn in AVGPOOL_FUNCTIONS:
        return "avgpool" if fn is not torch.mean or _mean_keeps_batch(node) else None
    if fn in MAXPOOL_FUNCTIONS:
        return None if _arg(node, 6, "return_indices", False) else "maxpool"
    if fn in DROPOUT_FUNCTIONS:
        return "dropout"
    if fn is getattr and node.args[1] == "shape":
        return "shape"
    if fn is operator.getitem and _is_shape_value(node.args[0]):
        return "shape"
    return None


def _method_kind(node: fx.Node) -> str | None:
    name = node.target
    if name in RELU_METHODS:
        return "activation"
    if name in CLAMP_METHODS:
        return "activation" if clamp_bounds(node) is not None else None
    if name in ADD_METHODS:
        return "add" if "alpha" not in node.kwargs else None
    if name in RESHAPE_METHODS:
        return "reshape"
    if name in SHAPE_METHODS:
        return "shape"
    if name in AVGPOOL_METHODS:
        return "avgpool" if _mean_keeps_batch(node) else None
    return None


def _arg(node: fx.Node, index: int, name: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def clamp_bounds(node: fx.Node) -> tuple[float, float | None] | None:
    """``(0, upper)`` of a clamp-like node that is a (clipped) ReLU, else ``None``."""
    fn = node.target
    if fn is F.relu6:
        return 0.0, 6.0
    if fn is F.hardtanh:
        low, high = _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
    elif fn in (torch.clamp_min, "clamp_min", "clamp_min_"):
        low, high = _arg(node, 1, "min", None), None
    else:
        low, high = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
    if isinstance(low, fx.Node) or isinstance(high, fx.Node):
        return None
    if low is None or float(low) != 0.0:
        return None
    if high is not None and not float(high) > 0:
        return None
    return 0.0, (None if high is None else float(high))


def _mean_keeps_batch(node: fx.Node) -> bool:
    dims = _arg(node, 1, "dim", None)
    if dims is None:
        return False
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return all(isinstance(d, int) and d > 0 for d in dims)


def _is_shape_value(node) -> bool:
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_method" and node.target in SHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
        return True
    return node.op == "call_function" and node.target is operator.getitem and _is_shape_value(node.args[0])


def op_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """What the node calls, as a reader would write it (``nn.Sigmoid``, ``torch.sigmoid``, ``.softmax``)."""
    if node.op == "call_module":
        cls = type(modules[node.target])
        return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn") else cls.__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_function":
        fn = node.target
        mod = getattr(fn, "__module__", None) or ""
        name = getattr(fn, "__name__", repr(fn))
        if mod.startswith("torch.nn.functional"):
            return f"F.{name}"
        if mod in ("_operator", "operator"):
            return f"operator.{name}"
        return f"torch.{name}" if mod.startswith("torch") or mod == "" else f"{mod}.{name}"
    return node.op


def where(node: fx.Node) -> str:
    """Node name and module path of ``node``, for messages."""
    if node.op == "call_module":
        return f"module '{node.target}' (node '{node.name}')"
    stack = node.meta.get("nn_module_stack")
    inside = next(reversed(stack.keys()), "") if stack else ""
    return f"node '{node.name}'" + (f" in module '{inside}'" if inside else " in the top-level forward")


def unsupported(node: fx.Node, modules: dict[str, nn.Module], why: str = "") -> UnsupportedOpError:
    """The error for a node conversion cannot handle."""
    reason = f": {why}" if why else ""
    return UnsupportedOpError(f"unsupported op {op_name(node, modules)} at {where(node)}{reason}")
