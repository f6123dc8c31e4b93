"""Bring a traced ANN into the canonical form rate conversion maps onto neurons.

After :func:`prepare_ann` the graph computes the same function as the eval-mode ANN and:

- has no batch norm (folded by :func:`~spikec.conversion.fold.fold_batchnorm`) and no dropout;
- calls every activation (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``ReLU6``, ``clamp(0, m)``,
  ``Hardtanh(0, m)``, QCFS) through its own module, one module per call site, so each call
  site becomes its own layer of neurons;
- calls every max pool through its own ``nn.MaxPoolNd``, placed after the activation when the
  ANN pooled first (max pooling commutes with any nondecreasing activation);
- uses out-of-place additions;
- ends without a softmax / log-softmax over the classes (it would not change the predicted class,
  and a spiking network cannot compute it; the SNN returns the scores before it);
- contains only ops rate conversion supports: anything else raises
  :class:`~spikec.conversion.graph.UnsupportedOpError` naming the op and where it is.
"""
from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from spikec.conversion.fold import fold_batchnorm
from spikec.conversion.graph import UnsupportedOpError, clamp_bounds, op_kind, unsupported, where
from spikec.conversion.qcfs import QCFS

SUPPORTED = (
    "Conv/Linear, BatchNorm, ReLU/ReLU6/clamp(0, m)/QCFS, avg and max pooling, flatten/view/reshape, dropout, "
    "residual addition"
)


def prepare_ann(ann: nn.Module) -> fx.GraphModule:
    """The canonical eval-mode graph of ``ann`` (a copy; ``ann`` is not changed)."""
    gm = fold_batchnorm(ann)
    _drop_final_softmax(gm)
    _check_supported(gm)
    _remove_dropout(gm)
    _out_of_place_additions(gm)
    _activations_as_own_modules(gm)
    _maxpools_as_own_modules(gm)
    _pool_after_activation(gm)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm.eval()


def activation_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The activation call sites of a prepared graph, in order."""
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if op_kind(n, modules) == "activation"]


def _check_supported(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedOpError(f"conversion needs a network with one input, this one has {len(placeholders)}")
    for node in gm.graph.nodes:
        kind = op_kind(node, modules)
        if kind is None:
            raise unsupported(node, modules, f"rate conversion supports {SUPPORTED}")
        if kind == "batchnorm":
            raise unsupported(node, modules, "this batch norm follows no Conv/Linear it could fold into and feeds "
                                             "something other than Conv/Linear layers")
        if kind == "spiking":
            raise unsupported(node, modules, "the network already contains spiking layers")
        if kind == "output" and not isinstance(node.args[0], fx.Node):
            raise UnsupportedOpError(f"conversion needs a network returning one tensor, {where(node)} returns "
                                     f"{type(node.args[0]).__name__}")


SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax)
SOFTMAX_FUNCTIONS = (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax)
SOFTMAX_METHODS = ("softmax", "log_softmax")


def _drop_final_softmax(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    output = next(n for n in gm.graph.nodes if n.op == "output")
    last = output.args[0]
    if not isinstance(last, fx.Node) or len(last.users) != 1:
        return
    if last.op == "call_module":
        is_softmax = isinstance(modules[last.target], SOFTMAX_MODULES)
    elif last.op == "call_function":
        is_softmax = last.target in SOFTMAX_FUNCTIONS
    else:
        is_softmax = last.op == "call_method" and last.target in SOFTMAX_METHODS
    if is_softmax:
        last.replace_all_uses_with(last.args[0])
        gm.graph.erase_node(last)


def _remove_dropout(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if op_kind(node, modules) == "dropout":
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


def _out_of_place_additions(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if op_kind(node, modules) == "add":
            node.op, node.target = "call_function", operator.add
            node.args, node.kwargs = (node.args[0], node.kwargs.get("other", node.args[1] if len(node.args) > 1 else None)), {}


def _activation_module(node: fx.Node, modules) -> nn.Module:
    """A fresh module computing the activation of ``node``."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, QCFS):
            return copy.deepcopy(m)
        if isinstance(m, nn.ReLU):
            return nn.ReLU()
        if isinstance(m, nn.ReLU6):
            return nn.Hardtanh(0.0, 6.0)
        return nn.Hardtanh(0.0, float(m.max_val))
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return nn.ReLU()
    if node.op == "call_function" and node.target in (F.relu, torch.relu, torch.relu_, F.relu_):
        return nn.ReLU()
    _, high = clamp_bounds(node)
    return nn.ReLU() if high is None else nn.Hardtanh(0.0, high)


def _activations_as_own_modules(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    taken: set[str] = set()
    for node in list(gm.graph.nodes):
        if op_kind(node, modules) != "activation":
            continue
        module = _activation_module(node, modules)
        own = node.target if node.op == "call_module" else None
        name = _unique(own or node.name, modules, taken, own)
        _replace_with_module(gm, node, name, module, (node.args[0],))


def _maxpools_as_own_modules(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    taken: set[str] = set()
    for node in list(gm.graph.nodes):
        if op_kind(node, modules) != "maxpool":
            continue
        if node.op == "call_module":
            module = copy.deepcopy(modules[node.target])
            name = _unique(node.target, modules, taken, node.target)
        else:
            module = _maxpool_from_call(node)
            name = _unique(node.name, modules, taken)
        _replace_with_module(gm, node, name, module, (node.args[0],))


def _maxpool_from_call(node: fx.Node) -> nn.Module:
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
    defaults = (None, None, 0, 1, False)
    values = {n: (node.args[i + 1] if len(node.args) > i + 1 else node.kwargs.get(n, d))
              for i, (n, d) in enumerate(zip(names, defaults))}
    cls = {F.max_pool1d: nn.MaxPool1d, F.max_pool2d: nn.MaxPool2d, F.max_pool3d: nn.MaxPool3d}[node.target]
    return cls(**values)


def _unique(base: str, modules: dict, taken: set, own: str | None = None) -> str:
    """A module path for one call site: ``own`` (the module it called) if no other site took it, else a free one."""
    name, k = base, 1
    while name in taken or (name in modules and name != own):
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _replace_with_module(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module, args: tuple) -> None:
    if node.op == "call_module" and node.target == name:
        gm.add_submodule(name, module)
        node.args, node.kwargs = args, {}
        return
    gm.add_submodule(name, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, args)
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _pool_after_activation(gm: fx.GraphModule) -> None:
    """``act(maxpool(z))`` -> ``maxpool(act(z))``, so the pool sees spikes and the neurons see currents."""
    modules = dict(gm.named_modules())
    for pool in list(gm.graph.nodes):
        if op_kind(pool, modules) != "maxpool" or len(pool.users) != 1:
            continue
        act = next(iter(pool.users))
        if op_kind(act, modules) != "activation":
            continue
        source = pool.args[0]
        if isinstance(source, fx.Node) and op_kind(source, modules) == "activation":
            continue
        later_users = list(act.users)
        pool.prepend(act)
        act.args = (source,)
        pool.args = (act,)
        for user in later_users:
            user.replace_input_with(act, pool)
