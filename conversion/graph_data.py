"""A prepared ANN graph as plain data, so networks made from a user's model are saved without code.

A model spikec did not build (a user's class, a torchvision model, a ``torch.export`` program)
cannot be rebuilt from an architecture name. After :func:`~spikec.conversion.prepare.prepare_ann`
its graph uses only the few layers and ops rate conversion knows, so :func:`graph_to_data` can
write it as nodes of plain data (layer class names from a fixed list with their constructor
arguments, functions and tensor methods from a fixed list) and :func:`graph_from_data` rebuilds
the same module structure; the weights travel in the checkpoint's ``state_dict``. Reading the data
never imports or runs anything beyond those listed layers and ops.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from spikec.conversion.graph import UnsupportedOpError
from spikec.conversion.qcfs import QCFS
from spikec.conversion.shift_current import InputShiftCurrent

GRAPH_ARCH = "graph"  # the ``arch`` of a checkpoint whose ``arch_config["graph"]`` holds this data
DATA_VERSION = 1

_CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")
_MAXPOOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AVGPOOL_ARGS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
# layer class -> the attributes that, passed back to its constructor, rebuild it
LAYERS: dict[str, tuple[type, tuple[str, ...]]] = {
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "Conv1d": (nn.Conv1d, _CONV_ARGS),
    "Conv2d": (nn.Conv2d, _CONV_ARGS),
    "Conv3d": (nn.Conv3d, _CONV_ARGS),
    "ReLU": (nn.ReLU, ()),
    "Hardtanh": (nn.Hardtanh, ("min_val", "max_val")),
    "QCFS": (QCFS, ("levels",)),
    "MaxPool1d": (nn.MaxPool1d, _MAXPOOL_ARGS),
    "MaxPool2d": (nn.MaxPool2d, _MAXPOOL_ARGS),
    "MaxPool3d": (nn.MaxPool3d, _MAXPOOL_ARGS),
    "AdaptiveMaxPool1d": (nn.AdaptiveMaxPool1d, ("output_size",)),
    "AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, ("output_size",)),
    "AdaptiveMaxPool3d": (nn.AdaptiveMaxPool3d, ("output_size",)),
    "AvgPool1d": (nn.AvgPool1d, _AVGPOOL_ARGS),
    "AvgPool2d": (nn.AvgPool2d, _AVGPOOL_ARGS + ("divisor_override",)),
    "AvgPool3d": (nn.AvgPool3d, _AVGPOOL_ARGS + ("divisor_override",)),
    "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, ("output_size",)),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
    "AdaptiveAvgPool3d": (nn.AdaptiveAvgPool3d, ("output_size",)),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "Unflatten": (nn.Unflatten, ("dim", "unflattened_size")),
    "Identity": (nn.Identity, ()),
}
FUNCTIONS = {
    "operator.add": operator.add, "operator.getitem": operator.getitem, "getattr": getattr,
    "torch.flatten": torch.flatten, "torch.reshape": torch.reshape, "torch.mean": torch.mean,
    "F.avg_pool1d": F.avg_pool1d, "F.avg_pool2d": F.avg_pool2d, "F.avg_pool3d": F.avg_pool3d,
    "F.adaptive_avg_pool1d": F.adaptive_avg_pool1d, "F.adaptive_avg_pool2d": F.adaptive_avg_pool2d,
    "F.adaptive_avg_pool3d": F.adaptive_avg_pool3d,
}
METHODS = ("view", "reshape", "flatten", "contiguous", "size", "dim", "mean")
_FUNCTION_NAMES = {id(fn): name for name, fn in FUNCTIONS.items()}


def graph_to_data(gm: fx.GraphModule) -> dict:
    """Plain data (lists, dicts, numbers, strings) describing ``gm``'s nodes and layers, without weights."""
    modules = dict(gm.named_modules())
    nodes = []
    for node in gm.graph.nodes:
        entry = {"op": node.op, "name": node.name, "args": _encode(node.args, node), "kwargs": _encode(node.kwargs, node)}
        if node.op == "call_module":
            entry["target"] = node.target
            entry["layer"] = _layer_data(modules[node.target], node.target)
        elif node.op == "call_function":
            name = _FUNCTION_NAMES.get(id(node.target))
            if name is None:
                raise UnsupportedOpError(f"node '{node.name}': function {node.target!r} cannot be saved as plain data")
            entry["target"] = name
        elif node.op == "call_method":
            if node.target not in METHODS:
                raise UnsupportedOpError(f"node '{node.name}': tensor method .{node.target} cannot be saved as plain data")
            entry["target"] = node.target
        elif node.op in ("placeholder", "output"):
            entry["target"] = str(node.target)
        else:
            raise UnsupportedOpError(f"node '{node.name}' ({node.op} {node.target!r}) cannot be saved as plain data")
        nodes.append(entry)
    return {"version": DATA_VERSION, "nodes": nodes}


