"""Multi-level firing threshold adjustment (MFTA): per-neuron thresholds that undo a chip's column errors.

Calibration read: the controller replays known calibration inputs (the input spike times each
layer sees in the ideal network, for ``calib_samples`` training inputs) into the layer's crossbar
and observes the charge ``c'`` each column pair integrates and its ramp slope ``r'``. The ideal
pair would fire at ``y = 1 - c`` (window units) with the ideal charge ``c``; the chip fires at
``(s - c') / r'`` with threshold scale ``s``. The squared timing error summed over the
calibration points where the ideal neuron fires inside its window,
``J(s) = sum ((s - c') / r' - y)^2``, is a parabola in ``s`` with its minimum at

    ``s* = mean(r' * y + c')``.

A pure gain error ``g`` of the pair (``c' = g c``, ``r' = g``) gives ``s* = g``: the threshold
scales with the gain and the spike times are exact again. Compensation modes:

- ``"none"``: ``s = 1``;
- ``"mfta"``: the level of the threshold register nearest to ``s*``. The levels are
  ``exp(step * k)`` for ``k = -L//2 .. L-1-L//2`` (``L = mfta_levels``), which include 1, so
  ``J(mfta) <= J(none)`` for every neuron of every chip;
- ``"ideal"``: ``s = s*`` (a continuous threshold).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.crossbar import ChipLayer
from spikec.hardware.timing import chip_charge, per_position

COMPENSATIONS = ("none", "mfta", "ideal")


@dataclass(frozen=True)
class Calibration:
    """Calibration read of one layer: unrolled input values and the ideal charge they give."""

    values: torch.Tensor  # [n, P, N]
    charge: torch.Tensor  # [n, P, K] ideal (software weights)
    window: int  # windows the neuron may fire in (2 for the readout)


def threshold_levels(config: HardwareConfig) -> torch.Tensor:
    """The ``L`` threshold scales of the MFTA register (1 among them)."""
    L = config.mfta_levels
    k = torch.arange(L, dtype=torch.float64) - L // 2
    return torch.exp(config.mfta_step * k)


@dataclass(frozen=True)
class ReadSums:
    """Sums over a calibration read that make ``s*`` linear in each chip's cells (per copy of the cells)."""

    fired_values: torch.Tensor  # [copies, N, K] input values summed over each neuron's in-window points
    fired_y: torch.Tensor  # [copies, K] ideal firing times summed over the same points
    counts: torch.Tensor  # [copies, K] in-window points
    all_values: torch.Tensor  # [copies, N] input values summed over all points
    all_y: torch.Tensor  # [copies, K]
    points: torch.Tensor  # [copies] all points


def read_sums(calib: Calibration, copies: int) -> ReadSums:
    """:class:`ReadSums` of ``calib`` for cells in ``copies`` copies (position ``p`` on copy ``p % copies``)."""
    n, P, N = calib.values.shape
    values = calib.values.to(torch.float64)
    y = 1.0 - calib.charge.to(torch.float64)  # ideal firing time, windows
    valid = ((y > 0) & (y < calib.window)).to(torch.float64)  # [n, P, K]
    K = y.shape[-1]
    out = {k: [] for k in ("fired_values", "fired_y", "counts", "all_values", "all_y", "points")}
    for q in range(copies):
        on = torch.arange(q, P, copies)
        v, t, ok = values[:, on].reshape(-1, N), y[:, on].reshape(-1, K), valid[:, on].reshape(-1, K)
        out["fired_values"].append(v.T @ ok)
        out["fired_y"].append((t * ok).sum(0))
        out["counts"].append(ok.sum(0))
        out["all_values"].append(v.sum(0))
        out["all_y"].append(t.sum(0))
        out["points"].append(torch.tensor(float(v.shape[0]), dtype=torch.float64))
    return ReadSums(**{k: torch.stack(v) for k, v in out.items()})


