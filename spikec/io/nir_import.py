"""Build a spikec network from a NIR graph (``from_nir``) or file (``read_nir``).

The result is a per-sample ``nn.Sequential`` of torch layers and ``spikec.IF`` / ``spikec.LIF``
neurons, named after the NIR nodes; run it with :class:`spikec.MultiStep` or wrap it in a
:class:`spikec.SpikingClassifier`. Neurons are stepped with the conventions in
:mod:`spikec.io.nir_common` (the ones norse and snntorch use), derived in ``docs/nir.md``.
"""
from __future__ import annotations

import keyword
import os
import re
from collections import OrderedDict

import nir
import numpy as np
import torch
from torch import nn

from spikec.io.nir_common import DEFAULT_DT, SUPPORTED_IMPORT, NIRImportError, inclusive_threshold
from spikec.neurons import IF, LIF


def read_nir(path: str | os.PathLike) -> nir.NIRGraph:
    """The graph in a NIR file; a missing, truncated or foreign file gives a one-line :class:`NIRImportError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NIRImportError(f"cannot read NIR file '{path}': no such file")
    try:
        import h5py

        with h5py.File(path, "r") as f:
            if "node" not in f:
                raise NIRImportError(f"'{path}' is an HDF5 file but not a NIR graph (no 'node' group)")
    except NIRImportError:
        raise
    except OSError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NIRImportError(f"cannot read NIR file '{path}': not a readable HDF5 file ({reason})") from exc
    try:
        # type_check=False: graphs written by other tools often carry shapes that fail NIR's
        # type inference (a batch dimension in Input, scalar neuron parameters); none are needed here.
        return nir.read(path, type_check=False)
    except Exception as exc:  # nir raises assertion, key and value errors for malformed files
        reason = str(exc).splitlines()[0] if str(exc) else "malformed graph"
        raise NIRImportError(f"cannot read NIR file '{path}': {type(exc).__name__}: {reason}") from exc


def from_nir(graph: nir.NIRGraph | str | os.PathLike, *, dt: float | None = None) -> nn.Sequential:
    """A per-sample spikec network equivalent to ``graph`` (or to the NIR file at that path).

    ``dt`` is the time step LIF nodes are stepped with (``beta = 1 - dt / tau``); by default the
    ``dt`` in the graph's metadata (written by spikec), else 1e-4, the step snntorch exports with.
    A norse graph needs the ``dt`` it was exported with.
    """
    if not isinstance(graph, nir.NIRGraph):
        graph = read_nir(graph)
    if dt is None:
        dt = float(np.asarray((graph.metadata or {}).get("dt", DEFAULT_DT)))
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    for name in _chain(graph):
        node = graph.nodes[name]
        module = _convert(name, node, dt)
        key = _module_name(name, layers)
        layers[key] = module
    return nn.Sequential(layers)


def _chain(graph: nir.NIRGraph) -> list[str]:
    """Names of the nodes between Input and Output, in order; other topologies are refused."""
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise NIRImportError(f"the graph has {len(inputs)} Input nodes; spikec imports graphs with exactly one")
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    pred: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise NIRImportError(f"edge ({a!r}, {b!r}) names a node that is not in the graph")
        succ[a].append(b)
        pred[b].append(a)
    order, current, seen = [], inputs[0], {inputs[0]}
    while True:
        if len(succ[current]) != 1:
            raise NIRImportError(
                f"node '{current}' feeds {len(succ[current])} nodes; spikec imports chains (each node feeding the next)"
            )
        current = succ[current][0]
        if current in seen:
            raise NIRImportError(f"node '{current}' is reached twice: recurrent graphs are not supported")
        seen.add(current)
        if len(pred[current]) != 1:
            raise NIRImportError(f"node '{current}' has {len(pred[current])} inputs; spikec imports chains")
        if isinstance(graph.nodes[current], nir.Output):
            break
        order.append(current)
    if len(seen) != len(graph.nodes):
        rest = sorted(set(graph.nodes) - seen)
        raise NIRImportError(f"nodes {rest} are not on the Input-to-Output chain; spikec imports chains")
    return order


def _module_name(name: str, taken) -> str:
    """The NIR name as a module name torch.fx can write into code ("if" -> "if_", "a.b" -> "a_b")."""
    base = re.sub(r"\W", "_", name) or "node"
    if keyword.iskeyword(base):
        base += "_"
    key, i = base, 1
    while key in taken:
        key, i = f"{base}_{i}", i + 1
    return key


def _array(node_name: str, node: nir.NIRNode, field: str) -> np.ndarray:
    value = getattr(node, field)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise NIRImportError(f"node '{node_name}' ({type(node).__name__}): {field} has non-finite values")
    return arr


def _tensor(node: nir.NIRNode, field: str) -> torch.Tensor:
    value = getattr(node, field)
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32).cpu().clone()
    return torch.as_tensor(np.asarray(value, dtype=np.float32)).clone()


def _ints(value) -> tuple[int, ...] | str:
    """A pair of ints (or a padding string) from a number, array or tuple as NIR files hold them."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return value
    arr = np.atleast_1d(np.asarray(value)).astype(int).tolist()
    return tuple(arr) if len(arr) > 1 else (arr[0], arr[0])


