"""Write a spikec network as a NIR graph (``to_nir``) and a NIR graph to a file (``write_nir``).

Every node is written so that norse (``norse.torch.from_nir(graph, dt=1e-4)``) and snntorch
(``snntorch.import_nir.import_from_nir``) step it exactly like spikec; the derivation of each
mapping is in ``docs/nir.md``. What NIR cannot say (soft reset, an initial membrane, other neuron
kinds) is refused with a :class:`NIRExportError` naming the layer, never written approximately.
"""
from __future__ import annotations

import os
import tempfile

import nir
import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from spikec import __version__
from spikec.errors import SpikecError
from spikec.io.nir_common import (
    DEFAULT_DT,
    IF_AS_LIF_STEPS,
    SUPPORTED_EXPORT,
    NIRExportError,
    strict_threshold,
)
from spikec.io.nir_trace import Op, sample_graph
from spikec.neurons import LIF

IF_ENCODINGS = ("IF", "LIF")


def to_nir(
    model: nn.Module,
    input_shape: tuple[int, ...] | None = None,
    *,
    dt: float = DEFAULT_DT,
    if_as: str = "IF",
) -> nir.NIRGraph:
    """The NIR graph of ``model`` (a per-sample net, a MultiStep or a SpikingClassifier).

    - ``input_shape``: one sample's shape without batch, e.g. ``(1, 8, 8)``; inferred only when
      the first layer is Linear.
    - ``dt``: the time step the LIF time constants are written for (``tau = dt / (1 - beta)``);
      stored in the graph's metadata. The default 1e-4 is the step snntorch's importer assumes.
    - ``if_as``: ``"IF"`` writes IF neurons as ``nir.IF`` (exact in norse and spikec);
      ``"LIF"`` writes them as a ``nir.LIF`` with a 2**26-step time constant, whose leak vanishes
      in float32, because snntorch <= 1.0 imports ``nir.IF`` as a leaky neuron.

    A SpikingClassifier's encoding, time steps and readout are not part of NIR's semantics; they
    are stored as graph metadata for information.
    """
    if if_as not in IF_ENCODINGS:
        raise ValueError(f"if_as must be one of {IF_ENCODINGS}, got {if_as!r}")
    if not float(dt) > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    graph = sample_graph(model, input_shape)
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(graph.input_shape))}
    edges: list[tuple[str, str]] = []
    # NIR value of each op = spikec value * scale: a sum pool written for an average pool leaves
    # a factor that the next weighted layer or neuron absorbs.
    scale = {"input": 1.0}
    out_shape = {"input": graph.input_shape}
    for op in graph.ops:
        node, scale[op.name] = _convert(op, scale[op.input], float(dt), if_as)
        nodes[op.name] = node
        edges.append((op.input, op.name))
        out_shape[op.name] = op.out_shape
    if graph.output == "input":
        raise NIRExportError(f"{type(model).__name__}: the network has no layer to export")
    if scale[graph.output] != 1.0:
        last = next(op.source for op in graph.ops if op.name == graph.output)
        raise NIRExportError(
            f"layer '{last}': an AvgPool2d is written as a NIR SumPool2d whose 1/k scale must be absorbed "
            "by a following Linear, Conv2d or neuron, but it reaches the network output"
        )
    nodes["output"] = nir.Output(output_type=np.array(out_shape[graph.output]))
    edges.append((graph.output, "output"))
    metadata = {"dt": float(dt), "source": f"spikec {__version__}", **graph.info}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write_nir(graph: nir.NIRGraph, path: str | os.PathLike) -> None:
    """Write ``graph`` to ``path`` with ``nir.write``; the file is complete or absent (temp name + rename)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise SpikecError(f"cannot write NIR file '{path}': {exc.strerror or exc}") from exc
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _convert(op: Op, s_in: float, dt: float, if_as: str) -> tuple[nir.NIRNode, float]:
    """``(NIR node, scale of its output)`` for one op fed a value scaled by ``s_in``."""
    m = op.module
    if m is None or isinstance(m, nn.Flatten):
        start, end = op.flatten_dims if m is None else (m.start_dim, m.end_dim)
        return _flatten(op, start, end), s_in
    if isinstance(m, nn.Linear):
        return nir.Affine(weight=_weight(m, s_in), bias=_bias(m)), 1.0
    if isinstance(m, nn.Conv2d):
        return _conv2d(op, m, s_in), 1.0
    if isinstance(m, nn.AvgPool2d):
        return _avgpool(op, m, s_in)
    if isinstance(m, LIF):  # spikec.IF is a LIF with beta = 1
        return _neuron(op, m, s_in, dt, if_as), 1.0
    hint = "; fold it into the layer before (spikec.conversion.fold.fold_batchnorm)" if isinstance(m, _BatchNorm) else ""
    raise NIRExportError(
        f"layer '{op.source}' ({type(m).__name__}) cannot be written as NIR{hint}; supported: {SUPPORTED_EXPORT}"
    )


def _weight(m: nn.Module, s_in: float) -> np.ndarray:
    w = m.weight.detach().to(torch.float32).cpu().numpy()
    return w if s_in == 1.0 else w / np.float32(s_in)


def _bias(m: nn.Module) -> np.ndarray:
    if m.bias is None:  # Affine with zero bias: norse imports nir.Linear with its shape swapped
        return np.zeros(m.weight.shape[0], dtype=np.float32)
    return m.bias.detach().to(torch.float32).cpu().numpy()


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _flatten(op: Op, start: int, end: int) -> nir.Flatten:
    if start == 0 or (start < 0 and start + len(op.in_shape) + 1 <= 0):
        raise NIRExportError(f"layer '{op.source}': flatten(start_dim={start}) merges the batch dimension; use start_dim=1")
    # NIR dimensions count from the first per-sample dimension: torch dim d (d > 0) is NIR dim d - 1.
    shift = lambda d: d - 1 if d > 0 else d  # noqa: E731
    return nir.Flatten(input_type={"input": np.array(op.in_shape)}, start_dim=shift(start), end_dim=shift(end))


def _conv2d(op: Op, m: nn.Conv2d, s_in: float) -> nir.Conv2d:
    if m.padding_mode != "zeros":
        raise NIRExportError(f"layer '{op.source}': padding_mode={m.padding_mode!r} has no NIR equivalent (only zero padding)")
    padding = m.padding if isinstance(m.padding, str) else _pair(m.padding)
    return nir.Conv2d(
        input_shape=tuple(op.in_shape[1:]),
        weight=_weight(m, s_in),
        stride=_pair(m.stride),
        padding=padding,
        dilation=_pair(m.dilation),
        groups=int(m.groups),
        bias=_bias(m),
    )


def _avgpool(op: Op, m: nn.AvgPool2d, s_in: float) -> tuple[nir.SumPool2d, float]:
    """AvgPool2d as SumPool2d: norse cannot import nir.AvgPool2d, both peers import SumPool2d."""
    if m.ceil_mode:
        raise NIRExportError(f"layer '{op.source}': AvgPool2d(ceil_mode=True) has no NIR equivalent")
    if _pair(m.padding) != (0, 0):
        raise NIRExportError(
            f"layer '{op.source}': AvgPool2d with padding is not exported (norse and snntorch ignore SumPool2d padding)"
        )
    kernel = _pair(m.kernel_size)
    stride = kernel if m.stride is None else _pair(m.stride)
    divisor = m.divisor_override or kernel[0] * kernel[1]
    node = nir.SumPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array([0, 0]))
    return node, s_in * float(divisor)


def _neuron(op: Op, m: LIF, s_in: float, dt: float, if_as: str) -> nir.NIRNode:
    kind = type(m).__name__  # an IF or LIF: sample_graph refuses other spiking layers
    if m.reset_mode != "zero":
        raise NIRExportError(
            f"layer '{op.source}' ({kind}): reset='{m.reset_mode}' (soft reset) cannot be written as NIR, whose IF and "
            "LIF reset the membrane to v_reset; only reset='zero' exports"
        )
    v_init = torch.as_tensor(m.v_init).detach()
    if bool((v_init != 0).any()):
        raise NIRExportError(
            f"layer '{op.source}' ({kind}): v_init != 0 cannot be written as NIR, which has no initial membrane state"
        )
    shape = op.out_shape
    try:
        thr = torch.broadcast_to(m.threshold.detach().to(torch.float32).cpu(), shape).numpy()
    except RuntimeError as exc:
        raise NIRExportError(
            f"layer '{op.source}': threshold of shape {tuple(m.threshold.shape)} does not fit the layer shape {shape}"
        ) from exc
    theta = strict_threshold(thr).astype(np.float64) * s_in  # exact for the power-of-two scales of 2x2 pools
    beta = float(m.beta.detach())
    ones, zeros = np.ones(shape), np.zeros(shape)
    if beta == 1.0 and if_as == "IF":
        f32 = np.float32
        return nir.IF(r=ones.astype(f32), v_threshold=theta.astype(f32), v_reset=zeros.astype(f32))
    # LIF: v_nir = (1 - beta) v_spikec with r = 1, so norse (which ignores r) and snntorch agree.
    leak = 1.0 / IF_AS_LIF_STEPS if beta == 1.0 else 1.0 - beta
    return nir.LIF(tau=ones * (dt / leak), r=ones, v_leak=zeros, v_threshold=theta * leak, v_reset=zeros)
