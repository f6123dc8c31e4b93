"""The constant current a per-channel input shift adds to a zero-padded convolution.

Folding a batch norm that sits after the activation moves its shift ``c`` into the next
convolution: ``conv(a*x + c) = conv_{W*a}(x) + conv_W(c)``. Without zero padding the second term
is a per-channel constant (a bias), but with zero padding the border outputs see fewer shifted
inputs, so it is a map over positions. This module computes that map exactly from the input's
shape; in a spiking network it is a constant input current.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class InputShiftCurrent(nn.Module):
    """``conv_W(shift broadcast over the input)``; the input only gives the spatial size.

    Keeps its own copy of the weights ``W`` the shift passes through (the convolution's weights
    before the batch norm's scale was folded into them).
    """

    def __init__(self, conv: nn.Module, weight: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("shift", shift.detach().clone().reshape(-1))
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.weight.dim() - 2
        constant = torch.ones_like(x[:1]) * self.shift.view(1, -1, *([1] * spatial))
        return _CONV[spatial](constant, self.weight, None, self.stride, self.padding, self.dilation, self.groups)
