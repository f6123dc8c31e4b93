"""Pieces the model builders share: input-shape checks, pooling choice, output sizes."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

POOLS = ("avg", "max")

Activation = Callable[[], nn.Module]


def check_input_shape(input_shape: Sequence[int], image: bool = True) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints; images must be ``(C, H, W)``."""
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive sizes, got {tuple(input_shape)}")
    if image and len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W) for this model, got {shape}")
    return shape


def check_classes(num_classes: int) -> int:
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return int(num_classes)


def pool2d(kind: str, kernel_size: int = 2) -> nn.Module:
    """A ``kernel_size`` x ``kernel_size`` pooling with the same stride; avg pooling is linear, so it converts exactly."""
    if kind == "avg":
        return nn.AvgPool2d(kernel_size)
    if kind == "max":
        return nn.MaxPool2d(kernel_size)
    raise ValueError(f"pool must be one of {POOLS}, got {kind!r}")


def global_pool2d(kind: str) -> nn.Module:
    """Pool each channel to one value, whatever the spatial size."""
    if kind == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "max":
        return nn.AdaptiveMaxPool2d(1)
    raise ValueError(f"pool must be one of {POOLS}, got {kind!r}")


def scaled(channels: int, width: float) -> int:
    """Channel count times a width multiplier, at least 1."""
    return max(1, int(round(channels * float(width))))


def classifier_head(in_features: int, hidden: Sequence[int], num_classes: int, act: Activation) -> list[nn.Module]:
    """``Linear -> act`` for each hidden size, then a plain ``Linear`` to the classes (no activation: logits)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_features, int(h)), act()]
        in_features = int(h)
    layers.append(nn.Linear(in_features, num_classes))
    return layers


class InputNormalization(nn.BatchNorm2d):
    """Per-channel input normalisation ``(x - mean) / std``, fixed (not learned, no batch statistics).

    It is an eval-mode batch norm on the input, so conversion folds it exactly into the first
    convolution like any batch norm before a layer (:mod:`spikec.conversion.fold`): the scale goes
    into the weights and the shift into the bias, with a shift current where zero padding cuts the
    kernel at the image border. Training and eval mode compute the same thing.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"input normalisation needs one mean and one std per channel, got {len(mean)} and {len(std)}")
        if min(float(s) for s in std) <= 0:
            raise ValueError(f"input normalisation std must be > 0, got {list(std)}")
        super().__init__(len(mean), eps=0.0, affine=True, track_running_stats=True)
        with torch.no_grad():
            self.running_mean.copy_(torch.tensor([float(m) for m in mean]))
            self.running_var.copy_(torch.tensor([float(s) ** 2 for s in std]))
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    def train(self, mode: bool = True):
        """Always in eval mode: the statistics are the data's, fixed, never the batch's."""
        return super().train(False)


def input_normalization(input_norm, channels: int) -> InputNormalization | None:
    """The normalisation module of an ``input_norm`` option (``[means, stds]`` or ``None``)."""
    if input_norm is None:
        return None
    mean, std = input_norm
    if len(mean) != channels:
        raise ValueError(f"input_norm has {len(mean)} channel means, the input has {channels} channels")
    return InputNormalization(mean, std)


def norm_config(input_norm) -> list | None:
    return None if input_norm is None else [[float(m) for m in input_norm[0]], [float(s) for s in input_norm[1]]]
