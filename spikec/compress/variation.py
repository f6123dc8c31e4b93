"""Fine-tuning under sampled conductance variation (noise-aware training, as in ReSNA).

Every cell of a crossbar is off by a log-normal factor, ``G' = G exp(theta)``, ``theta ~ N(0,
sigma^2)``, fixed once the chip is made (G. L. Zhang's model, as ``spikec.hardware`` uses it). A
weight ``w`` sits on a twin pair ``G+ - G-`` over ``G_off``: with ``w+ = max(w, 0)``, ``w- =
max(-w, 0)`` and ``off = |w|_max,k * G_off / (G_on - G_off)`` (the pair's full scale is its neuron's
largest weight), the weight a varied chip realises is

    w' = (w+ + off) exp(theta+) - (w- + off) exp(theta-)

with independent ``theta+``, ``theta-`` per cell. ``g_off_ratio = G_off / (G_on - G_off)`` is
1/16 for the twin-column preset (100 kOhm on, 1.7 MOhm off).

A *chip* is one draw of every theta of every layer, from a generator seeded by ``(seed, chip,
layer)``: chip ``c`` is the same chip whenever it is asked for. Training moves to the next chip
at every optimizer step (``chips = 0``: chip = step, a new chip every step) or cycles over
``chips`` chips. Training chips use their own seed; pick one the evaluation does not use.

While attached, a layer's trainable weight is ``weight_fp`` (as under quantization-aware
training) and ``weight`` is recomputed, varied in training mode and exact in eval mode, by the
pre-forward hook of :mod:`spikec.compress.masks`; gradients reach ``weight_fp`` through the
varied weight.
"""
from __future__ import annotations

import torch
from torch import nn

from spikec.compress.masks import NOISE, QUANTIZER, drop_hook_if_idle, ensure_hook, refresh

TWIN_COLUMN_G_OFF_RATIO = 1.0 / 16.0
_ORDER = "_spikec_param_order"  # (1 / 1.7 MOhm) / (1 / 100 kOhm - 1 / 1.7 MOhm)


def chip_generator(seed: int, chip: int, layer: int) -> torch.Generator:
    """The generator of chip ``chip``'s thetas in layer ``layer``."""
    mixed = (int(seed) * 1_000_003 + int(chip)) * 1_000_033 + int(layer)
    return torch.Generator().manual_seed(mixed % (2 ** 63))