def graph_from_data(data: dict) -> fx.GraphModule:
    """The module structure :func:`graph_to_data` described (fresh weights; load the state_dict after)."""
    if int(data.get("version", 0)) > DATA_VERSION:
        raise UnsupportedOpError(f"graph data version {data.get('version')} is newer than this spikec reads")
    graph = fx.Graph()
    root: dict[str, nn.Module] = {}
    env: dict[str, fx.Node] = {}
    for entry in data["nodes"]:
        op, name = entry["op"], entry["name"]
        args, kwargs = _decode(entry["args"], env), _decode(entry["kwargs"], env)
        if op == "call_module":
            root[entry["target"]] = _layer_from_data(entry["layer"], entry["target"])
            target = entry["target"]
        elif op == "call_function":
            if entry["target"] not in FUNCTIONS:
                raise UnsupportedOpError(f"node '{name}': unknown function {entry['target']!r} in graph data")
            target = FUNCTIONS[entry["target"]]
        elif op == "call_method":
            if entry["target"] not in METHODS:
                raise UnsupportedOpError(f"node '{name}': unknown tensor method {entry['target']!r} in graph data")
            target = entry["target"]
        elif op in ("placeholder", "output"):
            target = entry["target"]
        else:
            raise UnsupportedOpError(f"node '{name}': unknown op {op!r} in graph data")
        env[name] = graph.create_node(op, target, tuple(args), dict(kwargs), name=name)
    return fx.GraphModule(root, graph, class_name="PreparedANN").eval()


def _layer_data(m: nn.Module, where: str) -> dict:
    if isinstance(m, InputShiftCurrent):
        return {"class": "InputShiftCurrent", "weight_shape": list(m.weight.shape), "shift_shape": list(m.shift.shape),
                **{k: _plain(getattr(m, k)) for k in ("stride", "padding", "dilation", "groups")}}
    name = type(m).__name__
    known = LAYERS.get(name)
    if known is None or type(m) is not known[0]:
        raise UnsupportedOpError(f"layer '{where}' ({name}) cannot be saved as plain data")
    data = {"class": name, **{k: _plain(getattr(m, k)) for k in known[1]}}
    if hasattr(m, "bias") and isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        data["bias"] = m.bias is not None
    return data


def _layer_from_data(data: dict, where: str) -> nn.Module:
    options = {k: _unplain(v) for k, v in data.items() if k != "class"}
    name = data.get("class")
    if name == "InputShiftCurrent":
        shape = _Conv(options.pop("stride"), options.pop("padding"), options.pop("dilation"), options.pop("groups"))
        return InputShiftCurrent(shape, torch.zeros(options["weight_shape"]), torch.zeros(options["shift_shape"]))
    if name not in LAYERS:
        raise UnsupportedOpError(f"layer '{where}': unknown layer class {name!r} in graph data")
    return LAYERS[name][0](**options)


class _Conv:
    """The convolution geometry InputShiftCurrent copies from its convolution."""

    def __init__(self, stride, padding, dilation, groups):
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups


def _plain(value):
    if isinstance(value, tuple):
        return {"tuple": [_plain(v) for v in value]}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"cannot write {type(value).__name__} as plain data")


def _unplain(value):
    if isinstance(value, dict) and "tuple" in value:
        return tuple(_unplain(v) for v in value["tuple"])
    return value


def _encode(value, node: fx.Node):
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, node) for v in value]}
    if isinstance(value, list):
        return [_encode(v, node) for v in value]
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v, node) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"slice": [_encode(v, node) for v in (value.start, value.stop, value.step)]}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise UnsupportedOpError(f"node '{node.name}': argument of type {type(value).__name__} cannot be saved as plain data")


def _decode(value, env: dict[str, fx.Node]):
    if isinstance(value, dict):
        if "node" in value:
            return env[value["node"]]
        if "tuple" in value:
            return tuple(_decode(v, env) for v in value["tuple"])
        if "dict" in value:
            return {k: _decode(v, env) for k, v in value["dict"].items()}
        if "slice" in value:
            return slice(*(_decode(v, env) for v in value["slice"]))
        raise UnsupportedOpError(f"unknown entry {sorted(value)} in graph data")
    if isinstance(value, list):
        return [_decode(v, env) for v in value]
    return value
