"""Small residual networks of basic blocks (He et al. 2016).

``depth`` 20/32/44/56/110 gives the CIFAR ResNets (three stages of ``(depth-2)/6`` blocks,
16/32/64 channels, Section 4.2 of the paper); 18 and 34 give the ImageNet basic-block layouts
(stages of 2-2-2-2 / 3-4-6-3 blocks, 64..512 channels) with a 3x3 stem, as used on CIFAR.
Every stage after the first halves the feature map while it is at least 2 pixels.

The residual addition is a plain ``out + identity`` in ``forward`` so ``torch.fx`` traces it
and the multi-step runner and converters see it as one ``add`` node.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from spikec.models.common import (
    Activation, check_classes, check_input_shape, global_pool2d, input_normalization, norm_config, scaled,
)

IMAGENET_LAYOUTS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}
IMAGENET_CHANNELS = [64, 128, 256, 512]
CIFAR_CHANNELS = [16, 32, 64]


def resnet_layout(depth: int) -> tuple[list[int], list[int]]:
    """``(blocks per stage, channels per stage)`` of a standard ResNet depth."""
    depth = int(depth)
    if depth in IMAGENET_LAYOUTS:
        return list(IMAGENET_LAYOUTS[depth]), list(IMAGENET_CHANNELS)
    if depth >= 8 and (depth - 2) % 6 == 0:
        n = (depth - 2) // 6
        return [n, n, n], list(CIFAR_CHANNELS)
    raise ValueError(f"ResNet depth must be 18, 34 or 6n+2 (20, 32, 44, 56, 110), got {depth}")


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, batch_norm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)
    return [conv, nn.BatchNorm2d(c_out)] if batch_norm else [conv]


class BasicBlock(nn.Module):
    """``act(residual(x) + shortcut(x))`` with residual = conv-BN-act-conv-BN; the shortcut is the
    identity, or a strided 1x1 conv-BN where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: Activation, batch_norm: bool):
        super().__init__()
        self.residual = nn.Sequential(
            *_conv_bn(c_in, c_out, 3, stride, batch_norm), act(), *_conv_bn(c_out, c_out, 3, 1, batch_norm)
        )
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride, batch_norm))
        else:
            self.shortcut = None
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.residual(x)
        return self.act(out + identity)


class ResNet(nn.Module):
    """``stem`` (3x3 conv-BN-act), ``stages`` of basic blocks, then ``head`` (global pool, flatten, linear)."""

    arch_name = "resnet"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        act: Activation = nn.ReLU,
        depth: int = 20,
        blocks: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
        batch_norm: bool = True,
        pool: str = "avg",
        width: float = 1.0,
        input_norm: Sequence[Sequence[float]] | None = None,
    ):
        super().__init__()
        c, h, w = check_input_shape(input_shape)
        self.input_norm = input_normalization(input_norm, c)
        classes = check_classes(num_classes)
        std_blocks, std_channels = resnet_layout(depth) if blocks is None or channels is None else ([], [])
        stage_blocks = [int(b) for b in (blocks if blocks is not None else std_blocks)]
        stage_channels = [scaled(int(ch), width) for ch in (channels if channels is not None else std_channels)]
        if len(stage_blocks) != len(stage_channels) or not stage_blocks or min(stage_blocks) < 1:
            raise ValueError(f"ResNet needs one channel count per stage and >= 1 block each, got blocks={stage_blocks}, "
                             f"channels={stage_channels}")
        self.stem = nn.Sequential(*_conv_bn(c, stage_channels[0], 3, 1, batch_norm), act())
        c = stage_channels[0]
        stages = []
        for i, (n, out_c) in enumerate(zip(stage_blocks, stage_channels)):
            stride = 2 if i > 0 and min(h, w) >= 2 else 1
            if stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
            stage = [BasicBlock(c, out_c, stride, act, batch_norm)]
            stage += [BasicBlock(out_c, out_c, 1, act, batch_norm) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            c = out_c
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(global_pool2d(pool), nn.Flatten(), nn.Linear(c, classes))
        self.arch_config = {
            "input_shape": list(check_input_shape(input_shape)),
            "num_classes": classes,
            "depth": int(depth),
            "blocks": None if blocks is None else [int(b) for b in blocks],
            "channels": None if channels is None else [int(ch) for ch in channels],
            "batch_norm": bool(batch_norm),
            "pool": pool,
            "width": float(width),
            "input_norm": norm_config(input_norm),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            x = self.input_norm(x)
        return self.head(self.stages(self.stem(x)))
