"""The per-sample graph of a spikec network, with the shape of every value, ready to write as NIR.

NIR describes one sample at one time step, so export needs the network as written per sample:
a plain ``nn.Module`` is traced with ``torch.fx`` (spiking layers as leaves); a
:class:`~spikec.MultiStep` or :class:`~spikec.SpikingClassifier` already holds such a graph, with
the time-folding reshapes around each neuron, which are skipped here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn

from spikec.io.nir_common import SUPPORTED_EXPORT, NIRExportError
from spikec.module import SpikingModule
from spikec.multistep import MultiStep
from spikec.neurons import LIF
from spikec.snn import SpikingClassifier


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, SpikingModule) or super().is_leaf_module(m, qualname)


@dataclass(frozen=True)
class Op:
    """One operation of the per-sample network: a module call or a flatten."""

    name: str  # unique, usable as a NIR node name and an nn.Module attribute name
    source: str  # module qualname or fx node name, for error messages
    module: nn.Module | None  # None for a functional flatten
    input: str  # name of the op feeding it ("input" for the network input)
    in_shape: tuple[int, ...]  # per sample
    out_shape: tuple[int, ...]
    flatten_dims: tuple[int, int] | None = None  # (start, end) over the batched tensor


@dataclass
class SampleGraph:
    """The ops in execution order, the name of the op the network returns, and what the model says about coding."""

    ops: list[Op]
    output: str
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)


def _check_neurons(root: nn.Module) -> None:
    """Refuse neuron kinds NIR has no primitive for before tracing (TTFS networks may not even trace)."""
    for name, m in root.named_modules():
        if isinstance(m, SpikingModule) and not isinstance(m, LIF):
            raise NIRExportError(
                f"layer '{name}' ({type(m).__name__}): only spikec.IF and spikec.LIF neurons have a NIR equivalent; "
                "TTFS layers (one spike per neuron in a time window) and other spiking layers do not"
            )


def _graph_module(model: nn.Module) -> tuple[fx.GraphModule, bool, dict]:
    """``(graph module, time_folded, info)`` for a per-sample net, a MultiStep or a SpikingClassifier."""
    info: dict = {}
    if isinstance(model, SpikingClassifier):
        info = {"timesteps": int(model.timesteps), "encoding": model.encoding, "readout": model.readout}
        model = model.net
    if isinstance(model, MultiStep):
        _check_neurons(model.net)
        return model.net, True, info
    _check_neurons(model)
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # fx raises many kinds for untraceable code
        raise NIRExportError(f"cannot trace {type(model).__name__} with torch.fx: {str(exc).splitlines()[0]}") from exc
    return fx.GraphModule(model, graph), False, info


class _ShapeProbe(fx.Interpreter):
    """Runs the graph on one zero sample with every neuron as identity, recording output shapes."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}

    def call_module(self, target, args, kwargs):
        if isinstance(self.fetch_attr(target), SpikingModule):
            return args[0]
        return super().call_module(target, args, kwargs)

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.shapes[n] = tuple(out.shape)
        return out


def _first_in_features(gm: fx.GraphModule) -> tuple[int, ...] | None:
    for node in gm.graph.nodes:
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, nn.Linear):
                return (m.in_features,)
            if not isinstance(m, (nn.Identity, nn.Dropout, nn.Flatten)):
                return None
    return None


def _is_time_fold(node: fx.Node) -> bool:
    """The reshapes MultiStep puts around a neuron: ``x.unflatten(0, (T, -1))`` and ``x.flatten(0, 1)``."""
    if node.op != "call_method":
        return False
    if node.target == "unflatten":
        return len(node.args) >= 2 and node.args[1] == 0
    if node.target == "flatten":
        return tuple(node.args[1:]) == (0, 1)
    return False


def _flatten_dims(node: fx.Node) -> tuple[int, int] | None:
    """``(start, end)`` of ``x.flatten(...)`` / ``torch.flatten(...)``, else None."""
    is_method = node.op == "call_method" and node.target == "flatten"
    is_function = node.op == "call_function" and node.target is torch.flatten
    if not (is_method or is_function):
        return None
    args = list(node.args[1:])
    start = node.kwargs.get("start_dim", args[0] if len(args) > 0 else 0)
    end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
    return int(start), int(end)


def _clean(name: str) -> str:
    return name.replace(".", "_")


def sample_graph(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> SampleGraph:
    """The per-sample ops of ``model`` with shapes; ``input_shape`` is one sample's shape (no batch)."""
    gm, folded, info = _graph_module(model)
    if input_shape is None:
        input_shape = _first_in_features(gm)
        if input_shape is None:
            raise NIRExportError(
                f"{type(model).__name__}: give input_shape (one sample, e.g. (1, 28, 28)); it can only be "
                "inferred when the first layer is Linear"
            )
    input_shape = tuple(int(d) for d in input_shape)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    probe = _ShapeProbe(gm)
    args = [torch.zeros(1, *input_shape)] + ([1] if folded else [])
    if len(placeholders) != len(args):
        raise NIRExportError(f"{type(model).__name__}: NIR export needs a network with one input, found {len(placeholders)}")
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            probe.run(*args)
    except Exception as exc:
        raise NIRExportError(
            f"{type(model).__name__}: running one sample of shape {input_shape} failed: {str(exc).splitlines()[0]}"
        ) from exc
    finally:
        gm.train(was_training)

    produced: dict[fx.Node, str] = {placeholders[0]: "input"}  # fx node -> op name holding its value
    shapes: dict[str, tuple[int, ...]] = {"input": input_shape}
    ops: list[Op] = []
    used = {"input", "output"}
    output = None

    def unique(name: str) -> str:
        base, i = name, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    def source_of(node: fx.Node) -> str:
        arg = node.args[0] if node.args else None
        if not isinstance(arg, fx.Node) or arg not in produced:
            raise NIRExportError(f"node '{node.name}': its input is not a tensor produced by a supported layer")
        return produced[arg]

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, fx.Node) or result not in produced:
                raise NIRExportError(f"{type(model).__name__}: NIR export needs a network returning one tensor")
            output = produced[result]
            continue
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            src = source_of(node)
            if len(node.args) != 1 or node.kwargs:
                raise NIRExportError(f"layer '{node.target}': called with more than one input")
            if isinstance(module, (nn.Identity, nn.Dropout)):
                produced[node] = src
                continue
            name = unique(_clean(node.target))
            out_shape = shapes[src] if isinstance(module, SpikingModule) else probe.shapes[node][1:]
            ops.append(Op(name, node.target, module, src, shapes[src], tuple(out_shape)))
        elif folded and _is_time_fold(node):
            produced[node] = source_of(node)
            continue
        elif _flatten_dims(node) is not None:
            src = source_of(node)
            name = unique(_clean(node.name))
            ops.append(Op(name, node.name, None, src, shapes[src], probe.shapes[node][1:], _flatten_dims(node)))
        else:
            what = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            raise NIRExportError(
                f"operation '{what}' at node '{node.name}' cannot be written as NIR; supported: {SUPPORTED_EXPORT}"
            )
        produced[node] = ops[-1].name
        shapes[ops[-1].name] = ops[-1].out_shape
    if output is None:
        raise NIRExportError(f"{type(model).__name__}: the traced graph has no output")
    return SampleGraph(ops, output, input_shape, info)

