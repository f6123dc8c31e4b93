"""Spike times on the chip: one layer run step by step in hardware terms, with TTA, on many chips at once.

A layer's run covers its source window (steps ``0 .. S-1``, ``S = 2^b``) and its own window
(``S .. 2S-1``). Input rows integrate the charge ``c' = sum_i w'_i (S - m_i)/S + b'`` with the
chip's realised weights ``w'``; then the ramp rows add ``r'/S`` per step and the neuron fires at
the first step of its window where the membrane reaches its threshold. That firing rule is the
TTFS neuron's own (:func:`spikec.conversion.ttfs_neuron.fire_stepped`), called with the charge
and threshold divided by the chip's ramp slope ``r'`` (``r' = 1`` on an ideal chip).

Without TTA every run lasts its whole window (the readout: two windows, since class scores may
be negative). With TTA, a hidden layer's position run stops at the end of the step in which
``ceil(f * K)`` of its ``K`` neurons have fired (``f = tta_fraction``), or ``tta_time`` steps
after its window opened, whichever is first, else when its window closes; neurons that have not
fired by then stay silent. The readout stops at its first spike with ``tta_output_first`` (else
once all its neurons fired). The class is the earliest output neuron; ties go to the lowest
index, as a priority encoder would.

Times are float tensors of steps with ``inf`` for "no spike".
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.crossbar import ChipLayer
from spikec.hardware.energy import layer_energy
from spikec.hardware.extract import conv_index, fold_outputs, unroll_index, unroll_inputs
from spikec.hardware.source_energy import source_layer_energy

INF = float("inf")


@dataclass(frozen=True)
class RunOptions:
    """What varies between the main run and its ablations."""

    power_gating: bool = True
    tta: bool = True
    tta_fraction: float = 1.0
    tta_time: int | None = None
    tta_output_first: bool = True
    # dtype of the crossbar products; float32 halves the time of accuracy-only sweeps (spike times
    # move only where a charge lies within ~1e-7 of a step boundary)
    charge_dtype: torch.dtype = torch.float64
    # (power_gating, wakeup_on_input) accountings of the same spike times computed beside the run's own:
    # they change only the energy, so ablations of them need no simulation of their own
    extra_accountings: tuple = ()

    @staticmethod
    def from_config(config: HardwareConfig) -> "RunOptions":
        return RunOptions(config.power_gating, config.tta, config.tta_fraction, config.tta_time, config.tta_output_first)

    def replace(self, **changes) -> "RunOptions":
        return dataclasses.replace(self, **changes)


@dataclass
class LayerRun:
    """One layer on ``C`` chips for ``B`` inputs."""

    steps: torch.Tensor  # [C, B, *out_shape] firing step inside the layer's window, inf = silent
    stop: torch.Tensor  # [C, B, P] steps the window ran before the run stopped
    energy: dict | None  # component -> [C, B]
    values: torch.Tensor | None = None  # [C, B, P, N] unrolled input values (kept for calibration)
    charge: torch.Tensor | None = None  # [C, B, P, K]
    extra_energy: list | None = None  # one energy dict per RunOptions.extra_accountings


def per_position(t: torch.Tensor, positions: int) -> torch.Tensor:
    """``[C, copies, ...]`` per-copy quantities as ``[C, P or 1, ...]`` (position ``p`` on copy ``p % copies``)."""
    copies = t.shape[1]
    if copies == 1:
        return t
    return t[:, torch.arange(positions) % copies]


def chip_charge(chip: ChipLayer, values: torch.Tensor) -> torch.Tensor:
    """``[C, B, P, K]`` charge the chip integrates from unrolled input values ``[C, B, P, N]``."""
    P = values.shape[2]
    w = per_position(chip.weight, P).to(values.dtype)  # [C, P|1, N, K]
    b = per_position(chip.bias, P).to(values.dtype)  # [C, P|1, K]
    if w.shape[1] == 1:  # one batched matmul per chip: [C, B*P, N] @ [C, N, K]
        C, B, P_, N = values.shape
        q = torch.bmm(values.reshape(C, B * P_, N), w[:, 0].expand(C, -1, -1)).reshape(C, B, P_, -1)
    else:
        q = torch.einsum("cbpn,cpnk->cbpk", values, w)
    return q + b.unsqueeze(1)


def _conv_split(layer) -> tuple[int, torch.Tensor, torch.Tensor | None] | None:
    """``(c, rest, taps)``: the first ``c * kh * kw`` rows of ``layer`` are the taps of a plain convolution over the
    first ``c`` channels of its stacked source map; ``rest`` indexes the remaining rows (cached). ``taps``: for
    each rest row, the tap of the same convolution over *all* channels of the map that reads what the row
    reads at every position (a replayed identity or 1x1 skip row reads one tap of a later channel), or
    ``None`` when some rest row is no such tap. ``None`` if the layer is no convolution of this form.
    """
    cached = getattr(layer, "_conv_split", False)
    if cached is not False:
        return cached
    out = None
    g = layer.conv
    if g is not None and len(layer.in_shape) == 3:
        idx = unroll_index(layer)
        H, W = layer.in_shape[1:]
        kh, kw = g.kernel
        shapes = layer.source_shapes or (layer.in_shape,)
        for c in dict.fromkeys([layer.in_shape[0], shapes[0][0] if len(shapes[0]) == 3 else 0]):
            n = c * kh * kw
            if 0 < c and n <= idx.shape[1] and idx.shape[0] == g.positions \
                    and torch.equal(idx[:, :n], conv_index(c, g, (H, W))):
                rest = torch.arange(n, idx.shape[1])
                out = (c, rest, _tap_of_rows(idx[:, rest], conv_index(layer.in_shape[0], g, (H, W))))
                break
    object.__setattr__(layer, "_conv_split", out)
    return out


def _tap_of_rows(rows: torch.Tensor, taps: torch.Tensor) -> torch.Tensor | None:
    """For each column of ``rows`` ``[P, r]``, a column of ``taps`` ``[P, M]`` equal to it at every position, or ``None``."""
    if rows.shape[1] == 0:
        return torch.zeros(0, dtype=torch.long)
    if rows.shape[1] * taps.shape[1] * rows.shape[0] > 50_000_000:  # too big to compare at once: gather instead
        return None
    same = (taps.unsqueeze(2) == rows.unsqueeze(1)).all(0)  # [M, r]
    if not bool(same.any(0).all()):
        return None
    return same.to(torch.uint8).argmax(0)


def conv_charge(chip: ChipLayer, v_in: torch.Tensor, window_steps: int | None = None) -> torch.Tensor | None:
    """``[C, B, P, K]`` charge of a convolution layer from its source map ``v_in`` ``[C, B, *in_shape]``, or ``None``.

    The first rows of a convolution layer (all of them, or all but the replayed skip rows of a
    residual block) are the taps of a plain convolution over the first channels of the stacked
    source map, so their crossbar product is ``conv2d`` of the map with each chip's weights: the
    sums :func:`chip_charge` takes over the unrolled values, without building them (profiling a
    CIFAR ResNet-20 put half of a run in that gather and product). Rows that each read one tap
    of the same convolution over later channels (a residual block's replayed identity or 1x1 skip
    rows) join its kernel at that tap, zero elsewhere (one conv2d per chip instead of a gather and
    a second product); other rows are gathered.
    Needs one copy of the cells (positions on different copies use different weights).
    """
    layer = chip.crossbar.layer
    split = _conv_split(layer)
    if split is None or chip.weight.shape[1] != 1:
        return None
    c_in, rest, taps = split
    g = layer.conv
    kh, kw = g.kernel
    C, _, N, K = chip.weight.shape
    n = c_in * kh * kw
    # float64 runs of a chip on its cell grid: exact integer products in float32 (see grid_levels)
    levels = grid_levels(chip, window_steps) if v_in.dtype == torch.float64 and window_steps else None
    w = chip.weight[:, 0].to(v_in.dtype) if levels is None else levels  # [C, N, K]
    if taps is not None and rest.numel():
        # the rest rows read single taps of a convolution over all channels: one conv2d with those rows'
        # weights added at their taps (zero elsewhere) instead of a gather and a product
        c_in = layer.in_shape[0]
        wide = w.new_zeros(C, c_in * kh * kw, K)
        wide[:, :n] = w[:, :n]
        wide.index_add_(1, taps, w[:, rest])
        w, n, rest = wide, c_in * kh * kw, rest[:0]
    x = v_in[..., :c_in, : g.crop[0], : g.crop[1]]
    if levels is not None:  # whole levels times whole input steps (S v = S - m): exact in float32
        x = x.mul(float(window_steps)).to(torch.float32)
    wc = w[:, :n].transpose(1, 2).reshape(C, K, c_in, kh, kw)
    out = []
    for c in range(C):
        y = torch.nn.functional.conv2d(x[c], wc[c], stride=g.stride, padding=g.padding, dilation=g.dilation)
        out.append(y.flatten(2).transpose(1, 2))  # [B, P, K], positions row-major as in conv_index
    q = torch.stack(out)
    if levels is not None:
        q = q.to(torch.float64) * (chip.crossbar.step.to(torch.float64) / window_steps)
        w = chip.weight[:, 0].to(v_in.dtype)
    if rest.numel():
        idx = unroll_index(layer)[:, rest]
        v_rest = unroll_inputs(layer, v_in, 0.0, index=idx)  # [C, B, P, r]
        B, P = v_rest.shape[1:3]
        q = q + torch.bmm(v_rest.reshape(C, B * P, -1), w[:, rest]).reshape(C, B, P, K)
    return q + chip.bias[:, :1].to(v_in.dtype).unsqueeze(1)


def grid_levels(chip: ChipLayer, window_steps: int) -> torch.Tensor | None:
    """The chip's weights as whole levels of each column's step, ``[C, N, K]`` float32, or ``None``.

    Weights of a chip without variation are whole levels ``l`` of their pair's step (up to float64
    rounding of the conductances), and input values are whole steps ``(S - m) / S``, so the
    crossbar product is ``step / S`` times a sum of integer products; while every column's
    ``S sum |l|`` stays below ``2^24`` that sum is exact in float32 in any order. A float64
    ``conv2d`` on CPU was 8-20x slower than a float32 one in an ad-hoc timing (the energy runs of the
    study went 1.26x faster, ``benchmarks/pe_sweep_speed.py``), so the nominal chip's products run on the levels. ``None`` where a weight is off the
    grid (a varied chip), the sums could leave float32's integers, or the cells have several copies.
    """
    key = ("_grid_levels", int(window_steps))
    if key in chip.__dict__:
        return chip.__dict__[key]
    out = None
    step = chip.crossbar.step.to(torch.float64)  # [K]
    if chip.weight.shape[1] == 1 and bool((step > 0).all()):
        w = chip.weight[:, 0].to(torch.float64)
        levels = torch.round(w / step)
        on_grid = bool(((w - levels * step).abs() <= 1e-9 * step).all())
        if on_grid and float(levels.abs().sum(-2).max()) * window_steps < 2.0 ** 24:
            out = levels.to(torch.float32)
    chip.__dict__[key] = out
    return out


def input_values(steps: torch.Tensor, window_steps: int) -> torch.Tensor:
    """What input spikes at ``steps`` (``inf``: none) carry, ``(S - m) / S`` clipped at 0, in ``steps``'s dtype
    (``k / S`` is exact)."""
    return torch.sub(float(window_steps), steps).div_(window_steps).clamp_(min=0.0)


def fire_steps(charge: torch.Tensor, ramp: torch.Tensor, threshold: torch.Tensor | float, steps: int,
               windows: int = 1) -> torch.Tensor:
    """Firing step (``0 .. windows*steps - 1``, ``inf`` if none) of neurons ramping with slope ``ramp``.

    The TTFS neuron's stepped rule (:func:`spikec.conversion.ttfs_neuron.fire_stepped`) on
    ``charge / ramp`` and ``threshold / ramp``: window ``w`` fires at step
    ``max(ceil(steps * (theta - c - w) - 1/2), 0)`` if that is below ``steps``. Written out here, in
    the charge's dtype, because it runs on every neuron of every chip (the stepped rule's
    straight-through gradient terms cost a third of a CIFAR run). A pair whose ramp is not positive
    (dead ramp cells) fires at step 0 if its charge reaches the threshold, else never.
    """
    good = ramp > 0
    all_good = bool(good.all())
    r = ramp if all_good else torch.where(good, ramp, torch.ones_like(ramp))
    c = charge / r
    theta = threshold / r
    k = float(steps)
    out = torch.ceil_(torch.sub(theta, c).mul_(k).sub_(0.5)).clamp_(min=0.0)
    out.masked_fill_(out >= k, INF)
    for w in range(1, windows):
        m = torch.ceil(k * (theta - (c + w)) - 0.5).clamp_(min=0.0)
        out = torch.where(torch.isinf(out) & (m < k), m + w * k, out)
    if all_good:
        return out
    dead = (~good).expand_as(charge)
    at_once = torch.where(charge >= threshold, torch.zeros_like(charge), torch.full_like(charge, INF))
    return torch.where(dead, at_once, out)


def kth_firing_step(steps_out: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest firing step over the last dimension (``inf`` where fewer than ``k`` neurons fire).

    ``torch.kthvalue`` only on the positions where at least ``k`` neurons fire: in a TTFS network
    about half the neurons stay silent, so with ``k`` at 70% of a layer few positions qualify, and
    selecting them first was 2-5x faster than ``kthvalue`` over all positions in an ad-hoc timing on
    CIFAR ResNet-20 layer shapes (``benchmarks/pe_sweep_speed.py`` times it within a sweep).
    """
    if k == 1:
        return steps_out.amin(-1)
    enough = (steps_out < INF).sum(-1) >= k
    kth = torch.full(steps_out.shape[:-1], INF, dtype=steps_out.dtype, device=steps_out.device)
    if bool(enough.any()):
        kth[enough] = torch.kthvalue(steps_out[enough], k, dim=-1).values
    return kth


