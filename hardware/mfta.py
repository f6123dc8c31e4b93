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


def best_scale(chip: ChipLayer, calib: Calibration) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s*, points)``: least-squares threshold scale ``[C, copies, K]`` and in-window calibration points per neuron.

    Neurons that never fire inside their window on the calibration inputs are fitted on all
    calibration points (the unclipped relation; exact for a pure gain error).
    """
    C = chip.chips
    n, P, _ = calib.values.shape
    copies = chip.weight.shape[1]
    c_chip = chip_charge(chip, calib.values.unsqueeze(0).expand(C, *calib.values.shape))  # [C, n, P, K]
    ramp = per_position(chip.ramp, P).unsqueeze(1)  # [C, 1, P|1, K]
    y = 1.0 - calib.charge  # ideal firing time, windows
    valid = ((y > 0) & (y < calib.window)).to(torch.float64)  # [n, P, K]
    z = (ramp * y + c_chip) * valid
    K = z.shape[-1]
    copy_of = torch.arange(P) % copies
    sums = torch.zeros(C, copies, K, dtype=torch.float64).index_add_(1, copy_of, z.sum(1))
    counts = torch.zeros(copies, K, dtype=torch.float64).index_add_(0, copy_of, valid.sum(0))
    # neurons that never fire inside their window on the calibration inputs: all points (the read sees the charge)
    z_all = (ramp * y + c_chip).sum(1)
    sums_all = torch.zeros(C, copies, K, dtype=torch.float64).index_add_(1, copy_of, z_all)
    n_all = torch.zeros(copies, dtype=torch.float64).index_add_(0, copy_of, torch.full((P,), float(n), dtype=torch.float64))
    fallback = sums_all / n_all.clamp(min=1).view(copies, 1)
    scale = torch.where(counts > 0, sums / counts.clamp(min=1), fallback)
    good_ramp = (chip.ramp > 0)
    return torch.where(good_ramp, scale, torch.ones_like(scale)), counts


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
