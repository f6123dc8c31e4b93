"""VGG: stacks of 3x3 convolutions separated by 2x2 pooling, then a fully connected head.

The layer lists of VGG-11/13/16/19 are those of Simonyan & Zisserman (2015), Table 1
(configurations A, B, D, E). ``width`` scales every channel count, so a narrow VGG fits a CPU
test. A pooling step ("M") is skipped once the feature map is down to 1 pixel, which lets deep
VGGs run on 8x8 inputs.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from spikec.models.common import (
    Activation, check_classes, check_input_shape, classifier_head, input_normalization, norm_config, pool2d, scaled,
)

VGG_LAYERS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """``features`` (conv and pooling) then ``classifier``. ``layers`` (ints = conv channels, "M" =
    pooling) overrides the standard list chosen by ``depth``."""

    arch_name = "vgg"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        act: Activation = nn.ReLU,
        depth: int = 11,
        layers: Sequence[int | str] | None = None,
        batch_norm: bool = True,
        pool: str = "avg",
        hidden: Sequence[int] = (512,),
        width: float = 1.0,
        input_norm: Sequence[Sequence[float]] | None = None,
    ):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        self.input_norm = input_normalization(input_norm, c)
        classes = check_classes(num_classes)
        if layers is None:
            if int(depth) not in VGG_LAYERS:
                raise ValueError(f"VGG depth must be one of {sorted(VGG_LAYERS)} (or give layers), got {depth}")
            spec = VGG_LAYERS[int(depth)]
        else:
            spec = list(layers)
        if not any(item != "M" for item in spec):
            raise ValueError("VGG layers must contain at least one convolution")
        modules: list[nn.Module] = []
        for item in spec:
            if item == "M":
                if min(h, w) >= 2:
                    modules.append(pool2d(pool))
                    h, w = h // 2, w // 2
                continue
            if isinstance(item, str) or int(item) < 1:
                raise ValueError(f"VGG layers hold channel counts and 'M', got {item!r}")
            out_c = scaled(int(item), width)
            modules.append(nn.Conv2d(c, out_c, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                modules.append(nn.BatchNorm2d(out_c))
            modules.append(act())
            c = out_c
        self.features = nn.Sequential(*modules)
        self.classifier = nn.Sequential(nn.Flatten(), *classifier_head(c * h * w, hidden, classes, act))
        self.arch_config = {
            "input_shape": list(check_input_shape(input_shape)),
            "num_classes": classes,
            "depth": int(depth),
            "layers": None if layers is None else [i if i == "M" else int(i) for i in layers],
            "batch_norm": bool(batch_norm),
            "pool": pool,
            "hidden": [int(x) for x in hidden],
            "width": float(width),
            "input_norm": norm_config(input_norm),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            x = self.input_norm(x)
        return self.classifier(self.features(x))
