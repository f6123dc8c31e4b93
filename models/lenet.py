"""LeNet-5-style CNN: two ``conv -> [BN] -> act -> pool`` stages and a fully connected head.

LeCun et al. (1998) used 5x5 kernels on 32x32 inputs. Here convolutions keep the spatial size
("same" padding) and the kernel shrinks to 3x3 for inputs smaller than 16 pixels, so the same
model runs on 8x8 digits, 28x28 MNIST and 32x32 CIFAR. A pooling step is skipped once the
feature map is down to 1 pixel.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from spikec.models.common import (
    Activation, check_classes, check_input_shape, classifier_head, input_normalization, norm_config, pool2d,
)


class LeNet(nn.Module):
    """``features`` (conv stages) then ``classifier`` (flatten and linear layers); the output is logits."""

    arch_name = "lenet"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        act: Activation = nn.ReLU,
        channels: Sequence[int] = (16, 32),
        hidden: Sequence[int] = (120, 84),
        kernel_size: int | None = None,
        pool: str = "avg",
        batch_norm: bool = True,
        input_norm: Sequence[Sequence[float]] | None = None,
    ):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        self.input_norm = input_normalization(input_norm, c)
        classes = check_classes(num_classes)
        k = int(kernel_size) if kernel_size is not None else (5 if min(h, w) >= 16 else 3)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {k}")
        layers: list[nn.Module] = []
        for out_c in channels:
            layers.append(nn.Conv2d(c, int(out_c), k, padding=k // 2, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(out_c)))
            layers.append(act())
            if min(h, w) >= 2:
                layers.append(pool2d(pool))
                h, w = h // 2, w // 2
            c = int(out_c)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), *classifier_head(c * h * w, hidden, classes, act))
        self.arch_config = {
            "input_shape": list(check_input_shape(input_shape)),
            "num_classes": classes,
            "channels": [int(x) for x in channels],
            "hidden": [int(x) for x in hidden],
            "kernel_size": kernel_size if kernel_size is None else int(kernel_size),
            "pool": pool,
            "batch_norm": bool(batch_norm),
            "input_norm": norm_config(input_norm),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            x = self.input_norm(x)
        return self.classifier(self.features(x))