def tta_stop(steps_out: torch.Tensor, fraction: float, window: int, tta_time: int | None = None, first: bool = False) -> torch.Tensor:
    """Steps each position's run lasts (``[..., P]``) given firing steps ``[..., P, K]``.

    Stops at the end of the step in which ``ceil(fraction * K)`` neurons (1 with ``first``) have
    fired, at ``tta_time``, or at ``window``; whichever comes first.
    """
    K = steps_out.shape[-1]
    k = 1 if first else max(1, min(K, math.ceil(fraction * K - 1e-9)))
    kth = kth_firing_step(steps_out, k)
    stop = torch.where(torch.isfinite(kth), kth + 1, torch.full_like(kth, float(window)))
    stop = stop.clamp(max=float(window))
    if tta_time is not None:
        stop = stop.clamp(max=float(tta_time))
    return stop


def run_layer(
    chip: ChipLayer,
    steps_in: torch.Tensor,
    config: HardwareConfig,
    options: RunOptions,
    threshold_scale: torch.Tensor | None = None,
    with_energy: bool = True,
    keep: bool = False,
) -> LayerRun:
    """Run one layer on every chip: ``steps_in`` ``[C, B, *in_shape]`` (stacked sources) -> :class:`LayerRun`.

    ``threshold_scale``: ``[C, copies, K]`` per-neuron threshold scales (MFTA), default 1.
    """
    layer = chip.crossbar.layer
    S = config.window_steps
    # accuracy-only runs stay in the charge dtype throughout (steps are small integers, exact in float32);
    # runs with energy or kept tensors in float64
    dtype = options.charge_dtype if not (with_energy or keep) else torch.float64
    steps_in = steps_in.to(dtype)
    # values on the source maps first, then one gather (the unrolled tensor is the big one); k / S is exact
    v_in = input_values(steps_in, S).to(options.charge_dtype)
    charge = None if keep else conv_charge(chip, v_in, S)
    values = None
    if charge is None:
        values = unroll_inputs(layer, v_in, 0.0)  # [C, B, P, N]
        charge = chip_charge(chip, values)
    charge = charge.to(dtype)
    P = charge.shape[2]
    ramp = per_position(chip.ramp, P).unsqueeze(1).to(dtype)
    theta = 1.0 if threshold_scale is None else per_position(threshold_scale.to(dtype), P).unsqueeze(1)
    windows = 2 if layer.readout else 1
    m = fire_steps(charge, ramp, theta, S, windows)
    if options.tta:
        first = layer.readout and options.tta_output_first
        fraction = 1.0 if layer.readout else options.tta_fraction
        tta_time = None if layer.readout else options.tta_time
        stop = tta_stop(m, fraction, windows * S, tta_time, first)
    else:
        stop = torch.full(m.shape[:-1], float(windows * S), dtype=m.dtype)
    m = m.masked_fill_(m >= stop.unsqueeze(-1), INF)
    energy = None
    if with_energy:
        energy = source_layer_energy(chip, steps_in, m, stop, config, options.power_gating)
        extra = [source_layer_energy(chip, steps_in, m, stop, config, bool(pg), wakeup=bool(w))
                 for pg, w in options.extra_accountings]
    out = fold_outputs(layer, m)
    return LayerRun(out, stop, energy, values if keep else None, charge if keep else None,
                    extra if with_energy else None)


