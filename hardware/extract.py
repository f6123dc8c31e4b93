"""What the PE has to run: a TTFS network's layers as plain crossbar operations.

A :class:`~spikec.conversion.ttfs_network.TTFSNetwork` layer integrates
``post(W * pre(values)) + b`` from its synapses (``docs/ttfs.md``). The crossbar can only do one
matrix-vector product per output position, so each layer is rewritten as one *unrolled* op:

- a linear synapse (with its average poolings and reshapes) becomes one dense matrix
  ``W_c = W @ J_pre`` (``J_pre``: the pooling as a matrix);
- a conv synapse with average pooling before it becomes one convolution with a larger kernel:
  pooling ``k_p``/stride ``s_p`` then a ``k``-kernel conv (stride ``s``, padding ``p``, dilation ``d``)
  equals a conv with kernel ``(k-1)*d*s_p + k_p``, stride ``s*s_p``, padding ``p*s_p`` whose taps
  are ``W / k_p^2`` (the input cropped to the pooled extent);
- several synapses from the same window (e.g. a signed input's two populations) stack their rows.

Every rewrite is checked against the TTFS engineer's own ``weighted_op`` on random values; a
layer the PE cannot run (a skip connection integrating over two windows, pooling after a conv)
raises :class:`~spikec.errors.SpikecError` naming it. Max poolings and reshapes of spike times
between layers (:class:`TTFSTimeOp`) stay as they are: digital logic on stored spike times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spikec.conversion.ttfs_layers import TTFSLayer, TTFSReadout, TTFSTimeOp
from spikec.conversion.ttfs_network import TTFSNetwork
from spikec.conversion.ttfs_synapse import Op, apply_linear_op, weighted_op
from spikec.errors import SpikecError


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    crop: tuple[int, int]  # input rows/cols used (the rest feeds nothing)
    out_hw: tuple[int, int]

    @property
    def positions(self) -> int:
        return self.out_hw[0] * self.out_hw[1]


@dataclass(frozen=True)
class PELayer:
    """One spiking layer (or the readout) as an unrolled crossbar op, weights in SNN units.

    ``weight`` is ``[K, rows]``: a linear layer's rows are the flattened source neurons; a conv
    layer's rows are ``C_in * kh * kw`` taps (``torch.nn.functional.unfold`` order) evaluated at
    each of ``positions`` output positions. ``in_shape`` is the per-sample shape of the stacked
    sources, ``out_shape`` that of the layer's neurons.
    """

    name: str
    kind: str  # "linear" | "conv2d"
    weight: torch.Tensor
    bias: torch.Tensor | None
    in_shape: tuple
    out_shape: tuple
    conv: ConvGeometry | None
    readout: bool
    scale: float  # activation (or logit) a full-scale value means
    source_shapes: tuple = ()  # per-sample shapes of the source slots, before stacking

    @property
    def neurons(self) -> int:
        return self.weight.shape[0]

    @property
    def rows(self) -> int:
        return self.weight.shape[1]

    @property
    def positions(self) -> int:
        return 1 if self.conv is None else self.conv.positions

    @property
    def w_max(self) -> float:
        """The layer's conductance scale: largest |weight| or |bias| (1 if all are zero)."""
        m = float(self.weight.abs().max())
        if self.bias is not None:
            m = max(m, float(self.bias.abs().max()))
        return m if m > 0 else 1.0

    def macs(self) -> int:
        """Multiply-accumulates of the unrolled op per inference."""
        return self.neurons * self.rows * self.positions


@dataclass(frozen=True)
class PEStep:
    """One program step: a crossbar layer, or a spike-time op (max pooling, reshape) on stored times."""

    name: str
    layer: PELayer | None
    time_op: Op | None
    inputs: tuple[int, ...]
    output: int


