"""Model size in bits, counting the cost of saying where the non-zero weights are.

Each layer is charged for the cheapest of these real, decodable formats of its non-zero pattern:

- ``dense``: every weight stored, zeros included;
- ``bitmap``: one bit per weight, plus the non-zero values;
- ``relative-r``: each non-zero stored with an r-bit gap to the previous one (Han et al. 2016,
  Deep Compression); a gap beyond ``2^r`` costs an extra filler entry holding a zero;
- ``row-bitmap`` / ``kernel-bitmap`` / ``channel-bitmap``: one bit per 1 x k kernel row (per k x k
  kernel, per output channel), plus every value of the kept rows (kernels, channels), zeros inside
  them included;
- ``row-relative-r`` / ``kernel-relative-r`` / ``channel-relative-r``: the same with r-bit gaps
  between kept groups.

Values take ``bits`` each. A scale that divides the threshold of the neurons its layer drives
(``threshold / n``, as quantization's ``grid_thresholds`` picks it) is stored as the whole number
``n`` (the threshold belongs to the neurons, stored in either network), all of the layer's at the width
the largest needs, plus one flag bit per scale when only some are; other scales take 32 bits. An output
channel without a non-zero weight stores no scale (its weights are all zero at any scale). A
layer's biases that sit on the grid quantization rounded them to (``bias_step``, one step per output channel, recorded by
:func:`~spikec.compress.quantize.freeze_`; a decoder recomputes it from the scales and weight levels)
are stored as signed integers of that step, all of the layer's at the width its largest needs; other
biases take 32 bits. The dense reference stores all weights and biases as 32-bit floats, so
``ratio = dense_bits / compressed_bits``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from spikec.compress.layers import driven_neurons, synaptic_layers, threshold_unit

FLOAT_BITS = 32
BIAS_STEP = "bias_step"  # buffer: [K] grid step of a layer's frozen biases (spikec.compress.quantize.freeze_)


@dataclass(frozen=True)
class LayerSize:
    weights: int
    nonzero: int
    bits_per_weight: int
    scales: int
    biases: int
    encoding: str
    index_bits: int
    value_bits: int
    bias_bits: int = FLOAT_BITS  # per bias
    scale_bits: int = -1  # all the layer's scales (-1: 32 each)

    @property
    def total_bits(self) -> int:
        scales = FLOAT_BITS * self.scales if self.scale_bits < 0 else self.scale_bits
        return self.index_bits + self.value_bits + scales + self.bias_bits * self.biases

    @property
    def dense_bits(self) -> int:
        return FLOAT_BITS * (self.weights + self.biases)


@dataclass(frozen=True)
class SizeReport:
    layers: dict = field(default_factory=dict)

    @property
    def dense_bits(self) -> int:
        return sum(l.dense_bits for l in self.layers.values())

    @property
    def compressed_bits(self) -> int:
        return sum(l.total_bits for l in self.layers.values())

    @property
    def ratio(self) -> float:
        return self.dense_bits / max(self.compressed_bits, 1)

    @property
    def ratio_float_side(self) -> float:
        """The ratio with every scale and bias a 32-bit float (the accounting before integer scales and
        biases, 2026-12-07), to compare with figures measured that way."""
        bits = sum(l.index_bits + l.value_bits + FLOAT_BITS * (l.scales + l.biases) for l in self.layers.values())
        return self.dense_bits / max(bits, 1)

    @property
    def density(self) -> float:
        """Non-zero fraction of all weights."""
        return sum(l.nonzero for l in self.layers.values()) / max(sum(l.weights for l in self.layers.values()), 1)

    def summary(self) -> dict:
        return {
            "dense_bits": self.dense_bits,
            "compressed_bits": self.compressed_bits,
            "compression_ratio": self.ratio,
            "compression_ratio_float_side": self.ratio_float_side,
            "density": self.density,
            "layers": {n: {"weights": l.weights, "nonzero": l.nonzero, "bits": l.bits_per_weight,
                           "encoding": l.encoding, "index_bits": l.index_bits, "value_bits": l.value_bits,
                           "bias_bits": l.bias_bits, "scale_bits": l.scale_bits, "total_bits": l.total_bits} for n, l in self.layers.items()},
        }


def relative_index_entries(flat_mask: torch.Tensor, r: int) -> int:
    """Entries (non-zeros plus fillers) of an r-bit relative index over a flat boolean pattern."""
    pos = torch.nonzero(flat_mask.flatten()).flatten()
    if pos.numel() == 0:
        return 0
    gaps = torch.diff(pos, prepend=torch.tensor([-1], device=pos.device))
    return int(torch.ceil(gaps.double() / (2 ** r)).sum())


def _best_relative(pattern: torch.Tensor, entry_value_bits: int) -> tuple[int, int, int]:
    """``(r, index bits, value bits)`` of the cheapest relative index over ``pattern``."""
    best = None
    for r in range(1, 17):
        e = relative_index_entries(pattern, r)
        cost = (e * r, e * entry_value_bits)
        if best is None or sum(cost) < sum(best[1:]):
            best = (r, *cost)
    return best


def _per_channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
    """``t`` (one value, or one per channel) as float64 beside ``like``'s channels; None if it does not fit."""
    v = t.detach().to(torch.float64).flatten()
    v = v.expand_as(like) if v.numel() == 1 else v
    return v if v.shape == like.shape else None


