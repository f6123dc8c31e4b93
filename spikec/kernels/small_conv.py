"""Convolutions over tiny feature maps as one matrix product.

The last blocks of a VGG see 2x2 or 1x1 maps (8x8 digits after three poolings, 32x32 CIFAR after
four), where a padded 3x3 kernel mostly reads zeros. oneDNN's CPU convolution handles these shapes
badly: forward + backward of a 128->128 channel 3x3 convolution over 1x1 maps of 1024 samples took
41 ms on one core of this project's VM against 2.4 ms as a product with the equivalent dense matrix,
a 64->64 one over 2x2 maps 23 ms against 6.5 ms (``benchmarks/small_conv.py``, BENCHMARKS.md). On
4x4 maps the convolution is faster, so only maps of at most :data:`MAX_POSITIONS` pixels take this path.

The dense matrix of a convolution from an ``H x W`` map to an ``Ho x Wo`` one is
``D[(o, q), (i, p)] = sum_t W[o, i, t] S[t, q, p]`` with ``S`` the 0/1 map that sends kernel tap
``t`` at output position ``q`` to the input position ``p`` it reads (no entry where it reads
padding). The result equals the convolution up to the order of the sums; autograd differentiates
the product and the ``einsum`` that builds ``D``.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

MAX_POSITIONS = 4  # input pixels (H * W) up to which the dense product is faster (measured above)


@lru_cache(maxsize=64)
def _taps(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
          dilation: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
    """``S [kh*kw, Ho*Wo, H*W]`` (float32, CPU; None where the kernel does not fit) and the output size."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho <= 0 or wo <= 0:
        return None, ho, wo
    s = torch.zeros(kh * kw, ho * wo, h * w)
    for a in range(kh):
        for b in range(kw):
            for i in range(ho):
                for j in range(wo):
                    y, x = i * sh + a * dh - ph, j * sw + b * dw - pw
                    if 0 <= y < h and 0 <= x < w:
                        s[a * kw + b, i * wo + j, y * w + x] = 1.0
    return s, ho, wo


def fits_dense(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether ``conv`` on ``x`` takes the dense product (a batched CPU input, a small map, the plain
    zero-padded ungrouped convolution with numeric padding; GPU libraries handle small maps well)."""
    return (x.dim() == 4 and x.device.type == "cpu" and x.shape[-2] * x.shape[-1] <= MAX_POSITIONS and conv.groups == 1
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and x.dtype in (torch.float32, torch.float64))


def dense_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride=(1, 1),
                 padding=(0, 0), dilation=(1, 1)) -> torch.Tensor:
    """``F.conv2d`` (groups 1, zero padding) as a product with the convolution's dense matrix."""
    n, c, h, w = x.shape
    out_ch = weight.shape[0]
    s, ho, wo = _taps(h, w, tuple(weight.shape[-2:]), tuple(stride), tuple(padding), tuple(dilation))
    if s is None:  # the kernel does not fit the map: torch's convolution says so
        return F.conv2d(x, weight, bias, stride, padding, dilation)
    s = s.to(device=x.device, dtype=x.dtype)
    dense = torch.einsum("oit,tqp->oqip", weight.reshape(out_ch, c, -1), s).reshape(out_ch * ho * wo, c * h * w)
    b = None if bias is None else bias.repeat_interleave(ho * wo)
    return F.linear(x.reshape(n, c * h * w), dense, b).view(n, out_ch, ho, wo)


class SmallMapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that computes tiny maps as a dense product (same parameters, hooks and
    ``state_dict``); :func:`small_map_convolutions` lends this class to a model's convolutions."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if fits_dense(input, self):
            return dense_conv2d(input, weight, bias, self.stride, self.padding, self.dilation)
        return super()._conv_forward(input, weight, bias)


@contextlib.contextmanager
def small_map_convolutions(*models: nn.Module | None):
    """Inside the block the plain ``nn.Conv2d`` layers of ``models`` compute maps of at most
    :data:`MAX_POSITIONS` pixels as dense products (CPU training and evaluation loops); their
    class is restored on exit, so saving or exporting sees plain convolutions."""
    swapped = []
    for model in models:
        if model is None:
            continue
        for m in model.modules():
            if type(m) is nn.Conv2d:
                m.__class__ = SmallMapConv2d
                swapped.append(m)
    try:
        yield
    finally:
        for m in swapped:
            m.__class__ = nn.Conv2d
