"""What a loaded dataset is: its shapes, classes and where it came from."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from spikec.errors import SpikecError


@dataclass(frozen=True)
class DatasetInfo:
    """``input_shape`` of one sample (e.g. ``(1, 8, 8)``), ``num_classes``, class names and source."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    classes: tuple[str, ...]
    source: str
    format: str

    def to_dict(self) -> dict:
        """Plain data for checkpoints and JSON."""
        return {
            "name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "classes": list(self.classes), "source": self.source, "format": self.format,
        }


def as_dataset(x, y, source: str) -> TensorDataset:
    """A ``TensorDataset`` of float32 inputs and int64 labels, checking that they pair up."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y).long()
    if y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise SpikecError(f"{source}: {x.shape[0]} inputs but labels of shape {tuple(y.shape)}")
    if y.numel() and y.min() < 0:
        raise SpikecError(f"{source}: labels must be non-negative class indices, found {int(y.min())}")
    if x.stride() != _row_major_strides(x.shape):
        # row-major strides even on size-1 axes: a [N, 1, H, W] view of [N, H, W, 1] data counts as contiguous
        # but makes convolutions return channels-last outputs, on which a model's .view() fails
        x = x.clone(memory_format=torch.contiguous_format)
    return TensorDataset(x, y.contiguous())


def _row_major_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


def scale_pixels(x) -> torch.Tensor:
    """uint8 pixels to ``[0, 1]`` floats; float data is kept as it is."""
    t = torch.as_tensor(x)
    if t.dtype == torch.uint8:
        return t.to(torch.float32).div_(255.0)  # in place: one pass, same values as t.float() / 255
    return t.float()