def bias_bits(bias: torch.Tensor, step: torch.Tensor | None) -> int:
    """Bits per bias: the signed width of the largest ``bias / step`` when every bias is a whole number of
    its channel's ``step`` (within float32 rounding), else 32."""
    if step is None:
        return FLOAT_BITS
    b = bias.detach().to(torch.float64).flatten()
    st = _per_channel(step, b)
    if st is None or not bool((st > 0).all()):
        return FLOAT_BITS
    n = b / st
    whole = torch.round(n)
    if not bool(((n - whole).abs() <= 1e-3).all()):
        return FLOAT_BITS
    return min(FLOAT_BITS, int(whole.abs().max()).bit_length() + 1) if b.numel() else FLOAT_BITS


def scale_bits(scale: torch.Tensor, unit: torch.Tensor | None, live: torch.Tensor | None = None) -> int:
    """Bits of a layer's scales: ``threshold / n`` ones as whole numbers ``n`` (see the module docstring).

    ``live`` (bool per channel): channels without a non-zero weight need no scale, so only the others count."""
    s = scale.detach().to(torch.float64).flatten()
    if live is not None and s.numel() > 1 and live.numel() == s.numel():
        keep = live.flatten().to(torch.bool)
        s = s[keep]
        unit = None if unit is None else (unit.flatten()[keep] if unit.numel() > 1 else unit)
    if unit is None or s.numel() == 0:
        return FLOAT_BITS * s.numel()
    u = _per_channel(unit, s)
    if u is None:
        return FLOAT_BITS * s.numel()
    n = torch.round(u / s)
    whole = (n >= 1) & ((u / n - s).abs() <= 1e-6 * s.abs())
    k = int(whole.sum())
    if k == 0:
        return FLOAT_BITS * s.numel()
    width = int(n[whole].max()).bit_length()
    flags = 0 if k == s.numel() else s.numel()
    return flags + k * width + FLOAT_BITS * (s.numel() - k)


def layer_size(weight: torch.Tensor, bits: int = FLOAT_BITS, scales: int = 0, biases: int = 0,
               bias_width: int = FLOAT_BITS, scales_width: int = -1) -> LayerSize:
    """The cheapest format (see the module docstring) of one weight tensor."""
    w = weight.detach()
    nz = w != 0
    n, k = w.numel(), int(nz.sum())
    options = {"dense": (0, n * bits), "bitmap": (n, k * bits)}
    r, ib, vb = _best_relative(nz, bits)
    options[f"relative-{r}"] = (ib, vb)
    group_kinds = [("channel", w.reshape(w.shape[0], -1))]
    if w.dim() > 2 and w.shape[-1] > 1:
        group_kinds.append(("row", w.reshape(-1, w.shape[-1])))
    if w.dim() > 2 and w.shape[2:].numel() > 1:
        group_kinds.append(("kernel", w.reshape(-1, w.shape[2:].numel())))
    for kind, g in group_kinds:
        kept = (g != 0).any(1)
        size = g.shape[1]
        options[f"{kind}-bitmap"] = (g.shape[0], int(kept.sum()) * size * bits)
        r, ib, vb = _best_relative(kept, size * bits)
        options[f"{kind}-relative-{r}"] = (ib, vb)
    name = min(options, key=lambda o: sum(options[o]))
    ib, vb = options[name]
    return LayerSize(n, k, bits, scales, biases, name, ib, vb, bias_width, scales_width)


def model_size(model: nn.Module, bits: dict[str, int] | None = None) -> SizeReport:
    """Size of every Conv/Linear layer of ``model``. ``bits`` per layer name (default: what
    :func:`~spikec.compress.quantize.freeze_` recorded on the layer, else 32-bit floats)."""
    bits = bits or {}
    out = {}
    neurons = driven_neurons(model)
    for name, m in synaptic_layers(model).items():
        scale = m._buffers.get("weight_scale")
        b = bits.get(name, m.__dict__.get("_spikec_weight_bits", FLOAT_BITS if scale is None else None))
        if b is None:
            raise ValueError(f"layer {name!r} is quantized but its bit width is unknown")
        bias = getattr(m, "bias", None)
        biases = bias.numel() if bias is not None else 0
        width = bias_bits(bias, m._buffers.get(BIAS_STEP)) if biases else FLOAT_BITS
        stored = -1
        if scale is not None:
            live = (m.weight.detach() != 0).reshape(m.weight.shape[0], -1).any(1)
            stored = scale_bits(scale, threshold_unit(neurons.get(name), m.weight.shape[0], scale.numel() > 1), live)
        out[name] = layer_size(m.weight, int(b), 0 if scale is None else scale.numel(), biases, width, stored)
    return SizeReport(out)
