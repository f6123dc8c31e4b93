"""What the PE has to run: a TTFS network's layers as plain crossbar operations.

A :class:`~spikec.conversion.ttfs_network.TTFSNetwork` layer integrates ``sum_s post_s(W_s *
pre_s(values_s)) + b`` over its synapses ``s`` (``docs/ttfs.md``). The crossbar does one
matrix-vector product per output position, so each layer is rewritten as one *unrolled* op: a
weight ``W [K, rows]`` shared by all ``P`` output positions and an index ``[P, rows]`` saying which
source neuron each row reads at each position (``-1``: padding, reads nothing):

- a linear layer (any synapses, with their average poolings and reshapes) becomes one dense
  matrix found by probing the synapses with unit inputs (``P = 1``);
- a conv synapse with average pooling before it becomes one convolution with a larger kernel:
  pooling ``k_p``/stride ``s_p`` then a ``k``-kernel conv (stride ``s``, padding ``p``, dilation ``d``)
  equals a conv with kernel ``(k-1)*d*s_p + k_p``, stride ``s*s_p``, padding ``p*s_p`` whose taps
  are ``W / k_p^2`` (the input cropped to the pooled extent);
- average pooling *after* a conv (``k_p``/``s_p``) likewise: kernel ``(k_p-1)*s + (k-1)*d + 1``,
  stride ``s*s_p``, same padding, taps ``W / k_p^2`` summed over the pooling window;
- a grouped or depthwise conv becomes the dense conv with zeros outside each group (its rows and
  columns are in group order, so the mapping leaves the empty off-diagonal tiles out);
- a skip connection (a synapse whose source fired in an earlier window than the one just before)
  gets its own rows: an identity shortcut is a ``1x1`` conv with weight ``gain * I``, a projection
  its own conv. On the PE its source's spike times are replayed from the spike-time buffer
  during the layer's input window: the charge ``w * (1 - tau)`` does not depend on when the
  window is, because the neurons are non-leaky and cannot fire before their own window;
- rows whose weights are all zero (pruned inputs) are dropped, and so are rows that read only
  *silent* source neurons;
- a neuron that can never be positive is *silent* and is left off the chip: its weights to the
  rows kept are all zero and its bias is not positive (a channel removed by channel pruning, which
  zeroes its weights and bias, or one whose every input is silent). Its value is 0 (it fires at
  the end of its window or never), so the rows that would read it integrate nothing
  (``w * (1 - tau) = 0``) and are dropped from the layers after it. It gets no column pair, ramp
  cells, integrator or comparator; :func:`fold_outputs` puts it back into the layer's neuron map
  as never firing. The readout keeps all its neurons (they are the scores). Silent neurons do not
  count towards a time-to-accept fraction, which counts the neurons on the chip.

Every rewrite is checked against the TTFS engine's own ``weighted_op`` on random values; a layer
the PE cannot run raises :class:`~spikec.errors.SpikecError` naming it. Max poolings and
reshapes of spike times between layers (:class:`TTFSTimeOp`) stay as they are: digital logic on
stored spike times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spikec.conversion.ttfs_layers import TTFSLayer, TTFSReadout, TTFSTimeOp
from spikec.conversion.ttfs_network import TTFSNetwork
from spikec.conversion.ttfs_synapse import Op, apply_linear_op, apply_time_op, weighted_op
from spikec.errors import SpikecError

_PROBE_CHUNK = 1024


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
class RowGroup:
    """The rows ``start:stop`` of a layer that carry one synapse.

    ``skip``: its source fired before the window just before the layer's, so its spike times are
    replayed from the spike-time buffer (a residual shortcut); ``kind`` is the synapse's
    (``"gain"`` for an identity shortcut).
    """

    source: int  # index into the step's inputs
    start: int
    stop: int
    kind: str
    skip: bool

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class PELayer:
    """One spiking layer (or the readout) as an unrolled crossbar op, weights in SNN units.

    ``weight`` is ``[K, rows]``; row ``r`` at output position ``p`` reads source neuron
    ``index[p, r]`` of the stacked sources (flattened and concatenated in input order; ``-1`` =
    padding). ``in_shape`` is the per-sample shape of the stacked sources, ``out_shape`` that of
    the layer's neurons. Hand-built layers may leave ``index`` out: it is then derived from
    ``conv`` (or ``0..rows-1`` for a linear layer).
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
    index: torch.Tensor | None = None  # [P, rows] long
    groups: tuple[RowGroup, ...] = ()
    dense_rows: int = 0  # rows before all-zero rows were dropped (0: none dropped / not recorded)
    channels: torch.Tensor | None = None  # [K] long: the out_shape channel (conv) or neuron (linear) of each
    # crossbar neuron, when silent ones were left off the chip; None: all, in order

    @property
    def neurons(self) -> int:
        """Neurons on the chip (column pairs): silent ones left off are not counted."""
        return self.weight.shape[0]

    @property
    def map_neurons(self) -> int:
        """Neurons per position of the layer's neuron map, silent ones included."""
        return int(self.out_shape[0]) if self.kind == "conv2d" else math.prod(self.out_shape)

    @property
    def silent(self) -> torch.Tensor:
        """``out_shape`` bool: the neurons left off the chip (never fire)."""
        on = torch.zeros(self.map_neurons, dtype=torch.bool)
        on[self.channels if self.channels is not None else slice(None)] = True
        if self.kind == "conv2d":
            return (~on).view(-1, 1, 1).expand(tuple(self.out_shape)).clone()
        return (~on).reshape(tuple(self.out_shape))

    @property
    def rows(self) -> int:
        return self.weight.shape[1]

    @property
    def positions(self) -> int:
        if self.index is not None:
            return int(self.index.shape[0])
        return 1 if self.conv is None else self.conv.positions

    @property
    def skip_rows(self) -> int:
        """Rows replayed from the spike-time buffer for skip connections."""
        return sum(g.rows for g in self.groups if g.skip)

    @property
    def w_max(self) -> float:
        """The layer's largest |weight| or |bias| (1 if all are zero)."""
        m = float(self.weight.abs().max()) if self.weight.numel() else 0.0
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
def pe_program(snn: TTFSNetwork, keep_silent: bool = False) -> PEProgram:
    """Rewrite every layer of ``snn`` for the crossbar; raises ``SpikecError`` for what it cannot map.

    ``keep_silent``: silent neurons stay on the chip and their rows in the layers after them (what
    leaving them off saves is the difference)."""
    shapes = slot_shapes(snn)
    steps = []
    ann_macs = 0
    ann_params = 0
    silent = {i: torch.zeros(sh, dtype=torch.bool) for i, sh in shapes.items()}  # per slot: never fires
    for name, ins, out in snn.program:
        module = snn.ops[name]
        if isinstance(module, TTFSTimeOp):
            steps.append(PEStep(name, None, module.op, tuple(ins), out))
            t = torch.where(silent[ins[0]], float("inf"), 0.0).unsqueeze(0)  # silent: never fires
            silent[out] = torch.isinf(apply_time_op(t, module.op))[0]
            continue
        if not isinstance(module, (TTFSLayer, TTFSReadout)):
            raise SpikecError(f"hardware: layer {name!r} is a {type(module).__name__}, which the PE cannot run")
        layer, macs = _pe_layer(name, module, [shapes[i] for i in ins], shapes[out], [silent[i] for i in ins],
                                not keep_silent)
        silent[out] = layer.silent
        ann_macs += macs
        ann_params += sum(s.weight.numel() + (0 if s.bias is None else s.bias.numel()) for s in module.synapses
                          if s.spec.kind != "gain")
        steps.append(PEStep(name, layer, None, tuple(ins), out))
    enc = snn.encoder
    return PEProgram(2 if enc.signed else 1, tuple(snn.input_shape), tuple(steps), ann_macs,
                     float(enc.scale), bool(enc.signed), ann_params)


