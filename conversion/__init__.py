"""ANN-to-SNN conversion: rate coding (IF neurons, threshold balancing, QCFS) and TTFS coding."""
from __future__ import annotations

from torch import nn

CODINGS = ("rate", "ttfs")


def convert(ann: nn.Module, calib_data, coding: str = "rate", **options) -> nn.Module:
    """Convert a trained ANN into an SNN classifier (static ``[B, ...]`` in, scores ``[B, classes]`` out).

    ``calib_data`` is a tensor of inputs, a dataset or a data loader used to set thresholds
    (rate) or time windows (TTFS). ``options`` go to :func:`spikec.conversion.rate.convert_rate`
    or :func:`spikec.conversion.ttfs.convert_ttfs`.
    """
    if coding == "rate":
        from spikec.conversion.rate import convert_rate

        return convert_rate(ann, calib_data, **options)
    if coding == "ttfs":
        from spikec.conversion.ttfs import convert_ttfs

        return convert_ttfs(ann, calib_data, **options)
    raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