def _convert(name: str, node: nir.NIRNode, dt: float) -> nn.Module:
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = _tensor(node, "weight")
        if weight.dim() != 2:
            raise NIRImportError(f"node '{name}' ({type(node).__name__}): weight must be 2-D, got shape {tuple(weight.shape)}")
        has_bias = isinstance(node, nir.Affine) and node.bias is not None
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if has_bias:
                layer.bias.copy_(_tensor(node, "bias").reshape(-1))
        return layer
    if isinstance(node, nir.Conv2d):
        return _conv2d(name, node)
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        kernel, stride, padding = (_ints(getattr(node, f)) for f in ("kernel_size", "stride", "padding"))
        # the sum of a window is its average with divisor 1 (zero padding counted, like NIR's sum)
        divisor = 1 if isinstance(node, nir.SumPool2d) else None
        return nn.AvgPool2d(kernel, stride, padding, divisor_override=divisor)
    if isinstance(node, nir.Flatten):
        # NIR dimensions exclude the batch: NIR dim d >= 0 is torch dim d + 1
        shift = lambda d: int(d) + 1 if int(d) >= 0 else int(d)  # noqa: E731
        return nn.Flatten(shift(node.start_dim), shift(node.end_dim))
    if isinstance(node, nir.IF):
        return _if(name, node)
    if isinstance(node, nir.LIF):
        return _lif(name, node, dt)
    if isinstance(node, nir.CubaLIF):
        raise NIRImportError(f"node '{name}' (CubaLIF): spikec neurons have no synaptic current state; only IF and LIF import")
    raise NIRImportError(f"node '{name}' ({type(node).__name__}) is not supported; spikec imports {SUPPORTED_IMPORT}")


def _conv2d(name: str, node: nir.Conv2d) -> nn.Conv2d:
    weight = _tensor(node, "weight")
    if weight.dim() != 4:
        raise NIRImportError(f"node '{name}' (Conv2d): weight must be 4-D, got shape {tuple(weight.shape)}")
    groups = int(np.asarray(node.groups))
    layer = nn.Conv2d(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=_ints(node.stride),
        padding=_ints(node.padding),
        dilation=_ints(node.dilation),
        groups=groups,
        bias=True,
    )
    with torch.no_grad():
        layer.weight.copy_(weight)
        bias = node.bias if node.bias is not None else np.zeros(weight.shape[0])
        layer.bias.copy_(torch.as_tensor(np.asarray(bias, dtype=np.float32)).reshape(-1))
    return layer


def _reset_to_zero(name: str, node: nir.NIRNode) -> None:
    if node.v_reset is not None and np.any(_array(name, node, "v_reset") != 0):
        raise NIRImportError(
            f"node '{name}' ({type(node).__name__}): v_reset != 0 is not supported; spikec neurons reset to 0"
        )


def _threshold(values: np.ndarray) -> torch.Tensor:
    """NIR ``v > t`` as spikec ``v >= thr``; one number when all neurons share it."""
    thr = inclusive_threshold(values)
    if thr.size and np.all(thr == thr.flat[0]):
        return torch.tensor(float(thr.flat[0]))
    return torch.as_tensor(thr)


def _positive(name: str, node: nir.NIRNode, field: str, values: np.ndarray) -> None:
    if np.any(values <= 0):
        raise NIRImportError(f"node '{name}' ({type(node).__name__}): {field} must be positive")


def _if(name: str, node: nir.IF) -> IF:
    """``v <- v + r I``, fire at ``v > t``, reset to 0  ==  spikec IF with threshold ``t / r``, reset to 0."""
    _reset_to_zero(name, node)
    r = _array(name, node, "r")
    _positive(name, node, "r", r)
    threshold = _array(name, node, "v_threshold") / r
    return IF(threshold=_threshold(threshold), reset="zero")


def _lif(name: str, node: nir.LIF, dt: float) -> LIF:
    """``v <- (1 - dt/tau) v + (dt/tau) r I``, fire at ``v > t``, reset to 0.

    With ``u = v / (r dt/tau)`` this is spikec's ``u <- beta u + I`` with ``beta = 1 - dt/tau``
    and threshold ``t / (r dt/tau)``; the reset to 0 is the same in both.
    """
    _reset_to_zero(name, node)
    if np.any(_array(name, node, "v_leak") != 0):
        raise NIRImportError(f"node '{name}' (LIF): v_leak != 0 is not supported; spikec neurons leak towards 0")
    tau, r = _array(name, node, "tau"), _array(name, node, "r")
    _positive(name, node, "tau", tau)
    _positive(name, node, "r", r)
    step = dt / tau
    if np.any(step >= 1):
        raise NIRImportError(
            f"node '{name}' (LIF): tau={float(tau.min()):g} is not longer than the time step dt={dt:g}; "
            "pass the dt the graph was made for"
        )
    beta = np.unique((1.0 - step).astype(np.float32))
    if beta.size != 1:
        raise NIRImportError(f"node '{name}' (LIF): tau differs between neurons; spikec LIF layers share one leak")
    threshold = _threshold(_array(name, node, "v_threshold") / (step * r))
    if float(beta[0]) == 1.0:  # the leak vanishes in float32: an IF neuron (spikec's if_as="LIF" encoding)
        return IF(threshold=threshold, reset="zero")
    return LIF(beta=float(beta[0]), threshold=threshold, reset="zero")