def slot_shapes(snn: TTFSNetwork) -> dict[int, tuple]:
    """Shape (no batch) of every value slot of ``snn``'s program: the encoder's sources and each step's output."""
    x = torch.zeros(1, *snn.input_shape, dtype=next(snn.parameters()).dtype)
    outputs = snn.run(x)
    shapes = {i: tuple(outputs["encoder"][i].shape[1:]) for i in range(outputs["encoder"].shape[0])}
    for name, _, out in snn.program:
        shapes[out] = tuple(outputs[name].shape[1:])
    return shapes


def _pe_layer(name: str, module, in_shapes: list[tuple], out_shape: tuple,
              silent_in: list[torch.Tensor] | None = None, leave_off: bool = True) -> tuple[PELayer, int]:
    window = module.window
    synapses = list(module.synapses)
    out_shape = tuple(out_shape)
    if len(out_shape) == 3:
        kind = "conv2d"
    elif len(out_shape) == 1:
        kind = "linear"
    else:
        raise SpikecError(f"hardware: layer {name!r} has neurons of shape {out_shape}; the PE maps 1-D (linear) "
                          f"and [C, H, W] (conv2d) layers")
    offsets = [0]
    for sh in in_shapes:
        offsets.append(offsets[-1] + math.prod(sh))
    weights, indices, groups, geoms = [], [], [], []
    macs = 0
    start = 0
    for i, (s, shape) in enumerate(zip(synapses, in_shapes)):
        if kind == "conv2d":
            w, idx, geom, m = _unroll_conv(name, s, shape, out_shape)
        else:
            w, idx, geom, m = _unroll_linear(name, s, shape, out_shape)
        macs += m
        weights.append(w)
        indices.append(torch.where(idx >= 0, idx + offsets[i], idx))
        groups.append(RowGroup(i, start, start + w.shape[1], s.spec.kind, s.source_window < window - 1))
        geoms.append(geom)
        start += w.shape[1]
    positions = {int(ix.shape[0]) for ix in indices}
    if len(positions) != 1:
        raise SpikecError(f"hardware: the synapses of layer {name!r} reach different numbers of output positions "
                          f"{sorted(positions)}; cannot stack their rows")
    weight = torch.cat(weights, dim=1)
    index = torch.cat(indices, dim=1)
    if silent_in is None or not leave_off:
        silent_in = [torch.zeros(sh, dtype=torch.bool) for sh in in_shapes]
    src_silent = torch.cat([s_.reshape(-1) for s_ in silent_in])
    reads_live = (index >= 0) & ~src_silent[index.clamp(min=0)]  # [P, rows]
    weight, index, groups = _drop_zero_rows(weight, index, groups, reads_live)
    biases = [s.bias.detach().to(torch.float64) for s in synapses if s.bias is not None]
    bias = torch.stack([b.reshape(-1) for b in biases]).sum(0) if biases else None
    if bias is not None and bias.numel() != weight.shape[0]:
        raise SpikecError(f"hardware: layer {name!r} has a bias of {bias.numel()} values for {weight.shape[0]} "
                          f"neurons; the PE needs one bias per output channel")
    channels = None
    if leave_off and not isinstance(module, TTFSReadout):
        dead = (weight == 0).all(1) & (bias <= 0 if bias is not None else True)
        if bool(dead.all()):
            dead[0] = False  # a layer keeps one neuron on the chip
        if bool(dead.any()):
            channels = (~dead).nonzero().squeeze(1)
            weight = weight[channels]
            bias = None if bias is None else bias[channels]
    if kind == "conv2d" and len({sh[1:] for sh in in_shapes}) == 1 and all(len(sh) == 3 for sh in in_shapes):
        in_shape = (sum(sh[0] for sh in in_shapes),) + tuple(in_shapes[0][1:])
    elif len(in_shapes) == 1:
        in_shape = tuple(in_shapes[0])
    else:
        in_shape = (offsets[-1],)
    main = next((g for g in geoms if g is not None), None)
    layer = PELayer(name, kind, weight, bias, in_shape, out_shape, main, isinstance(module, TTFSReadout),
                    float(module.scale), tuple(tuple(s) for s in in_shapes), index, tuple(groups),
                    sum(w.shape[1] for w in weights), channels)
    _check_layer(layer, synapses, in_shapes, silent_in)
    return layer, macs


