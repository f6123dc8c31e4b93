"""A ``torch.export`` program (``.pt2``) as an ``nn.Module`` graph that conversion can read.

An exported program holds ATen ops (``aten.conv2d``, ``aten.batch_norm``, ...) with the weights
as constants, where conversion expects layers (``nn.Conv2d``, ``nn.BatchNorm2d``, ...). This
module rebuilds one layer per weighted ATen op (weights copied in) and maps the parameter-free
ops (activations, pooling, reshapes, additions) onto the layers and functions conversion knows.
Reshapes are written with ``-1`` for the batch size, so the graph runs at any batch size even
when the program was exported for one. Any other op fails with one line naming it and the
module of the original model it came from.
"""
from __future__ import annotations

import operator

import torch
from torch import fx, nn

from spikec.conversion.graph import UnsupportedOpError

aten = torch.ops.aten

_IDENTITY = {aten.dropout.default, aten.dropout_.default, aten.contiguous.default, aten.clone.default,
             aten.alias.default, aten.detach.default, aten.feature_dropout.default}
_ADD = {aten.add.Tensor, aten.add_.Tensor}
_RESHAPE = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}
_BATCHNORM = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
_CONV = {aten.conv1d.default: nn.Conv1d, aten.conv2d.default: nn.Conv2d, aten.conv3d.default: nn.Conv3d}
_MAXPOOL = {aten.max_pool1d.default: nn.MaxPool1d, aten.max_pool2d.default: nn.MaxPool2d,
            aten.max_pool3d.default: nn.MaxPool3d}
_AVGPOOL = {aten.avg_pool1d.default: nn.AvgPool1d, aten.avg_pool2d.default: nn.AvgPool2d,
            aten.avg_pool3d.default: nn.AvgPool3d}
_ADAPTIVE_AVG = {aten.adaptive_avg_pool1d.default: nn.AdaptiveAvgPool1d,
                 aten.adaptive_avg_pool2d.default: nn.AdaptiveAvgPool2d,
                 aten._adaptive_avg_pool2d.default: nn.AdaptiveAvgPool2d,
                 aten.adaptive_avg_pool3d.default: nn.AdaptiveAvgPool3d}