@dataclass(frozen=True)
class PEProgram:
    """The network as the PE runs it: input slots from the encoder, then steps in order."""

    input_slots: int
    input_shape: tuple
    steps: tuple[PEStep, ...]
    ann_macs: int  # multiply-accumulates of the original (not unrolled) weighted ops
    encoder_scale: float = 1.0  # input value that spikes at tau = 0
    encoder_signed: bool = False  # two input populations (x+ and x-)
    ann_params: int = 0  # weights and biases of the original weighted ops

    @property
    def layers(self) -> list[PELayer]:
        return [s.layer for s in self.steps if s.layer is not None]


@torch.no_grad()
def pe_program(snn: TTFSNetwork) -> PEProgram:
    """Rewrite every layer of ``snn`` for the crossbar; raises ``SpikecError`` for what it cannot map."""
    shapes = _slot_shapes(snn)
    steps = []
    ann_macs = 0
    ann_params = 0
    for name, ins, out in snn.program:
        module = snn.ops[name]
        if isinstance(module, TTFSTimeOp):
            steps.append(PEStep(name, None, module.op, tuple(ins), out))
            continue
        if not isinstance(module, (TTFSLayer, TTFSReadout)):
            raise SpikecError(f"hardware: layer {name!r} is a {type(module).__name__}, which the PE cannot run")
        layer, macs = _pe_layer(name, module, [shapes[i] for i in ins], shapes[out])
        ann_macs += macs
        ann_params += sum(s.weight.numel() + (0 if s.bias is None else s.bias.numel()) for s in module.synapses)
        steps.append(PEStep(name, layer, None, tuple(ins), out))
    enc = snn.encoder
    return PEProgram(2 if enc.signed else 1, tuple(snn.input_shape), tuple(steps), ann_macs,
                     float(enc.scale), bool(enc.signed), ann_params)


def _slot_shapes(snn: TTFSNetwork) -> dict[int, tuple]:
    x = torch.zeros(1, *snn.input_shape, dtype=next(snn.parameters()).dtype)
    outputs = snn.run(x)
    shapes = {i: tuple(outputs["encoder"][i].shape[1:]) for i in range(outputs["encoder"].shape[0])}
    for name, _, out in snn.program:
        shapes[out] = tuple(outputs[name].shape[1:])
    return shapes


def _pe_layer(name: str, module, in_shapes: list[tuple], out_shape: tuple) -> tuple[PELayer, int]:
    window = module.window
    synapses = list(module.synapses)
    for s in synapses:
        if s.source_window != window - 1:
            raise SpikecError(
                f"hardware: layer {name!r} integrates a source from window {s.source_window} and fires in window "
                f"{window}; the PE runs only layers fed by the window just before (no skip connections)")
    kinds = {s.spec.kind for s in synapses}
    if len(kinds) != 1 or not kinds <= {"linear", "conv2d"}:
        raise SpikecError(f"hardware: layer {name!r} has synapses of kind {sorted(kinds)} (a skip connection?); "
                          f"the PE maps layers whose synapses are all linear or all conv2d")
    kind = kinds.pop()
    parts = [(_unroll_conv if kind == "conv2d" else _unroll_linear)(name, s, shape, out_shape)
             for s, shape in zip(synapses, in_shapes)]
    weight = torch.cat([p[0] for p in parts], dim=1)
    geometries = {p[2] for p in parts}
    if len(geometries) != 1:
        raise SpikecError(f"hardware: the synapses of layer {name!r} have different geometries; cannot stack their rows")
    conv = geometries.pop()
    biases = [s.bias.detach().to(torch.float64) for s in synapses if s.bias is not None]
    bias = torch.stack(biases).sum(0) if biases else None
    if kind == "conv2d":
        in_shape = (sum(sh[0] for sh in in_shapes),) + tuple(in_shapes[0][1:])
    else:
        in_shape = (sum(math.prod(sh) for sh in in_shapes),)
    layer = PELayer(name, kind, weight, bias, in_shape, tuple(out_shape), conv, isinstance(module, TTFSReadout),
                    float(module.scale), tuple(tuple(s) for s in in_shapes))
    _check_layer(layer, synapses, in_shapes)
    return layer, sum(p[1] for p in parts)


