"""Batch-norm folding: merge every eval-mode BatchNorm into an adjacent Conv/Linear.

In eval mode a batch norm is a per-channel affine map ``y = a*x + c`` with
``a = gamma / sqrt(running_var + eps)`` and ``c = beta - a * running_mean``.

- BN right after a Conv/Linear (before the activation) folds backward:
  ``W <- a*W`` per output channel, ``b <- a*b + c``.
- BN anywhere else (after the activation, or on the input) folds forward into the Conv/Linear
  layers that consume it, through dropout, reshapes, average pooling and (when every ``a > 0``)
  max pooling: ``W <- W*a`` per input channel and the shift becomes ``W @ c`` in the bias. A
  zero-padded convolution sees the shift only inside the image, so there the shift becomes an
  :class:`~spikec.conversion.shift_current.InputShiftCurrent` added to the convolution's output.

Both are exact up to float rounding. A BN that cannot be folded either way stays in the graph
(rate conversion then reports it with its module path).
"""
from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn

from spikec.conversion.graph import BATCHNORMS, MAXPOOL_MODULES, WEIGHTED, op_kind, trace
from spikec.conversion.shift_current import InputShiftCurrent


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """An eval-mode copy of ``model`` as an fx graph with its batch norms merged into Conv/Linear layers.

    ``model`` itself is not changed. The result computes the same function as ``model.eval()``.
    """
    gm = trace(copy.deepcopy(model).eval())
    modules = dict(gm.named_modules())
    calls = _call_counts(gm)
    with torch.no_grad():
        for node in list(gm.graph.nodes):
            if _foldable_bn(node, modules) and _folds_backward(node, modules, calls):
                _fold_into_output(modules[node.args[0].target], modules[node.target])
                _remove(gm, node)
        for node in list(gm.graph.nodes):
            if _foldable_bn(node, modules):
                _fold_forward(gm, node, modules, calls)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm.eval()


def bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, c)`` with ``bn(x) = a*x + c`` per channel in eval mode."""
    a = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        a = a * bn.weight
    c = -a * bn.running_mean
    if bn.bias is not None:
        c = c + bn.bias
    return a.detach(), c.detach()


def _call_counts(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


def _foldable_bn(node: fx.Node, modules) -> bool:
    if node.op != "call_module" or not isinstance(modules.get(node.target), BATCHNORMS):
        return False
    bn = modules[node.target]
    return bn.running_mean is not None and bn.running_var is not None


def _folds_backward(node: fx.Node, modules, calls) -> bool:
    src = node.args[0]
    if not (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules[src.target], WEIGHTED)):
        return False
    layer, bn = modules[src.target], modules[node.target]
    out_features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return len(src.users) == 1 and calls[src.target] == 1 and out_features == bn.num_features


def _remove(gm: fx.GraphModule, node: fx.Node) -> None:
    node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)


def _fold_into_output(layer: nn.Module, bn: nn.Module) -> None:
    a, c = bn_affine(bn)
    layer.weight.mul_(a.view(-1, *([1] * (layer.weight.dim() - 1))))
    if layer.bias is None:
        layer.bias = nn.Parameter(c.clone())
    else:
        layer.bias.copy_(layer.bias * a + c)


def _fold_forward(gm: fx.GraphModule, bn_node: fx.Node, modules, calls) -> None:
    a, c = bn_affine(modules[bn_node.target])
    consumers = _consumers(bn_node, modules, calls, a, flattened=False)
    if consumers is None:
        return
    for node, flattened in consumers:
        _fold_into_input(gm, node, modules[node.target], a, c, flattened)
    _remove(gm, bn_node)


def _consumers(node: fx.Node, modules, calls, a, flattened: bool):
    """``[(weighted node, reached through a reshape)]`` fed by ``node``, or None if some path is not affine-transparent."""
    found = []
    for user in node.users:
        kind = op_kind(user, modules)
        if kind == "shape":
            continue
        if user.args[:1] != (node,):
            return None
        if kind == "weighted":
            if calls[user.target] != 1 or not _channels_match(modules[user.target], a, flattened):
                return None
            found.append((user, flattened))
            continue
        if kind == "maxpool" and not (user.op == "call_module" and isinstance(modules[user.target], MAXPOOL_MODULES)
                                      and bool((a > 0).all())):
            return None
        if kind == "avgpool" and not _commutes_with_shift(user, modules):
            return None
        if kind not in ("dropout", "reshape", "avgpool", "maxpool"):
            return None
        more = _consumers(user, modules, calls, a, flattened or kind == "reshape")
        if more is None:
            return None
        found.extend(more)
    return found


def _commutes_with_shift(node: fx.Node, modules) -> bool:
    """Average pooling commutes with ``a*x + c`` unless zero padding enters the average."""
    if node.op != "call_module":
        return node.target in ("mean", torch.mean)
    m = modules[node.target]
    padding = getattr(m, "padding", 0)
    return all(p == 0 for p in (padding if isinstance(padding, tuple) else (padding,))) or not getattr(
        m, "count_include_pad", True
    )


def _channels_match(layer: nn.Module, a: torch.Tensor, flattened: bool) -> bool:
    inputs = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
    if isinstance(layer, nn.Linear):
        return inputs % a.numel() == 0 if flattened else inputs == a.numel()
    return not flattened and inputs == a.numel()


def _fold_into_input(gm: fx.GraphModule, node: fx.Node, layer: nn.Module, a, c, flattened: bool) -> None:
    W = layer.weight
    if isinstance(layer, nn.Linear):
        reps = layer.in_features // a.numel() if flattened else 1
        a_in, c_in = a.repeat_interleave(reps), c.repeat_interleave(reps)
        shift = W @ c_in
        W.mul_(a_in)
        _add_bias(layer, shift)
        return
    a_w, c_w = _per_weight(layer, a), _per_weight(layer, c)
    spatial = W.dim() - 2
    zero_padded = layer.padding_mode == "zeros" and (layer.padding == "same" or any(
        p != 0 for p in (layer.padding if isinstance(layer.padding, tuple) else (layer.padding,))
    ))
    if zero_padded:
        _insert_shift_current(gm, node, InputShiftCurrent(layer, W, c))
    else:
        _add_bias(layer, (W * c_w.view(*c_w.shape, *([1] * spatial))).flatten(1).sum(1))
    W.mul_(a_w.view(*a_w.shape, *([1] * spatial)))


def _per_weight(conv: nn.Module, per_input: torch.Tensor) -> torch.Tensor:
    """Per-input-channel values laid out like the weight's first two dims ``[out, in/groups]``."""
    g = conv.groups
    in_pg, out_pg = conv.in_channels // g, conv.out_channels // g
    return per_input.view(g, 1, in_pg).expand(g, out_pg, in_pg).reshape(conv.out_channels, in_pg)


def _add_bias(layer: nn.Module, extra: torch.Tensor) -> None:
    if layer.bias is None:
        layer.bias = nn.Parameter(extra.clone())
    else:
        layer.bias.add_(extra)


def _insert_shift_current(gm: fx.GraphModule, node: fx.Node, shift: InputShiftCurrent) -> None:
    name = _free_name(gm, f"{node.target.replace('.', '_')}_input_shift")
    gm.add_submodule(name, shift)
    with gm.graph.inserting_after(node):
        current = gm.graph.call_module(name, (node.args[0],))
    with gm.graph.inserting_after(current):
        total = gm.graph.call_function(operator.add, (node, current))
    node.replace_all_uses_with(total, delete_user_cb=lambda user: user is not total)


def _free_name(gm: fx.GraphModule, base: str) -> str:
    names = dict(gm.named_modules())
    candidate, k = base, 1
    while candidate in names:
        candidate, k = f"{base}_{k}", k + 1
    return candidate