def best_scale(chip: ChipLayer, calib: Calibration) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s*, points)``: least-squares threshold scale ``[C, copies, K]`` and in-window calibration points per neuron.

    Neurons that never fire inside their window on the calibration inputs are fitted on all
    calibration points (the unclipped relation; exact for a pure gain error). The chip's charge
    ``c' = v w' + b'`` is linear in its cells, so ``sum (r' y + c')`` over a neuron's points is
    ``r' sum y + w' . sum v + b' count``: the read's sums (:func:`read_sums`, once per layer) stand in for
    the charges of every chip, which the sweep would otherwise integrate for every calibration input.
    """
    copies = chip.weight.shape[1]
    sums_of = calib.__dict__.setdefault("_sums", {})  # per layer and copy count, shared by every chip set
    if copies not in sums_of:
        sums_of[copies] = read_sums(calib, copies)
    r = sums_of[copies]
    w = chip.weight.to(torch.float64)  # [C, copies, N, K]
    b = chip.bias.to(torch.float64)  # [C, copies, K]
    ramp = chip.ramp.to(torch.float64)
    sums = torch.einsum("cqnk,qnk->cqk", w, r.fired_values) + b * r.counts + ramp * r.fired_y
    sums_all = torch.einsum("cqnk,qn->cqk", w, r.all_values) + b * r.points.view(-1, 1) + ramp * r.all_y
    fallback = sums_all / r.points.clamp(min=1).view(-1, 1)
    scale = torch.where(r.counts > 0, sums / r.counts.clamp(min=1), fallback)
    good_ramp = (chip.ramp > 0)
    return torch.where(good_ramp, scale, torch.ones_like(scale)), r.counts


def best_scale_from_charges(chip: ChipLayer, calib: Calibration) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`best_scale` written as its docstring states it, from every chip's charge on every calibration
    point: the specification the read-sum form is tested against (and the former computation, timed
    beside it by ``benchmarks/pe_sweep_speed.py``)."""
    C, copies = chip.chips, chip.weight.shape[1]
    n, P, _ = calib.values.shape
    c_chip = chip_charge(chip, calib.values.unsqueeze(0).expand(C, *calib.values.shape))  # [C, n, P, K]
    ramp = per_position(chip.ramp, P).unsqueeze(1)
    y = 1.0 - calib.charge
    valid = ((y > 0) & (y < calib.window)).to(torch.float64)
    z = ramp * y + c_chip
    copy_of = torch.arange(P) % copies
    K = z.shape[-1]
    sums = torch.zeros(C, copies, K, dtype=torch.float64).index_add_(1, copy_of, (z * valid).sum(1))
    counts = torch.zeros(copies, K, dtype=torch.float64).index_add_(0, copy_of, valid.sum(0))
    sums_all = torch.zeros(C, copies, K, dtype=torch.float64).index_add_(1, copy_of, z.sum(1))
    n_all = torch.zeros(copies, dtype=torch.float64).index_add_(0, copy_of, torch.full((P,), float(n), dtype=torch.float64))
    scale = torch.where(counts > 0, sums / counts.clamp(min=1), sums_all / n_all.view(copies, 1))
    return torch.where(chip.ramp > 0, scale, torch.ones_like(scale)), counts


def nearest_level(scale: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Each entry of ``scale`` replaced by the nearest entry of ``levels``."""
    idx = (scale.unsqueeze(-1) - levels).abs().argmin(-1)
    return levels[idx]


def compensate(chip: ChipLayer, calib: Calibration, config: HardwareConfig, mode: str) -> torch.Tensor | None:
    """Threshold scales ``[C, copies, K]`` for ``mode`` (``None`` for ``"none"``: all ones)."""
    if mode not in COMPENSATIONS:
        raise ValueError(f"compensation must be one of {COMPENSATIONS}, got {mode!r}")
    if mode == "none":
        return None
    s, _ = best_scale(chip, calib)
    return s if mode == "ideal" else nearest_level(s, threshold_levels(config))


def timing_error(chip: ChipLayer, calib: Calibration, scale: torch.Tensor | None) -> torch.Tensor:
    """``J(s)`` per neuron ``[C, copies, K]``: squared firing-time error (windows^2) over the calibration points."""
    C = chip.chips
    n, P, _ = calib.values.shape
    copies = chip.weight.shape[1]
    s = torch.ones_like(chip.ramp) if scale is None else scale
    c_chip = chip_charge(chip, calib.values.unsqueeze(0).expand(C, *calib.values.shape))
    ramp = per_position(chip.ramp, P).unsqueeze(1)
    y = 1.0 - calib.charge
    valid = ((y > 0) & (y < calib.window)).to(torch.float64)
    err = (((per_position(s, P).unsqueeze(1) - c_chip) / ramp - y) ** 2) * valid
    copy_of = torch.arange(P) % copies
    return torch.zeros(C, copies, err.shape[-1], dtype=torch.float64).index_add_(1, copy_of, err.sum(1))
