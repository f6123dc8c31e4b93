"""Multi-step execution: stateless layers run once on the merged ``[T*B, ...]`` batch.

:class:`MultiStep` traces a per-sample network with ``torch.fx`` (spiking layers as leaves) and
wraps each spiking layer call in ``unflatten(0, (T, -1))`` / ``flatten(0, 1)``, with ``T`` a graph
input. Conv, Linear, pooling, residual additions and the rest therefore see one big batch, while
every neuron sees ``[T, B, ...]`` and runs its time loop. This is spikingjelly's
``SeqToANNContainer`` idea applied to a whole graph.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from spikec.module import SpikingModule


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, SpikingModule) or super().is_leaf_module(m, qualname)


def fold_time(net: nn.Module) -> fx.GraphModule:
    """The graph of ``net`` taking ``(x_merged [T*B, ...], T)``, with every spiking layer fed ``[T, B, ...]``."""
    try:
        graph = _Tracer().trace(net)
    except Exception as exc:  # fx raises many kinds for untraceable code
        raise TypeError(
            f"cannot trace {type(net).__name__} with torch.fx for multi-step execution: {exc}"
        ) from exc
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise TypeError(f"multi-step execution needs a network with one input, {type(net).__name__} has {len(inputs)}")
    with graph.inserting_after(inputs[0]):
        steps = graph.placeholder("timesteps")
    modules = dict(net.named_modules())
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(modules.get(node.target), SpikingModule):
            with graph.inserting_before(node):
                seq = graph.call_method("unflatten", (node.args[0], 0, (steps, -1)))
            node.args = (seq,) + tuple(node.args[1:])
            with graph.inserting_after(node):
                merged = graph.call_method("flatten", (node, 0, 1))
            node.replace_all_uses_with(merged, delete_user_cb=lambda user: user is not merged)
    graph.lint()
    return fx.GraphModule(net, graph, class_name=f"MultiStep{type(net).__name__}")


class MultiStep(nn.Module):
    """Run ``net`` (written per sample, with spiking layers inside) on time-first input ``[T, B, ...]``.

    Returns the network output with the time axis restored, ``[T, B, ...]``. The wrapped
    network's parameters are shared with ``net``.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = fold_time(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"MultiStep expects time-first input [T, B, ...], got shape {tuple(x.shape)}")
        T = x.shape[0]
        out = self.net(x.flatten(0, 1), T)
        return out.unflatten(0, (T, -1))