def unrolled_energy(chip: ChipLayer, steps_in: torch.Tensor, m: torch.Tensor, stop: torch.Tensor,
                    config: HardwareConfig, options: RunOptions) -> dict:
    """Accounting of one layer run by :func:`layer_energy` on the unrolled row times (steps counted from the
    opening of the source window): the specification :func:`source_layer_energy`, which ``run_layer`` uses, equals."""
    t_unf = unroll_inputs(chip.crossbar.layer, steps_in.to(torch.float64), INF)
    xb = chip.crossbar
    S = config.window_steps
    lead = t_unf.shape[:-1]
    bias_on = float(S - S // config.late_bias)  # the bias rows conduct the window's last S / late_bias steps
    aux = [torch.full((*lead, xb.bias_rows), bias_on, dtype=t_unf.dtype), torch.full((*lead, xb.ramp_rows), float(S), dtype=t_unf.dtype),
           t_unf[..., xb.dup_of]]
    t_rows = torch.cat([t_unf] + aux, dim=-1)
    row_end = torch.cat([torch.full((xb.input_rows + xb.bias_rows,), float(S), dtype=torch.float64),
                         torch.full((xb.ramp_rows,), INF, dtype=torch.float64),
                         torch.full((xb.dup_of.numel(),), float(S), dtype=torch.float64)])
    address_bits = torch.full((t_rows.shape[-1],), float(xb.tiling.address_bits), dtype=torch.float64)
    address_bits[xb.input_rows:xb.input_rows + xb.bias_rows + xb.ramp_rows] = 0.0  # the controller's rows: fixed slots
    return layer_energy(
        chip.g_pos, chip.g_neg, t_rows, S + m + 1, S + stop, config,
        row_end=row_end, fire_start=float(S), buffered_rows=xb.input_rows,
        col_tiles=xb.row_col_tiles, tiles=xb.tiling.tiles, address_bits=address_bits,
        power_gating=options.power_gating,
    )