def _drop_zero_rows(weight, index, groups, reads_live):
    """Rows whose weights are all zero (pruned inputs), or that read only padding or silent neurons
    (``reads_live [P, rows]`` false everywhere), take no crossbar row."""
    keep = (weight != 0).any(0) & reads_live.any(0)
    if bool(keep.all()):
        return weight, index, groups
    if not bool(keep.any()):
        keep[0] = True  # an all-zero layer still needs one row to exist
    new_groups = []
    start = 0
    for g in groups:
        n = int(keep[g.start:g.stop].sum())
        new_groups.append(RowGroup(g.source, start, start + n, g.kind, g.skip))
        start += n
    return weight[:, keep], index[:, keep], [g for g in new_groups if g.rows > 0]


def _unroll_linear(name: str, syn, in_shape: tuple, out_shape: tuple):
    """Dense ``[K, n_in]`` matrix of any linear synapse, found by probing it with unit inputs."""
    spec = syn.spec
    n_in = math.prod(in_shape)
    w = syn.weight.detach().to(torch.float64)
    cols = []
    for start in range(0, n_in, _PROBE_CHUNK):
        stop = min(n_in, start + _PROBE_CHUNK)
        eye = torch.zeros(stop - start, n_in, dtype=torch.float64)
        eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        try:
            y = weighted_op(eye.reshape(stop - start, *in_shape), w, None, spec)
        except (RuntimeError, ValueError) as exc:
            raise SpikecError(f"hardware: cannot unroll the {spec.kind} synapse of layer {name!r}: {exc}") from None
        cols.append(y.reshape(stop - start, -1).t())
    dense = torch.cat(cols, dim=1)
    if dense.shape[0] != math.prod(out_shape):
        raise SpikecError(f"hardware: layer {name!r}: a synapse gives {dense.shape[0]} outputs for "
                          f"{math.prod(out_shape)} neurons")
    macs = 0 if spec.kind == "gain" else w.numel() * (1 if spec.kind == "linear" else _conv_positions(syn, in_shape))
    return dense, torch.arange(n_in).view(1, n_in), None, macs


