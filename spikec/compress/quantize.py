"""Symmetric k-bit, binary and ternary weights, trained with a straight-through estimator.

A k-bit weight is ``s * q`` with an integer ``q`` in ``[-(2^(k-1)-1), 2^(k-1)-1]`` and one scale
``s`` per layer or per output channel (zero stays exactly zero, so masks survive). Binary weights
are ``alpha * sign(w)`` (Binary Weight Network, alpha = mean |w| of the kept weights) or
``s0 * sign(w)`` with ``s0`` fixed at the start (BinaryConnect); ternary weights are
``alpha * {-1, 0, 1}`` with the cut ``0.7 mean |w|`` of ternary weight networks. A k-bit scale
is not simply ``max|w| / qmax``: it is the scale of least squared rounding error between a quarter
of that and that (clipping a few large weights buys a finer step for all the others).

Thresholds and biases follow the weight scale: when the layer drives a spiking layer whose
threshold ``theta`` is one number (or one per channel with per-channel scales), the scale is
a scale ``theta / n`` for a whole number ``n`` (the best such one), and the bias is rounded to the same grid. Integer weights, biases and thresholds then reproduce the
simulated network exactly on an integer accumulator. Weights for crossbar cells (``cell_levels``)
round their biases to the finer step the cells give each column instead (see
:meth:`WeightQuantizer.bias_step`). (A neuron's initial membrane ``v_init`` is
left as it is.)

Quantization-aware training: :func:`prepare_qat_` keeps the full-precision weight as
``weight_fp`` and recomputes ``weight`` before every forward; :func:`freeze_` writes the
quantized values back into ``weight`` (and ``bias``), so the state dict has its usual keys.
:func:`quantize_` does both at once (post-training quantization).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from spikec.compress.config import QuantConfig
from spikec.compress.layers import driven_neurons, forward_module, select_layers, threshold_unit
from spikec.compress.masks import QUANTIZER, drop_hook_if_idle, ensure_hook, refresh
from spikec.compress.size import BIAS_STEP
from spikec.hardware.config import HardwareConfig
from spikec.hardware.mapping import cell_grid

SCALE = "weight_scale"
BITS = "_spikec_weight_bits"


def ste(x: torch.Tensor, x_q: torch.Tensor) -> torch.Tensor:
    """``x_q`` in the forward pass, identity gradient to ``x`` in the backward pass."""
    return x + (x_q - x).detach()


def channel_view(t: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``[groups, rest]``: one row per output channel, or one row for the whole tensor."""
    return t.reshape(t.shape[0], -1) if per_channel else t.reshape(1, -1)


def _broadcast(s: torch.Tensor, shape) -> torch.Tensor:
    return s.reshape(-1, *([1] * (len(shape) - 1)))


