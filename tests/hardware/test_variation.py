"""Log-normal variation statistics, seeding, stuck-at faults."""
import math

import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.variation import chip_generator, lognormal_factors, vary_conductances


def test_lognormal_mean_and_spread():
    sigma = 0.2
    f = lognormal_factors((400_000,), sigma, chip_generator(0, 0, 0))
    mean = math.exp(sigma**2 / 2)
    std = math.sqrt((math.exp(sigma**2) - 1) * math.exp(sigma**2))
    assert abs(float(f.mean()) - mean) < 3e-3
    assert abs(float(f.std()) - std) / std < 0.01
    theta = torch.log(f)
    assert abs(float(theta.mean())) < 2e-3 and abs(float(theta.std()) - sigma) < 2e-3


def test_chip_draws_are_per_cell_per_chip_and_reproducible():
    cfg = HardwareConfig(sigma=0.1)
    g = torch.full((50, 20), 1e-5, dtype=torch.float64)
    a_pos, a_neg = vary_conductances(g, g, cfg, chips=3, layer=2)
    b_pos, _ = vary_conductances(g, g, cfg, chips=5, layer=2)
    assert a_pos.shape == (3, 1, 50, 20)
    assert torch.equal(a_pos, b_pos[:3])  # chip c is the same whatever the number of chips
    assert not torch.equal(a_pos[0], a_pos[1])  # chips differ
    assert not torch.equal(a_pos, a_neg)  # the two columns vary independently
    c_pos, _ = vary_conductances(g, g, cfg, chips=3, layer=3)
    assert not torch.equal(a_pos, c_pos)  # layers differ


def test_chip_wide_component():
    cfg = HardwareConfig(sigma=0.0, sigma_chip=0.3)
    g = torch.full((10, 4), 2e-6, dtype=torch.float64)
    gp, gn = vary_conductances(g, g, cfg, chips=4, sigma=0.0)
    for c in range(4):
        ratio = gp[c] / g
        assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))  # one factor per chip
        assert torch.allclose(gn[c] / g, ratio)


def test_stuck_at_faults():
    cfg = HardwareConfig(stuck_on_rate=0.1, stuck_off_rate=0.2)
    g = torch.full((200, 100), 3e-6, dtype=torch.float64)
    gp, _ = vary_conductances(g, g, cfg, chips=1, sigma=0.0)
    on = float((gp == cfg.g_on).double().mean())
    off = float((gp == cfg.g_off).double().mean())
    assert abs(on - 0.1) < 0.01 and abs(off - 0.2) < 0.01