def _unroll_linear(name: str, syn, in_shape: tuple, out_shape: tuple):
    spec = syn.spec
    if any(op.name != "reshape" for op in spec.post):
        raise SpikecError(f"hardware: layer {name!r} pools after its linear op; the PE cannot map that")
    w = syn.weight.detach().to(torch.float64)
    n_in = math.prod(in_shape)
    cols = []
    for start in range(0, n_in, 1024):
        stop = min(n_in, start + 1024)
        eye = torch.zeros(stop - start, n_in, dtype=torch.float64)
        eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        x = eye.reshape(stop - start, *in_shape)
        for op in spec.pre:
            x = apply_linear_op(x, op)
        cols.append(x.reshape(stop - start, -1).t())  # [features, chunk]
    pre = torch.cat(cols, dim=1)  # [features, n_in]
    if pre.shape[0] != w.shape[1]:
        raise SpikecError(f"hardware: layer {name!r}: {pre.shape[0]} features after pooling but weight has {w.shape[1]} inputs")
    macs = w.numel()
    return w @ pre, macs, None


def _unroll_conv(name: str, syn, in_shape: tuple, out_shape: tuple):
    spec = syn.spec
    if any(op.name != "reshape" for op in spec.post):
        raise SpikecError(f"hardware: layer {name!r} pools after its convolution; the PE cannot map that")
    if spec.groups != 1 or isinstance(spec.padding, str):
        raise SpikecError(f"hardware: layer {name!r} uses grouped or string-padded convolution; not mapped")
    w = syn.weight.detach().to(torch.float64)
    K, C, kh, kw = w.shape
    stride, padding, dilation = _pair(spec.stride), _pair(spec.padding), _pair(spec.dilation)
    H, W = in_shape[1], in_shape[2]
    crop = (H, W)
    for op in spec.pre:
        kwargs = dict(op.kwargs)
        if op.name == "reshape":
            if tuple(kwargs["shape"]) != (C, H, W):
                raise SpikecError(f"hardware: layer {name!r} reshapes before its convolution; not mapped")
            continue
        if op.name != "avg_pool2d" or _pair(kwargs.get("padding", 0)) != (0, 0) or kwargs.get("ceil_mode") \
                or kwargs.get("divisor_override") is not None:
            raise SpikecError(f"hardware: layer {name!r} has a {op.name} before its convolution that the PE cannot fold")
        kp = _pair(kwargs["kernel_size"])
        sp = _pair(kwargs["stride"] if kwargs.get("stride") is not None else kwargs["kernel_size"])
        w, stride, padding, dilation, crop, H, W = _fold_pool(w, stride, padding, dilation, kp, sp, H, W)
    out_hw = tuple(out_shape[1:3])
    geom = ConvGeometry((w.shape[2], w.shape[3]), stride, padding, dilation, crop, out_hw)
    macs = K * C * kh * kw * math.prod(out_hw)
    return w.reshape(K, -1), macs, geom


def _fold_pool(w, stride, padding, dilation, kp, sp, H, W):
    """A pooling (kernel ``kp``, stride ``sp``) before the conv, folded into the conv's kernel."""
    K, C, kh, kw = w.shape
    nh = (kh - 1) * dilation[0] * sp[0] + kp[0]
    nw = (kw - 1) * dilation[1] * sp[1] + kp[1]
    out = torch.zeros(K, C, nh, nw, dtype=w.dtype)
    scale = 1.0 / (kp[0] * kp[1])
    for a in range(kh):
        for b in range(kw):
            r, c = a * dilation[0] * sp[0], b * dilation[1] * sp[1]
            out[:, :, r:r + kp[0], c:c + kp[1]] += w[:, :, a:a + 1, b:b + 1] * scale
    Hp = (H - kp[0]) // sp[0] + 1
    Wp = (W - kp[1]) // sp[1] + 1
    crop = ((Hp - 1) * sp[0] + kp[0], (Wp - 1) * sp[1] + kp[1])
    return (out, (stride[0] * sp[0], stride[1] * sp[1]), (padding[0] * sp[0], padding[1] * sp[1]), (1, 1),
            crop, crop[0], crop[1])


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (0, 0)
    return (int(v), int(v))


