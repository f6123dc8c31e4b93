"""Device-to-device variation and stuck-at faults: one random draw of conductances per chip.

Each programmed cell of each chip gets ``G' = G * exp(theta)`` with
``theta = theta_cell + theta_chip``, ``theta_cell ~ N(0, sigma^2)`` drawn per cell and per chip and
``theta_chip ~ N(0, sigma_chip^2)`` drawn once per chip (log-normal model of the seed talk by
G. L. Zhang). Then a fraction of cells is stuck at ``G_on`` or ``G_off``. Chip ``c`` of layer
``l`` draws from its own generator seeded by ``(seed, l, c)``, so a chip is the same whether 3 or
30 chips are simulated.
"""
from __future__ import annotations

import torch

from spikec.hardware.config import HardwareConfig


def chip_generator(seed: int, layer: int, chip: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(layer) * 10_007 + int(chip)) % (2**63 - 1))
    return g


def lognormal_factors(shape, sigma: float, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """``exp(theta)`` with ``theta ~ N(0, sigma^2)``; its mean is ``exp(sigma^2/2)``."""
    if sigma == 0:
        return torch.ones(shape, dtype=dtype)
    return torch.exp(torch.randn(shape, generator=generator, dtype=dtype) * sigma)


def vary_conductances(
    g_pos: torch.Tensor,
    g_neg: torch.Tensor,
    config: HardwareConfig,
    chips: int,
    layer: int = 0,
    copies: int = 1,
    sigma: float | None = None,
):
    """Per-chip conductances ``[chips, copies, rows, neurons]`` for the ``G+`` and ``G-`` columns.

    ``sigma`` overrides ``config.sigma``. Copies of a conv layer's tiles are separate cells and
    vary independently.
    """
    sigma = config.sigma if sigma is None else float(sigma)
    shape = (copies,) + tuple(g_pos.shape)
    out_pos, out_neg = [], []
    for c in range(chips):
        gen = chip_generator(config.seed, layer, c)
        chip_theta = float(torch.randn((), generator=gen, dtype=torch.float64)) * config.sigma_chip
        scale = torch.exp(torch.tensor(chip_theta, dtype=torch.float64))
        gp = g_pos.to(torch.float64) * lognormal_factors(shape, sigma, gen) * scale
        gn = g_neg.to(torch.float64) * lognormal_factors(shape, sigma, gen) * scale
        out_pos.append(_stuck(gp, config, gen))
        out_neg.append(_stuck(gn, config, gen))
    return torch.stack(out_pos), torch.stack(out_neg)


def _stuck(g: torch.Tensor, config: HardwareConfig, gen: torch.Generator) -> torch.Tensor:
    if config.stuck_on_rate == 0 and config.stuck_off_rate == 0:
        return g
    u = torch.rand(g.shape, generator=gen, dtype=torch.float64)
    g = torch.where(u < config.stuck_on_rate, torch.full_like(g, config.g_on), g)
    off = (u >= config.stuck_on_rate) & (u < config.stuck_on_rate + config.stuck_off_rate)
    return torch.where(off, torch.full_like(g, config.g_off), g)
