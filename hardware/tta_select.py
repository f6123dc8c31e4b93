"""Choosing the TTA fraction per network on calibration data instead of assuming one.

TTA stops a layer's run once a fraction ``f`` of its neurons fired. The preset's ``f = 0.7`` was
the smallest fraction without accuracy loss on the digits networks; on a CIFAR ResNet-20 it costs
more than a point (BENCHMARKS.md). :func:`select_tta_fraction` measures the nominal chip on
training inputs (a seeded stratified draw, never test data), without TTA and at each candidate
fraction from the largest down, and returns the smallest fraction whose accuracy stays within
``tolerance`` of the run without TTA. The scan stops at the first fraction that loses more: below
it accuracy falls steeply on every curve measured here (ResNet-20: 85.8% at 0.6, 83.0% at 0.5,
81.6% at 0.4), while above it the curve is flat within a few tenths and need not be monotone.
On the CIFAR networks the training draw underestimates the test-set cost (networks fit their
training images with larger margins; ``benchmarks/tta_selection.py``), so this is an option of
``spikec energy``, not its default.
"""
from __future__ import annotations

import torch

from spikec.hardware.timing import RunOptions

CANDIDATES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TOLERANCE = 0.005  # accuracy (fraction) TTA may cost on the calibration inputs


def chip_accuracy(model, chips, x: torch.Tensor, y: torch.Tensor, options: RunOptions) -> float:
    """Fraction of ``(x, y)`` the simulated ``chips`` classify correctly under ``options``."""
    return float((model.predict(chips, x, options)[0] == y).to(torch.float64).mean())


def select_tta_fraction(model, x: torch.Tensor, y: torch.Tensor, options: RunOptions,
                        candidates=CANDIDATES, tolerance: float = TOLERANCE) -> dict:
    """``{"fraction", "tolerance", "samples", "accuracy_without_tta", "curve"}`` on the nominal chip.

    ``fraction`` is the smallest candidate whose accuracy on ``(x, y)`` is at least the accuracy
    without TTA minus ``tolerance``; ``1.0`` (stop when all neurons fired) when none is.
    ``curve`` lists ``{fraction, accuracy}`` for the candidates measured (largest first).
    """
    if not candidates or any(not 0.0 < float(f) <= 1.0 for f in candidates):
        raise ValueError(f"TTA candidates must lie in (0, 1], got {candidates}")
    if tolerance < 0:
        raise ValueError(f"TTA tolerance must be >= 0, got {tolerance}")
    chips = model.nominal()
    fast = options.replace(charge_dtype=torch.float32)

    def accuracy(opts: RunOptions) -> float:
        return chip_accuracy(model, chips, x, y, opts)

    reference = accuracy(fast.replace(tta=False))
    chosen, curve = 1.0, []
    for f in sorted({float(c) for c in candidates}, reverse=True):
        acc = accuracy(fast.replace(tta=True, tta_fraction=f))
        curve.append({"fraction": f, "accuracy": acc})
        if acc < reference - tolerance:
            break
        chosen = f
    return {"fraction": chosen, "tolerance": float(tolerance), "samples": int(x.shape[0]),
            "accuracy_without_tta": reference, "curve": curve}
