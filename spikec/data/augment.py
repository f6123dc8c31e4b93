"""Batch augmentation for image inputs: random crop with zero padding and horizontal flip.

The standard CIFAR recipe (He et al. 2016, Section 4.2: 4-pixel padding, random 32x32 crop,
random flip). It runs on whole batches ``[B, C, H, W]`` on their own device, drawing from an
explicit generator, so a training run is reproducible and a resumed one continues the same draw.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CropFlip", "default_augmentation"]


@dataclass(frozen=True)
class CropFlip:
    """Pad by ``padding`` zeros, crop back to the input size at a random offset, flip with probability 1/2."""

    padding: int = 4
    flip: bool = True

    def __post_init__(self):
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"CropFlip expects images [B, C, H, W], got shape {tuple(x.shape)}")
        b, _, h, w = x.shape
        p = int(self.padding)
        # draws come from a CPU generator (devices share no generator), then move to x's device
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        flip = torch.rand(b, generator=generator) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool)
        if p:
            padded = F.pad(x, (p, p, p, p))
            rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)  # [B, H]
            cols = dx[:, None] + torch.arange(w)[None, :]  # [B, W]
        else:
            padded = x
            rows = torch.arange(h).expand(b, h).to(x.device)
            cols = torch.arange(w).expand(b, w).clone()
        cols = torch.where(flip[:, None], cols.flip(1), cols).to(x.device)
        batch = torch.arange(b, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
        return out.permute(0, 3, 1, 2).contiguous()


def default_augmentation(input_shape) -> CropFlip | None:
    """The augmentation ``spikec train`` uses by default: crop+flip for colour or grey images of at
    least 16x16 pixels; none for tiny images (the 8x8 digits) and flat feature vectors."""
    shape = tuple(input_shape)
    if len(shape) != 3 or min(shape[1], shape[2]) < 16:
        return None
    return CropFlip(padding=max(1, shape[1] // 8), flip=True)