_RELU6 = {getattr(aten, name).default for name in ("relu6", "relu6_") if hasattr(aten, name)}
_BN_CLASSES = {3: nn.BatchNorm1d, 2: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def load_program(path: str) -> torch.export.ExportedProgram:
    """``torch.export.load(path)``: deserialises a graph of ATen ops and its tensors (no Python code from the file runs)."""
    return torch.export.load(path)


def program_input_shape(program: torch.export.ExportedProgram) -> tuple[int, ...] | None:
    """One sample's shape as the program was exported (its first user input without the batch), if static."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in _user_inputs(program):
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is None or len(shape) < 2:
                return None
            try:
                return tuple(int(d) for d in shape[1:])
            except (TypeError, ValueError):  # symbolic sizes
                return None
    return None


def _user_inputs(program) -> set[str]:
    spec = program.graph_signature
    return {s.arg.name for s in spec.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT}


def program_module(program: torch.export.ExportedProgram, source: str = "program") -> fx.GraphModule:
    """An eval-mode ``fx.GraphModule`` of ``nn`` layers computing what ``program`` computes."""
    return _Translator(program.module(), source).run()


class _Translator:
    def __init__(self, gm: fx.GraphModule, source: str):
        self.gm, self.source = gm, source
        self.graph = fx.Graph()
        self.root: dict[str, nn.Module] = {}
        self.env: dict[fx.Node, object] = {}

    def run(self) -> fx.GraphModule:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedOpError(f"{self.source}: conversion needs a program with one input, it has {len(placeholders)}")
        for node in self.gm.graph.nodes:
            self.env[node] = self._node(node)
        return fx.GraphModule(self.root, self.graph, class_name="ExportedProgramNet").eval()

    # ------------------------------------------------------------------ helpers
    def _at(self, node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        inside = ""
        if stack:
            path, cls = list(stack.values())[-1]
            cls_name = getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]
            inside = f" in module '{path}' ({cls_name})" if path else ""
        return f"node '{node.name}'{inside}"

    def _tensor(self, arg) -> torch.Tensor | None:
        if arg is None:
            return None
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            value = self.gm
            for part in arg.target.split("."):
                value = getattr(value, part)
            return value.detach().clone()
        raise UnsupportedOpError(f"{self.source}: a weight computed at run time ({arg}) is not supported")

    def _name(self, base: str) -> str:
        base = base.replace(".", "_")
        name, k = base, 1
        while name in self.root:
            name, k = f"{base}_{k}", k + 1
        return name

    def _weight_name(self, node: fx.Node, index: int = 1) -> str:
        w = node.args[index] if len(node.args) > index else None
        if isinstance(w, fx.Node) and w.op == "get_attr" and "." in w.target:
            return self._name(w.target.rsplit(".", 1)[0])
        return self._name(node.name)

    def _module(self, name: str, module: nn.Module, arg) -> fx.Node:
        self.root[name] = module
        return self.graph.call_module(name, (self.env[arg],))

    @staticmethod
    def _arg(node: fx.Node, index: int, name: str, default):
        if len(node.args) > index:
            return node.args[index]
        return node.kwargs.get(name, default)

    # ------------------------------------------------------------------ one node
    def _node(self, node: fx.Node):
        if node.op == "placeholder":
            return self.graph.placeholder(node.name)
        if node.op == "get_attr":
            return None  # read by the layer that uses it
        if node.op == "call_module":  # torch.export's input guards
            return None
        if node.op == "output":
            outs = fx.node.map_aggregate(node.args[0], lambda a: a)
            while isinstance(outs, (tuple, list)) and len(outs) == 1:
                outs = outs[0]
            if not isinstance(outs, fx.Node):
                raise UnsupportedOpError(f"{self.source}: conversion needs a program returning one tensor")
            return self.graph.output(self.env[outs])
        if node.op != "call_function":
            raise UnsupportedOpError(f"{self.source}: {node.op} at {self._at(node)} is not supported")
        fn = node.target
        x = node.args[0] if node.args else None
        if fn is operator.getitem:
            source = node.args[0]
            if isinstance(source, fx.Node) and source.target in _BATCHNORM and node.args[1] == 0:
                return self.env[source]
            raise UnsupportedOpError(f"{self.source}: indexing at {self._at(node)} is not supported")
        if fn in _IDENTITY:
            return self.env[x]
        if fn in _CONV:
            return self._conv(node, _CONV[fn])
        if fn is aten.linear.default:
            w, b = self._tensor(node.args[1]), self._tensor(self._arg(node, 2, "bias", None))
            layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            _copy(layer, w, b)
            return self._module(self._weight_name(node), layer, x)
        if fn in _BATCHNORM:
            return self._batchnorm(node)
        if fn in (aten.relu.default, aten.relu_.default):
            return self._module(self._name(node.name), nn.ReLU(), x)
        if fn in (aten.hardtanh.default, aten.hardtanh_.default):
            low, high = self._arg(node, 1, "min_val", -1.0), self._arg(node, 2, "max_val", 1.0)
            return self._module(self._name(node.name), nn.Hardtanh(float(low), float(high)), x)
        if fn in _RELU6:
            return self._module(self._name(node.name), nn.Hardtanh(0.0, 6.0), x)
        if fn in _MAXPOOL:
            k = self._arg(node, 1, "kernel_size", None)
            stride = self._arg(node, 2, "stride", []) or k
            layer = _MAXPOOL[fn](tuple(k), tuple(stride), _tuple(self._arg(node, 3, "padding", 0)),
                                 _tuple(self._arg(node, 4, "dilation", 1)), ceil_mode=bool(self._arg(node, 5, "ceil_mode", False)))
            return self._module(self._name(node.name), layer, x)
        if fn in _AVGPOOL:
            k = self._arg(node, 1, "kernel_size", None)
            stride = self._arg(node, 2, "stride", []) or k
            options = dict(ceil_mode=bool(self._arg(node, 4, "ceil_mode", False)),
                           count_include_pad=bool(self._arg(node, 5, "count_include_pad", True)))
            if fn is not aten.avg_pool1d.default:
                options["divisor_override"] = self._arg(node, 6, "divisor_override", None)
            layer = _AVGPOOL[fn](tuple(k), tuple(stride), _tuple(self._arg(node, 3, "padding", 0)), **options)
            return self._module(self._name(node.name), layer, x)
        if fn in _ADAPTIVE_AVG:
            return self._module(self._name(node.name), _ADAPTIVE_AVG[fn](tuple(node.args[1])), x)
        if fn is aten.mean.dim:
            dims = self._arg(node, 1, "dim", None)
            keep = bool(self._arg(node, 2, "keepdim", False))
            return self.graph.call_function(torch.mean, (self.env[x],), {"dim": tuple(dims), "keepdim": keep})
        if fn in _ADD:
            if self._arg(node, 2, "alpha", 1) != 1:
                raise UnsupportedOpError(f"{self.source}: add with alpha at {self._at(node)} is not supported")
            a, b = node.args[0], node.args[1]
            if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
                raise UnsupportedOpError(f"{self.source}: adding a constant at {self._at(node)} is not supported")
            return self.graph.call_function(operator.add, (self.env[a], self.env[b]))
        if fn is aten.flatten.using_ints:
            start, end = self._arg(node, 1, "start_dim", 0), self._arg(node, 2, "end_dim", -1)
            return self.graph.call_function(torch.flatten, (self.env[x], start, end))
        if fn in _RESHAPE:
            val = node.meta.get("val")
            if val is None:
                raise UnsupportedOpError(f"{self.source}: reshape at {self._at(node)} has no recorded shape")
            shape = (-1, *(int(d) for d in val.shape[1:]))
            return self.graph.call_method("reshape", (self.env[x], shape))
        raise UnsupportedOpError(f"{self.source}: ATen op {fn} at {self._at(node)} has no layer that conversion supports")

    def _conv(self, node: fx.Node, cls) -> fx.Node:
        w = self._tensor(node.args[1])
        b = self._tensor(self._arg(node, 2, "bias", None))
        dims = w.dim() - 2
        stride = _tuple(self._arg(node, 3, "stride", 1), dims)
        padding = _tuple(self._arg(node, 4, "padding", 0), dims)
        dilation = _tuple(self._arg(node, 5, "dilation", 1), dims)
        groups = int(self._arg(node, 6, "groups", 1))
        layer = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride, padding, dilation, groups, bias=b is not None)
        _copy(layer, w, b)
        return self._module(self._weight_name(node), layer, node.args[0])

    def _batchnorm(self, node: fx.Node) -> fx.Node:
        x, w, b, mean, var = node.args[:5]
        if node.target is aten.batch_norm.default:
            training, eps = bool(node.args[5]), float(node.args[7])
        else:
            training, eps = False, float(node.args[6])
        if training:
            raise UnsupportedOpError(f"{self.source}: batch norm in training mode at {self._at(node)}; export the model in eval mode")
        mean_t, var_t = self._tensor(mean), self._tensor(var)
        val = node.meta.get("val")
        rank = val.dim() if val is not None else 4
        layer = _BN_CLASSES.get(rank, nn.BatchNorm2d)(mean_t.numel(), eps=eps, affine=w is not None)
        with torch.no_grad():
            layer.running_mean.copy_(mean_t)
            layer.running_var.copy_(var_t)
            if w is not None:
                layer.weight.copy_(self._tensor(w))
                layer.bias.copy_(self._tensor(b))
        return self._module(self._weight_name(node), layer.eval(), x)


def _tuple(value, dims: int | None = None):
    if isinstance(value, (list, tuple)):
        if dims is not None and len(value) == 1:
            return tuple(int(value[0]) for _ in range(dims))
        return tuple(int(v) for v in value)
    return value if dims is None else tuple(int(value) for _ in range(dims))


def _copy(layer: nn.Module, w: torch.Tensor, b: torch.Tensor | None) -> None:
    with torch.no_grad():
        layer.weight.copy_(w)
        if b is not None:
            layer.bias.copy_(b)