def unroll_index(layer: PELayer) -> torch.Tensor:
    """``[P, rows]`` index of the source neuron each row of each position reads (``-1``: padding)."""
    n_in = math.prod(layer.in_shape)
    if layer.conv is None:
        return torch.arange(n_in).view(1, n_in)
    g = layer.conv
    C, H, W = layer.in_shape
    ids = torch.arange(n_in, dtype=torch.float64).view(1, C, H, W)[:, :, : g.crop[0], : g.crop[1]]
    if g.padding != (0, 0):
        ids = F.pad(ids, (g.padding[1], g.padding[1], g.padding[0], g.padding[0]), value=-1.0)
    cols = F.unfold(ids, g.kernel, dilation=g.dilation, stride=g.stride)[0]  # [rows, P]
    if cols.shape[-1] != g.positions:
        raise SpikecError(f"hardware: layer {layer.name!r} unrolls to {cols.shape[-1]} positions, expected {g.positions}")
    return cols.t().round().long()


def unroll_inputs(layer: PELayer, x: torch.Tensor, fill: float, index: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position row inputs ``[..., P, rows]`` of ``layer`` from stacked source maps ``[..., *in_shape]``.

    ``fill`` is what a padded row sees (0 for values, ``inf`` for spike times); ``index`` is
    :func:`unroll_index` (computed when not given).
    """
    idx = unroll_index(layer) if index is None else index
    lead = x.shape[: x.dim() - len(layer.in_shape)]
    flat = x.reshape(*lead, -1)
    padded = torch.cat([flat, torch.full((*lead, 1), fill, dtype=x.dtype)], dim=-1)
    safe = torch.where(idx < 0, torch.full_like(idx, flat.shape[-1]), idx)
    return padded[..., safe]


def fold_outputs(layer: PELayer, y: torch.Tensor) -> torch.Tensor:
    """Per-position neuron outputs ``[..., P, K]`` back to the layer's neuron map ``[..., *out_shape]``."""
    lead = y.shape[:-2]
    if layer.conv is None:
        return y.reshape(*lead, *layer.out_shape)
    h, w = layer.conv.out_hw
    return y.reshape(*lead, h, w, layer.neurons).movedim(-1, -3)


def stack_sources(layer: PELayer, sources: list[torch.Tensor]) -> torch.Tensor:
    """Sources ``[B, ...]`` stacked the way ``layer``'s rows expect them (channels, or flattened features)."""
    if len(sources) == 1:
        return sources[0].reshape(sources[0].shape[0], *layer.in_shape)
    if layer.kind == "conv2d":
        return torch.cat(sources, dim=1)
    return torch.cat([s.reshape(s.shape[0], -1) for s in sources], dim=1)


def layer_charge_unrolled(layer: PELayer, values: torch.Tensor, weight: torch.Tensor | None = None,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., P, K]`` charge of unrolled ``values [..., P, rows]``: ``values @ W^T + b`` (crossbar MVM)."""
    w = layer.weight if weight is None else weight
    b = layer.bias if bias is None else bias
    q = values @ w.t()
    return q if b is None else q + b


def _check_layer(layer: PELayer, synapses, in_shapes) -> None:
    """The unrolled op must give the same charge as the TTFS layer's own synapse ops."""
    gen = torch.Generator().manual_seed(1234)
    values = [torch.rand(2, *shape, generator=gen, dtype=torch.float64) for shape in in_shapes]
    expected = None
    for v, s in zip(values, synapses):
        q = weighted_op(v, s.weight.detach().to(torch.float64),
                        None if s.bias is None else s.bias.detach().to(torch.float64), s.spec)
        expected = q if expected is None else expected + q
    rows = unroll_inputs(layer, stack_sources(layer, values), 0.0)
    got = fold_outputs(layer, layer_charge_unrolled(layer, rows))
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-9, atol=1e-9):
        raise SpikecError(f"hardware: cannot unroll layer {layer.name!r} onto the crossbar "
                          f"(its pooling/stride combination does not fold into one convolution)")