def _conv_positions(syn, in_shape) -> int:
    x = torch.zeros(1, *in_shape, dtype=torch.float64)
    for op in syn.spec.pre:
        x = apply_linear_op(x, op)
    s = syn.spec
    y = F.conv2d(x, syn.weight.detach().to(torch.float64), None, s.stride, s.padding, s.dilation, s.groups)
    return math.prod(y.shape[2:])


def _unroll_conv(name: str, syn, in_shape: tuple, out_shape: tuple):
    """``(W [K, C*kh*kw], index [P, rows], geometry, ANN MACs)`` of a conv or identity synapse into a conv layer."""
    spec = syn.spec
    if len(in_shape) != 3:
        raise SpikecError(f"hardware: layer {name!r} reads a source of shape {in_shape} into a convolution; "
                          f"the PE needs [C, H, W] sources there")
    C, H, W = in_shape
    K = out_shape[0]
    if spec.kind == "gain":
        g = float(syn.weight.detach())
        w = (torch.eye(C, dtype=torch.float64) * g).reshape(C, C, 1, 1)
        stride, padding, dilation, groups = (1, 1), (0, 0), (1, 1), 1
        macs = 0
    elif spec.kind == "conv2d":
        w = syn.weight.detach().to(torch.float64)
        groups = int(spec.groups)
        stride, dilation = _pair(spec.stride), _pair(spec.dilation)
        padding = _padding(name, spec.padding, w.shape[2:], dilation, stride)
        macs = w.numel() * _conv_positions(syn, in_shape)
        if groups > 1:
            w = _dense_groups(w, groups)
    else:
        raise SpikecError(f"hardware: layer {name!r} has a {spec.kind} synapse into a convolution layer; "
                          f"the PE maps conv2d, linear and identity synapses")
    if w.shape[0] != K:
        raise SpikecError(f"hardware: layer {name!r}: a synapse gives {w.shape[0]} channels for {K} neurons per position")
    crop = (H, W)
    for op in spec.pre:
        kwargs = dict(op.kwargs)
        if op.name == "reshape":
            if tuple(kwargs["shape"]) != (C, H, W):
                raise SpikecError(f"hardware: layer {name!r} reshapes before its convolution; not mapped")
            continue
        kp, sp = _plain_pool(name, op, "before")
        w, stride, padding, dilation, crop, H, W = _fold_pool(w, stride, padding, dilation, kp, sp, H, W)
    for op in spec.post:
        if op.name == "reshape":
            if tuple(dict(op.kwargs)["shape"]) != tuple(out_shape):
                raise SpikecError(f"hardware: layer {name!r} reshapes after its convolution; not mapped")
            continue
        kp, sp = _plain_pool(name, op, "after")
        w, stride, dilation = _fold_post_pool(w, stride, dilation, kp, sp)
    out_hw = tuple(out_shape[1:3])
    geom = ConvGeometry((w.shape[2], w.shape[3]), stride, padding, dilation, crop, out_hw)
    return w.reshape(K, -1), conv_index(w.shape[1], geom), geom, macs