def chip_thetas(sigma: float, seed: int, chip: int, layer: int, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """``(theta+, theta-)`` of every cell pair of one layer on one chip."""
    gen = chip_generator(seed, chip, layer)
    theta = torch.randn((2, *shape), generator=gen, dtype=torch.float64) * float(sigma)
    return theta[0], theta[1]


def vary_weight(w: torch.Tensor, theta_pos: torch.Tensor, theta_neg: torch.Tensor, g_off_ratio: float) -> torch.Tensor:
    """``w'`` of the module docstring (differentiable in ``w``)."""
    full = w.detach().abs().reshape(w.shape[0], -1).amax(1).view(-1, *([1] * (w.dim() - 1)))
    off = full * float(g_off_ratio)
    e_pos, e_neg = theta_pos.exp().to(w), theta_neg.exp().to(w)
    return (w.clamp(min=0) + off) * e_pos - ((-w).clamp(min=0) + off) * e_neg


class ConductanceVariation:
    """Sampled chips for noise-aware training (see the module docstring)."""

    def __init__(self, sigma: float, seed: int = 0, chips: int = 0, g_off_ratio: float = TWIN_COLUMN_G_OFF_RATIO):
        if not float(sigma) >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma, self.seed, self.chips, self.g_off_ratio = float(sigma), int(seed), int(chips), float(g_off_ratio)
        self.chip = 0
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def set_step(self, step: int) -> None:
        """Move to the chip of optimizer step ``step``."""
        chip = step % self.chips if self.chips > 0 else step
        if chip != self.chip:
            self.chip = chip
            self._cache.clear()

    def thetas(self, layer: int, shape) -> tuple[torch.Tensor, torch.Tensor]:
        if layer not in self._cache:
            self._cache[layer] = chip_thetas(self.sigma, self.seed, self.chip, layer, shape)
        return self._cache[layer]

    def vary(self, w: torch.Tensor, layer: int) -> torch.Tensor:
        if self.sigma == 0:
            return w
        tp, tn = self.thetas(layer, w.shape)
        return vary_weight(w, tp.to(w.device), tn.to(w.device), self.g_off_ratio)


class _LayerNoise:
    def __init__(self, variation: ConductanceVariation, index: int):
        self.variation, self.index = variation, index

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return self.variation.vary(w, self.index)


def attach_variation_(layers: dict[str, nn.Module], variation: ConductanceVariation, hook_on: dict | None = None) -> None:
    """Vary the weights of ``layers`` (layer ``i`` of the dict is layer ``i`` of a chip) in training mode."""
    for i, (name, m) in enumerate(layers.items()):
        if m.__dict__.get(QUANTIZER) is None and "weight_fp" not in m._parameters:
            m.__dict__[_ORDER] = list(m._parameters)
            m.register_parameter("weight_fp", m._parameters.pop("weight"))
        m.__dict__[NOISE] = _LayerNoise(variation, i)
        ensure_hook(m, None if hook_on is None else hook_on.get(name))
        refresh(m)


def detach_variation_(layers: dict[str, nn.Module]) -> None:
    """Stop varying ``layers``; their ``weight`` is the exact (trained) weight again."""
    for m in layers.values():
        if m.__dict__.pop(NOISE, None) is None:
            continue
        if m.__dict__.get(QUANTIZER) is None:
            w = m._parameters.pop("weight_fp")
            if "weight" in m.__dict__:
                del m.__dict__["weight"]
            m.register_parameter("weight", w)
            order = m.__dict__.pop(_ORDER, None)
            if order is not None and set(order) == set(m._parameters):  # keep parameters() in their old order
                for key in order:
                    m._parameters[key] = m._parameters.pop(key)
        else:
            refresh(m)
        drop_hook_if_idle(m)


class ThresholdJitter:
    """Per-neuron threshold errors of a TTFS network, one draw per chip: what MFTA leaves behind.

    MFTA (``spikec.hardware.mfta``) sets each neuron's threshold scale to the register level nearest
    the one its chip needs, so a compensated neuron still fires as if its threshold were off by a
    factor ``exp(u)``, ``u`` within half a register step. Training under ``u ~ U(-jitter, jitter)``
    per output channel (one column pair drives every position of a convolution) teaches the network
    to tolerate that residual; ``jitter = mfta_step / 2`` matches the register. Chips are seeded by
    ``(seed, chip, layer)`` as :class:`ConductanceVariation`'s; eval mode sees the exact thresholds
    once :meth:`detach` has run.
    """

    def __init__(self, model: nn.Module, jitter: float, seed: int = 0, chips: int = 0):
        if not float(jitter) >= 0:
            raise ValueError(f"threshold jitter must be >= 0, got {jitter}")
        self.jitter, self.seed, self.chips = float(jitter), int(seed), int(chips)
        self.layers = [m for m in model.modules() if hasattr(m, "threshold_scale") and hasattr(m, "synapses")]
        self.chip = None

    def set_step(self, step: int) -> None:
        chip = step % self.chips if self.chips > 0 else step
        if chip == self.chip:
            return
        self.chip = chip
        for i, layer in enumerate(self.layers):
            w = layer.synapses[0].weight
            shape = (w.shape[0],) + (1,) * (w.dim() - 2)  # per output channel, broadcast over positions
            gen = chip_generator(self.seed + 7919, chip, i)
            u = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * self.jitter
            layer.threshold_scale = u.exp().to(w)

    def detach(self) -> None:
        for layer in self.layers:
            layer.threshold_scale = None
        self.chip = None


class ChipSteps:
    """Several per-step chip draws moved together (conductances and thresholds)."""

    def __init__(self, parts: list):
        self.parts = parts

    def set_step(self, step: int) -> None:
        for p in self.parts:
            p.set_step(step)
