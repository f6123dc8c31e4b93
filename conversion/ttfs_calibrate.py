"""Calibration for TTFS conversion: run the ANN graph on sample inputs and record every node's range.

The largest activation of each ReLU sets the length of that layer's window (the value a spike at
``t_min`` means); the largest |logit| normalises the readout; the input range sets the encoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import fx
from torch.utils.data import DataLoader, Dataset

from spikec.errors import SpikecError


@dataclass
class NodeRange:
    """Per-sample output shape of a node and the extremes of its values (``shape`` None: not a tensor)."""

    shape: tuple | None
    max: float = float("-inf")
    min: float = float("inf")

    @property
    def abs_max(self) -> float:
        return max(abs(self.max), abs(self.min))


def calibration_batches(calib_data, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Input batches from a tensor ``[N, ...]``, a dataset of ``(x, y)`` or ``x`` items, or a loader."""
    if isinstance(calib_data, torch.Tensor):
        for start in range(0, calib_data.shape[0], batch_size):
            yield calib_data[start:start + batch_size]
        return
    if isinstance(calib_data, Dataset):
        calib_data = DataLoader(calib_data, batch_size=batch_size, shuffle=False)
    try:
        batches = iter(calib_data)
    except TypeError:
        raise SpikecError(f"calibration data must be a tensor, a dataset or a data loader, got {type(calib_data).__name__}")
    for batch in batches:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


class _RangeRecorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, ranges: dict[str, NodeRange]):
        super().__init__(gm)
        self.ranges = ranges

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        r = self.ranges.get(n.name)
        if isinstance(out, torch.Tensor) and out.dim() >= 1:
            if r is None:
                r = self.ranges[n.name] = NodeRange(tuple(out.shape[1:]))
            if out.numel():
                r.max = max(r.max, float(out.detach().max()))
                r.min = min(r.min, float(out.detach().min()))
        elif r is None:
            self.ranges[n.name] = NodeRange(None)
        return out


@torch.no_grad()
def calibrate(gm: fx.GraphModule, calib_data, batch_size: int = 256) -> dict[str, NodeRange]:
    """Ranges of every node of ``gm`` over the calibration inputs (keyed by node name)."""
    ranges: dict[str, NodeRange] = {}
    recorder = _RangeRecorder(gm, ranges)
    param = next(gm.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    seen = 0
    for x in calibration_batches(calib_data, batch_size):
        x = torch.as_tensor(x).to(device)
        recorder.run(x.to(dtype) if x.is_floating_point() else x)
        seen += x.shape[0]
    if seen == 0:
        raise SpikecError("calibration data is empty: TTFS conversion needs sample inputs to set its time windows")
    return ranges
