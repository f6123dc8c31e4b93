"""Programmed crossbars: the rows of one layer, their target conductances, and per-chip copies.

A layer's crossbar rows are, in order:

1. ``N`` input rows (the unrolled weight ``W``): row ``i`` is switched on at its input spike's
   step and off when the source window closes, so it integrates ``w * (1 - tau)`` (the TTFS
   neuron of ``docs/ttfs.md``);
2. one bias row (if the layer has a bias) on for the whole source window: it integrates ``b``;
3. ``n_r = ceil(1 / w_max)`` ramp rows, on from the opening of the layer's own window until the
   layer stops (or, with power gating, until the pair's neuron fired). Together they are the
   slope-1 ramp of the output phase. Each is programmed to the analog target ``G+ = G_off +
   (G_on - G_off) / (n_r * w_max)``, ``G- = G_off`` (assumption: ramp cells are written with
   program-and-verify to that value rather than to a weight level), so the ramp passes through
   the same column pair, and a gain error of the pair scales charge and ramp alike.

Weights and bias map to ``G+/- = G_off + (G_on - G_off) * q(max(+/-w, 0) / w_max)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.extract import PELayer
from spikec.hardware.mapping import Tiling, conductances, effective_weight, tile_layer
from spikec.hardware.variation import vary_conductances


@dataclass(frozen=True)
class Crossbar:
    """Target (programmed) conductances of one layer, ``[rows, K]`` each, and its tiling."""

    layer: PELayer
    g_pos: torch.Tensor
    g_neg: torch.Tensor
    w_max: float
    bias_rows: int
    ramp_rows: int
    tiling: Tiling

    @property
    def input_rows(self) -> int:
        return self.layer.rows


@dataclass(frozen=True)
class ChipLayer:
    """One layer on ``chips`` chips: conductances ``[chips, copies, rows, K]`` and what they realise.

    ``weight`` ``[chips, copies, N, K]``, ``bias`` ``[chips, copies, K]`` (zeros without a bias row)
    and ``ramp`` ``[chips, copies, K]`` (slope of the output-phase ramp; 1 on an ideal chip) are in
    SNN units.
    """

    crossbar: Crossbar
    g_pos: torch.Tensor
    g_neg: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    ramp: torch.Tensor

    @property
    def chips(self) -> int:
        return self.g_pos.shape[0]


def program_crossbar(layer: PELayer, config: HardwareConfig) -> Crossbar:
    """Rows and target conductances of ``layer`` (see the module docstring)."""
    w_max = layer.w_max
    w = layer.weight.to(torch.float64)
    parts = [w]
    bias_rows = 0
    if layer.bias is not None:
        parts.append(layer.bias.to(torch.float64).unsqueeze(1))
        bias_rows = 1
    g_pos, g_neg = conductances(torch.cat(parts, dim=1), config, w_max)
    ramp_rows = max(1, math.ceil(1.0 / w_max - 1e-12))
    span = config.g_on - config.g_off
    ramp_pos = torch.full((ramp_rows, layer.neurons), config.g_off + span / (ramp_rows * w_max), dtype=torch.float64)
    ramp_neg = torch.full((ramp_rows, layer.neurons), config.g_off, dtype=torch.float64)
    g_pos = torch.cat([g_pos, ramp_pos])
    g_neg = torch.cat([g_neg, ramp_neg])
    tiling = tile_layer(g_pos.shape[0], layer.neurons, config, layer.positions)
    return Crossbar(layer, g_pos, g_neg, w_max, bias_rows, ramp_rows, tiling)


def make_chips(crossbar: Crossbar, config: HardwareConfig, chips: int, layer_index: int,
               sigma: float | None = None) -> ChipLayer:
    """``chips`` fabricated copies of ``crossbar`` (variation from ``config``; ``sigma`` overrides it)."""
    sigma = config.sigma if sigma is None else float(sigma)
    copies = crossbar.tiling.copies
    ideal = sigma == 0 and config.sigma_chip == 0 and config.stuck_on_rate == 0 and config.stuck_off_rate == 0
    if ideal:
        shape = (chips, copies) + tuple(crossbar.g_pos.shape)
        g_pos = crossbar.g_pos.expand(shape)
        g_neg = crossbar.g_neg.expand(shape)
    else:
        g_pos, g_neg = vary_conductances(crossbar.g_pos, crossbar.g_neg, config, chips, layer_index, copies, sigma)
    return chip_layer(crossbar, g_pos, g_neg, config)


def chip_layer(crossbar: Crossbar, g_pos: torch.Tensor, g_neg: torch.Tensor, config: HardwareConfig) -> ChipLayer:
    """The weights, bias and ramp slope realised by conductances ``[chips, copies, rows, K]``."""
    w = effective_weight(g_pos, g_neg, config, crossbar.w_max)
    n = crossbar.input_rows
    weight = w[..., :n, :]
    bias = w[..., n, :] if crossbar.bias_rows else torch.zeros_like(w[..., 0, :])
    ramp = w[..., n + crossbar.bias_rows:, :].sum(-2)
    return ChipLayer(crossbar, g_pos, g_neg, weight, bias, ramp)


def ideal_chip(crossbar: Crossbar, config: HardwareConfig) -> ChipLayer:
    """One chip that realises the layer's software weights exactly (unquantized, no variation, ramp 1).

    Used for calibration targets and as the reference the hardware is checked against.
    """
    layer = crossbar.layer
    K = layer.neurons
    weight = layer.weight.to(torch.float64).t().reshape(1, 1, layer.rows, K)
    bias = (layer.bias.to(torch.float64) if layer.bias is not None else torch.zeros(K, dtype=torch.float64)).reshape(1, 1, K)
    shape = (1, 1) + tuple(crossbar.g_pos.shape)
    return ChipLayer(crossbar, crossbar.g_pos.expand(shape), crossbar.g_neg.expand(shape), weight, bias,
                     torch.ones(1, 1, K, dtype=torch.float64))