def _snap(scale: torch.Tensor, unit: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
    """``scale`` moved to the nearest ``unit / n`` for a whole number ``n >= 1``; unchanged (and
    reported off the grid) where ``unit < scale / 2``."""
    if unit is None:
        return scale, False
    n = torch.round(unit / scale)
    ok = n >= 1
    return torch.where(ok, unit / n.clamp(min=1), scale), bool(ok.all())


# elements of w_rows x candidates evaluated in one batch: one that stays in cache (measured fastest
# of 2^14..2^22 on this VM's AMD EPYC; 2^22 was 13x slower than 2^16 on a 128x1152 layer, one run)
_BATCH_ELEMENTS = 1 << 16


def _rounding_errors(w_rows: torch.Tensor, scales: torch.Tensor, qmax: int) -> torch.Tensor:
    """Squared error per row of ``w_rows`` rounded to ``s * [-qmax, qmax]``, for each candidate row
    ``s`` of ``scales [C, rows]`` (one scale per row of ``w_rows``): ``[C, rows]``. Batched: a QAT
    forward searches 48 candidates per layer, and one op per candidate cost the digits VGG 25 s."""
    chunk = max(1, _BATCH_ELEMENTS // max(1, w_rows.numel()))
    out = []
    for c0 in range(0, scales.shape[0], chunk):
        s = scales[c0:c0 + chunk].unsqueeze(2)
        d = torch.div(w_rows, s).round_().clamp_(-qmax, qmax).mul_(s).sub_(w_rows)
        out.append(d.mul_(d).sum(2))
    return torch.cat(out)


def _first_best(scales: torch.Tensor, errors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the candidate with the least error (the first of equals) and that error."""
    i = errors.argmin(0, keepdim=True)
    return scales.gather(0, i).squeeze(0), errors.gather(0, i).squeeze(0)


# Candidate scales span this fraction of max|w| / qmax up to 1: clipping the few largest weights
# buys a finer step for all others (4-bit per-layer max scaling cost LeNet 4 points on digits).
SEARCH_FLOOR = 0.25
SEARCH_STEPS = 48


def _search_scale(w_rows: torch.Tensor, absmax_scale: torch.Tensor, unit: torch.Tensor | None,
                  qmax: int, exact: bool = True) -> tuple[torch.Tensor, bool, bool]:
    """For k-bit weights: the scale with the least squared rounding error on ``w_rows``, among
    ``absmax_scale * c`` for SEARCH_STEPS values of c from SEARCH_FLOOR to 1 or, with a threshold
    ``unit``, among the grid scales ``unit / n`` (n whole, >= 1) nearest to those, plus the finest
    one that never clips. Groups where even ``unit`` is below that range have no grid scale without
    heavy clipping: they take the continuous search, and the layer is reported off the grid.
    ``exact``: also keep rows already on a grid (:func:`_keep_exact_grids`). Returns ``(scales,
    on the threshold grid, some row was on an exact grid)``."""
    c = torch.linspace(1.0, SEARCH_FLOOR, SEARCH_STEPS, device=w_rows.device, dtype=absmax_scale.dtype)
    continuous = absmax_scale.unsqueeze(0) * c.unsqueeze(1)  # [C, rows]
    on_grid = unit is not None and bool((unit >= SEARCH_FLOOR * absmax_scale).all())
    if unit is not None:
        ok = unit >= SEARCH_FLOOR * absmax_scale
        finest = unit / torch.floor(unit / absmax_scale).clamp(min=1)  # the finest that never clips
        candidates = torch.cat([finest.unsqueeze(0), unit / torch.round(unit / continuous[1:]).clamp(min=1)])
        if not on_grid:  # groups off the grid search the continuous scales
            candidates = torch.where(ok, candidates, continuous)
        # a group of denormal-small weights (a regulariser shrank it) makes unit / absmax overflow to
        # inf and its grid scale 0, which would turn its zeros into NaN (0 / 0): such groups take the
        # coarsest grid scale, the threshold itself, under which their weights round to zero
        candidates = torch.where(torch.isfinite(candidates) & (candidates > 0), candidates, unit)
    else:
        candidates = continuous
    best_s, best_e = _first_best(candidates, _rounding_errors(w_rows, candidates, qmax))
    if not exact:
        return best_s, on_grid, False
    return _keep_exact_grids(w_rows, unit, qmax, best_s, best_e, on_grid)


# exact grids are looked for among max|w| / q for q up to this many levels (a 5-bit weight's 15)
EXACT_GRID_LEVELS = 15


def _keep_exact_grids(w_rows, unit, qmax, best_s, best_e, on_grid) -> tuple[torch.Tensor, bool, bool]:
    """Rows already on a uniform grid of at most ``qmax`` levels a side keep it (``max|w| / q``).

    An SNN converted from a k-bit ANN sits on per-channel grids; re-deriving its scales (and shrinking
    them to divide the threshold) rounded 35-71% of a CIFAR VGG-16's converted conv weights a second
    time and cost 3.2 points after post-training quantization. A row takes its exact grid only where
    the search found none as good (rounding error within ``1e-10`` of the row's energy); such a row's
    scale need not divide the threshold, so the layer is then reported off the threshold grid.
    """
    energy = w_rows.pow(2).sum(1)
    absmax = w_rows.abs().amax(1)
    levels = torch.arange(1, min(qmax, EXACT_GRID_LEVELS) + 1, device=w_rows.device, dtype=best_s.dtype)
    cand = torch.where(absmax > 0, absmax.unsqueeze(0) / levels.unsqueeze(1), best_s)  # [q, rows]
    hits = (_rounding_errors(w_rows, cand, qmax) <= 1e-10 * energy) & (absmax > 0)  # a zero row is on no grid
    exact = hits.any(0)
    exact_s = torch.where(exact, cand.gather(0, hits.int().argmax(0, keepdim=True)).squeeze(0), best_s)  # coarsest hit
    take = exact & (best_e > 1e-10 * energy)
    if not bool(take.any()):
        return best_s, on_grid, bool(exact.any())
    best_s = torch.where(take, exact_s, best_s)
    if on_grid and unit is not None:
        n = unit / best_s
        on_grid = bool(((n - n.round()).abs() <= 1e-6 * n).all())
    return best_s, on_grid, True


# The k-bit scale search runs on every forward pass of quantization-aware training. Reusing it for
# 16 passes (tried 2026-12-02) saved ~11% CPU on the digits VGG rate SNN but trained worse: the
# layer without a threshold grid (the readout) kept a stale scale while its weights moved, final
# quant-phase loss 0.025 against 0.0065 and 97.78% against 98.33% test accuracy, same seed.


@dataclass
class WeightQuantizer:
    """Quantizes one layer's weight and bias. ``unit`` is the threshold its scale snaps to (or None)."""

    config: QuantConfig
    unit: torch.Tensor | None = None
    fixed_scale: torch.Tensor | None = None  # BinaryConnect
    on_grid: bool = False
    _cell_config: HardwareConfig | None = dataclasses.field(default=None, repr=False, compare=False)
    # whether to look for rows already on a grid: until the first weight shows none (a network that
    # starts off every grid never gets there by training; with the look on every QAT forward the
    # digits rate SNN of `spikec run` compressed in 171 s, against 142 s without it, one run each)
    _look_for_exact: bool = dataclasses.field(default=True, repr=False, compare=False)

    @property
    def per_channel(self) -> bool:
        return self.config.group == "channel"

    def state(self) -> dict:
        """What a resumed fine-tuning needs beyond the weights: the search flag and a BinaryConnect scale."""
        return {"look_for_exact": bool(self._look_for_exact), "fixed_scale": self.fixed_scale}

    def load_state(self, state: dict) -> None:
        self._look_for_exact = bool(state["look_for_exact"])
        if state.get("fixed_scale") is not None:
            self.fixed_scale = state["fixed_scale"]

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """One scale per group (``[groups]``), from the detached weight."""
        w = channel_view(w.detach(), self.per_channel)
        mode = self.config.mode
        absw = w.abs()
        kept = (w != 0).float()
        mean_kept = (absw * kept).sum(1) / kept.sum(1).clamp(min=1)
        if mode == "int":
            qmax = 2 ** (int(self.config.bits) - 1) - 1
            s = absw.amax(1) / qmax
        elif mode == "binary":
            s = mean_kept
        elif mode == "binaryconnect":
            s = self.fixed_scale.to(w.device) if self.fixed_scale is not None else mean_kept
        else:  # ternary
            cut = (0.7 * mean_kept).unsqueeze(1)
            big = (absw > cut).float()
            s = (absw * big).sum(1) / big.sum(1).clamp(min=1)
        s = torch.where(s > 0, s, torch.ones_like(s))
        unit = None if self.unit is None or not self.config.grid_thresholds else self.unit.to(s)
        if mode == "int":
            # a group whose weights weight decay left denormal (a channel that stopped firing) has
            # candidate scales that underflow to 0, and 0 / 0 made every weight NaN after one step of
            # a CIFAR VGG-16's QAT: such a group takes scale 1, under which its weights round to zero
            s = torch.where(s * SEARCH_FLOOR >= torch.finfo(s.dtype).tiny, s, torch.ones_like(s))
            s, self.on_grid, found = _search_scale(w, s, None if unit is None else unit.expand_as(s),
                                                   2 ** (int(self.config.bits) - 1) - 1, self._look_for_exact)
            self._look_for_exact = found
        else:
            s, self.on_grid = _snap(s, unit)
        return s

    def levels(self, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The integer level of each weight given the group scales ``s``."""
        mode = self.config.mode
        x = w.detach() / _broadcast(s, w.shape)
        if mode == "int":
            qmax = 2 ** (int(self.config.bits) - 1) - 1
            return torch.round(x).clamp(-qmax, qmax)
        if mode in ("binary", "binaryconnect"):
            return torch.sign(x)
        view = channel_view(w.detach().abs(), self.per_channel)
        kept = (view != 0).float()
        cut = 0.7 * (view * kept).sum(1) / kept.sum(1).clamp(min=1)
        return torch.sign(x) * (w.detach().abs() > _broadcast(cut, w.shape)).float()

    def quantize_weight(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(quantized weight with a straight-through gradient, group scales, integer levels)``."""
        s = self.scale(w)
        q = self.levels(w, s)
        return ste(w, q * _broadcast(s, w.shape)), s, q

    def bias_step(self, s: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """The grid step of each output channel's bias (``[K]``).

        Without a cell grid it is the weight step, so an integer accumulator runs the layer exactly.
        With one (``cell_levels`` > 0) it is the step the PE's cells give that channel's twin pair, as
        :func:`spikec.hardware.mapping.cell_grid` (the one definition of that grid) finds it for the
        quantized weights: a 4-bit weight step refined by 6 on 3 cells of 16 levels. The pair's bias rows
        realise any whole number of those steps, so the bias rounds there; rounding batch-norm-folded
        biases to the coarser weight step cost a compressed CIFAR VGG-16 5.4 points
        (``benchmarks/compression_loss_split.py``, 2026-12-03)."""
        K = levels.shape[0]
        s = s.expand(K) if s.numel() == 1 else s
        if not int(self.config.cell_levels) or self.config.mode != "int":
            return s
        # the grid of a column depends only on which magnitudes it holds: one row entry per level
        # present gives cell_grid the same columns at a fraction of the size (a QAT forward calls this)
        q = channel_view(levels.detach().abs(), True).long()
        present = torch.zeros(K, int(q.max()) + 1 if q.numel() else 1, dtype=torch.float64)
        present.scatter_(1, q, 1.0)
        magnitudes = torch.arange(present.shape[1], dtype=torch.float64)
        weight = present * magnitudes * s.detach().to(torch.float64).view(-1, 1)
        return cell_grid(weight, self._cells()).step.to(s)

    def _cells(self) -> HardwareConfig:
        if self._cell_config is None:
            self._cell_config = HardwareConfig(cell_levels=int(self.config.cell_levels),
                                               cells_per_weight=int(self.config.cells_per_weight))
        return self._cell_config

    def quantize_bias(self, b: torch.Tensor, s: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        if not self.config.quantize_bias:
            return b
        step = self.bias_step(s, levels)
        return ste(b, torch.round(b.detach() / step) * step)

    def apply(self, module: nn.Module) -> None:
        """Set ``module.weight`` (and ``bias``) from the latent ``weight_fp`` (and ``bias_fp``)."""
        w_q, s, q = self.quantize_weight(module.weight_fp)
        module.weight = w_q
        b = module._parameters.get("bias_fp")
        if b is not None:
            module.bias = self.quantize_bias(b, s, q)


def prepare_qat_(model: nn.Module, config: QuantConfig) -> dict[str, WeightQuantizer]:
    """Start quantization-aware training of the selected layers (see the module docstring)."""
    layers = select_layers(model, config.layers)
    neurons = driven_neurons(model)
    widths = config.layer_bits(len(layers)) if config.mode == "int" else (config.bits,) * len(layers)
    out = {}
    for (name, m), bits in zip(layers.items(), widths):
        if m.__dict__.get(QUANTIZER) is not None:
            raise ValueError(f"layer {name!r} is already being quantized")
        per_channel = config.group == "channel"
        layer_config = dataclasses.replace(config, bits=int(bits)) if config.mode == "int" else config
        q = WeightQuantizer(layer_config, threshold_unit(neurons.get(name), m.weight.shape[0], per_channel))
        if config.mode == "binaryconnect":
            w = channel_view(m.weight.detach(), per_channel)
            kept = (w != 0).float()
            q.fixed_scale = (w.abs() * kept).sum(1) / kept.sum(1).clamp(min=1)
        w = m._parameters.pop("weight")
        m.register_parameter("weight_fp", w)
        if m._parameters.get("bias") is not None:
            m.register_parameter("bias_fp", m._parameters.pop("bias"))
        m.__dict__[QUANTIZER] = q
        ensure_hook(m, forward_module(model, name))
        refresh(m)
        out[name] = q
    return out


def freeze_(model: nn.Module) -> dict[str, dict]:
    """Write every quantized layer's values into its ``weight``/``bias`` parameters and stop
    quantization-aware training; returns per layer ``{"bits", "mode", "group", "scale", "on_grid"}``."""
    info = {}
    neurons = driven_neurons(model)
    for name, m in model.named_modules():
        q = m.__dict__.get(QUANTIZER)
        if q is None:
            continue
        refresh(m)  # applies the mask to the latent weight first
        with torch.no_grad():
            w_fp = m._parameters.pop("weight_fp")
            s = q.scale(w_fp)
            levels = q.levels(w_fp, s)
            w_fp.copy_(levels * _broadcast(s, w_fp.shape))
            b_fp = m._parameters.pop("bias_fp", None)
            bias_step = None
            if b_fp is not None and q.config.quantize_bias:
                bias_step = q.bias_step(s, levels).detach().clone()
                b_fp.copy_(q.quantize_bias(b_fp, s, levels))
        del m.weight
        m.register_parameter("weight", w_fp)
        if b_fp is not None:
            del m.bias
            m.register_parameter("bias", b_fp)
        del m.__dict__[QUANTIZER]
        m.__dict__[BITS] = q.config.weight_bits
        _set_buffer(m, SCALE, s.detach().clone())
        _set_buffer(m, BIAS_STEP, bias_step)
        drop_hook_if_idle(m)
        if q.on_grid:
            _snap_v_init(neurons.get(name), s)
        info[name] = {"bits": q.config.weight_bits, "mode": q.config.mode, "group": q.config.group,
                      "scale": s.detach().clone(), "on_grid": bool(q.on_grid)}
    return info


def _set_buffer(m: nn.Module, name: str, value: torch.Tensor | None) -> None:
    """A non-persistent buffer (the checkpoint's compression record carries it), or none."""
    if value is None:
        m._buffers.pop(name, None)
    elif name in m._buffers:
        m._buffers[name] = value
    else:
        m.register_buffer(name, value, persistent=False)


def _snap_v_init(neuron, s: torch.Tensor) -> None:
    """Round a neuron's initial-membrane buffer to the weight grid, so the integer membrane starts whole."""
    v = getattr(neuron, "_buffers", {}).get("v_init") if neuron is not None else None
    if v is None or not torch.is_floating_point(v):
        return
    if s.numel() == 1:
        step = s.reshape(())
    elif v.numel() == s.numel():
        step = s.reshape(v.shape)
    else:
        return
    with torch.no_grad():
        v.copy_(torch.round(v / step) * step)


def choose_bits(model: nn.Module, config: QuantConfig, data, seed: int = 0) -> tuple[int, ...]:
    """The per-layer widths of ``bits = "auto"``: a one-layer-at-a-time sensitivity search.

    On ``config.auto_samples`` stratified samples of ``data`` (inputs, labels), for each selected
    layer alone, try the widths of ``config.auto_bits`` from the smallest: quantize that layer's
    weight (its scale chosen as in training, on the threshold grid where it has one), measure the
    cross-entropy, restore it; keep the first width whose loss exceeds the unquantized network's by
    at most ``config.auto_tolerance`` (else the largest). Rate-coded inputs are the same draw in
    every trial. Cost: at most ``len(auto_bits)`` forward passes per layer.
    """
    import torch.nn.functional as F

    from spikec.data.sample import stratified_tensors

    layers = select_layers(model, config.layers)
    neurons = driven_neurons(model)
    x, y = stratified_tensors(data, int(config.auto_samples), seed)
    was = model.training
    model.eval()

    def loss() -> float:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return float(F.cross_entropy(model(x), y))

    try:
        base = loss()
        chosen = []
        widths = sorted(int(b) for b in config.auto_bits)
        for name, m in layers.items():
            w = m.weight
            saved = w.detach().clone()
            pick = widths[-1]
            for b in widths:
                q = WeightQuantizer(dataclasses.replace(config, bits=b),
                                    threshold_unit(neurons.get(name), w.shape[0], config.group == "channel"))
                with torch.no_grad():
                    s = q.scale(saved)
                    w.copy_(q.levels(saved, s) * _broadcast(s, saved.shape))
                ok = loss() <= base + float(config.auto_tolerance)
                with torch.no_grad():
                    w.copy_(saved)
                if ok:
                    pick = b
                    break
            chosen.append(pick)
    finally:
        model.train(was)
    return tuple(chosen)


def quantize_(model: nn.Module, config: QuantConfig) -> dict[str, dict]:
    """Post-training quantization of ``model`` in place (prepare and freeze at once)."""
    prepare_qat_(model, config)
    return freeze_(model)