def _padding(name, padding, kernel, dilation, stride):
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        eff = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(e % 2 for e in eff) or stride != (1, 1):
            raise SpikecError(f"hardware: layer {name!r} uses padding='same' with an even kernel extent; not mapped")
        return (eff[0] // 2, eff[1] // 2)
    return _pair(padding)


def _dense_groups(w: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv weight ``[K, C/g, kh, kw]`` as the dense ``[K, C, kh, kw]`` with zeros outside each group."""
    K, cg, kh, kw = w.shape
    out = torch.zeros(K, cg * groups, kh, kw, dtype=w.dtype)
    kg = K // groups
    for g in range(groups):
        out[g * kg:(g + 1) * kg, g * cg:(g + 1) * cg] = w[g * kg:(g + 1) * kg]
    return out


def _plain_pool(name: str, op, where: str):
    kwargs = dict(op.kwargs)
    if op.name != "avg_pool2d" or _pair(kwargs.get("padding", 0)) != (0, 0) or kwargs.get("ceil_mode") \
            or kwargs.get("divisor_override") is not None:
        raise SpikecError(f"hardware: layer {name!r} has a {op.name} {where} its convolution that the PE cannot fold")
    kp = _pair(kwargs["kernel_size"])
    sp = _pair(kwargs["stride"] if kwargs.get("stride") is not None else kwargs["kernel_size"])
    return kp, sp


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


def _fold_post_pool(w, stride, dilation, kp, sp):
    """A pooling (kernel ``kp``, stride ``sp``) after the conv, folded into the conv's kernel.

    Pooled output ``u`` averages conv outputs ``sp*u + a`` (``a < kp``), each reading input
    ``s*(sp*u + a) + d*t - p``: one conv with stride ``s*sp`` and taps at offsets ``s*a + d*t``.
    """
    K, C, kh, kw = w.shape
    nh = (kp[0] - 1) * stride[0] + (kh - 1) * dilation[0] + 1
    nw = (kp[1] - 1) * stride[1] + (kw - 1) * dilation[1] + 1
    out = torch.zeros(K, C, nh, nw, dtype=w.dtype)
    scale = 1.0 / (kp[0] * kp[1])
    for a in range(kp[0]):
        for b in range(kp[1]):
            for i in range(kh):
                for j in range(kw):
                    out[:, :, stride[0] * a + dilation[0] * i, stride[1] * b + dilation[1] * j] += w[:, :, i, j] * scale
    return out, (stride[0] * sp[0], stride[1] * sp[1]), (1, 1)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) else (0, 0)
    return (int(v), int(v))


def conv_index(channels: int, g: ConvGeometry, in_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """``[P, C*kh*kw]`` source neuron (in a ``[C, H, W]`` map) read by each tap at each output position.

    ``-1`` where the tap falls on padding or outside the used (cropped) input. ``in_hw`` is the
    map's height and width (default: the crop).
    """
    H, W = g.crop if in_hw is None else in_hw
    ch, cw = g.crop
    oh, ow = g.out_hw
    kh, kw = g.kernel
    u = torch.arange(oh).view(oh, 1, 1, 1, 1)
    v = torch.arange(ow).view(1, ow, 1, 1, 1)
    a = torch.arange(kh).view(1, 1, 1, kh, 1)
    b = torch.arange(kw).view(1, 1, 1, 1, kw)
    c = torch.arange(channels).view(1, 1, channels, 1, 1)
    r = u * g.stride[0] - g.padding[0] + a * g.dilation[0]
    q = v * g.stride[1] - g.padding[1] + b * g.dilation[1]
    ok = (r >= 0) & (r < ch) & (q >= 0) & (q < cw)
    idx = c * (H * W) + r * W + q
    idx = torch.where(ok, idx, torch.full_like(idx, -1))
    return idx.reshape(oh * ow, channels * kh * kw)


def unroll_index(layer: PELayer) -> torch.Tensor:
    """``[P, rows]`` index of the source neuron each row of each position reads (``-1``: padding)."""
    if layer.index is not None:
        return layer.index
    n_in = math.prod(layer.in_shape)
    if layer.conv is None:
        return torch.arange(n_in).view(1, n_in)
    C, H, W = layer.in_shape
    return conv_index(C, layer.conv, (H, W))


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


def fold_outputs(layer: PELayer, y: torch.Tensor, fill: float = float("inf")) -> torch.Tensor:
    """Per-position neuron outputs ``[..., P, K]`` back to the layer's neuron map ``[..., *out_shape]``.

    Neurons left off the chip get ``fill`` (``inf`` for firing steps: they never fire; 0 for values)."""
    if layer.channels is not None:
        full = y.new_full((*y.shape[:-1], layer.map_neurons), fill)
        full[..., layer.channels] = y
        y = full
    lead = y.shape[:-2]
    if layer.kind != "conv2d":
        return y.reshape(*lead, *layer.out_shape)
    h, w = layer.out_shape[1:3]
    return y.reshape(*lead, h, w, layer.map_neurons).movedim(-1, -3)


def stack_sources(layer: PELayer, sources: list[torch.Tensor]) -> torch.Tensor:
    """Sources ``[B, ...]`` stacked the way ``layer``'s rows expect them (flattened, concatenated in order)."""
    if len(sources) == 1:
        return sources[0].reshape(sources[0].shape[0], *layer.in_shape)
    flat = torch.cat([s.reshape(s.shape[0], -1) for s in sources], dim=1)
    return flat.reshape(flat.shape[0], *layer.in_shape)


def layer_charge_unrolled(layer: PELayer, values: torch.Tensor, weight: torch.Tensor | None = None,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., P, K]`` charge of unrolled ``values [..., P, rows]``: ``values @ W^T + b`` (crossbar MVM)."""
    w = layer.weight if weight is None else weight
    b = layer.bias if bias is None else bias
    q = values @ w.t()
    return q if b is None else q + b


def _check_layer(layer: PELayer, synapses, in_shapes, silent_in) -> None:
    """The unrolled op must give the same charge as the TTFS layer's own synapse ops (silent sources
    at value 0), and every neuron left off the chip a charge that is never positive."""
    gen = torch.Generator().manual_seed(1234)
    values = [torch.rand(2, *shape, generator=gen, dtype=torch.float64).masked_fill(dead, 0.0)
              for shape, dead in zip(in_shapes, silent_in)]
    expected = None
    for v, s in zip(values, synapses):
        q = weighted_op(v, s.weight.detach().to(torch.float64),
                        None if s.bias is None else s.bias.detach().to(torch.float64), s.spec)
        expected = q if expected is None else expected + q
    rows = unroll_inputs(layer, stack_sources(layer, values), 0.0)
    got = fold_outputs(layer, layer_charge_unrolled(layer, rows), 0.0)
    off = layer.silent.expand_as(expected) if got.shape == expected.shape else None
    if off is not None and bool(off.any()):
        if bool((expected[off] > 1e-9).any()):
            raise SpikecError(f"hardware: layer {layer.name!r}: a neuron left off the chip would fire")
        got = torch.where(off, expected, got)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-9, atol=1e-9):
        raise SpikecError(f"hardware: cannot unroll layer {layer.name!r} onto the crossbar "
                          f"(its pooling/stride combination does not fold into one convolution)")
