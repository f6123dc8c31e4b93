"""Group lasso, Group-Hoyer-square and the Lipschitz penalty: values by hand, gradients by finite differences."""
import math

import torch
from torch import nn

from spikec.compress.groups import TileShape, grouping
from spikec.compress.regularize import GroupSparsity, Lipschitz, group_lasso, hoyer_square, spectral_norm


def _fd_grad(f, w, h=1e-6):
    g = torch.zeros_like(w)
    flat, out = w.detach().clone().flatten(), g.view(-1)
    for i in range(flat.numel()):
        for sign in (1, -1):
            x = flat.clone()
            x[i] += sign * h
            out[i] += sign * float(f(x.view_as(w))) / (2 * h)
    return g


def test_penalties_by_hand():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)  # channel groups: norms 5, 0, 1
    g = grouping(w.shape, "channel")
    assert float(group_lasso(w, g, 2.0)) == pytest_approx((5 + 0 + 1) / (math.sqrt(3) * 2.0))
    assert float(hoyer_square(w, g, 2.0)) == pytest_approx(36 / (3 * 26))


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-9, abs=1e-12)


def test_group_penalty_gradients_match_finite_differences():
    torch.manual_seed(0)
    w = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    w[1, :, :, :] = 0.3  # some structure
    for granularity in ("tile-row", "tile-col", "tile", "channel"):
        g = grouping(w.shape, granularity, TileShape(8, 2))
        for penalty in (group_lasso, hoyer_square):
            x = w.clone().requires_grad_(True)
            penalty(x, g, 1.7).backward()
            expected = _fd_grad(lambda v: penalty(v, g, 1.7), w)
            assert torch.allclose(x.grad, expected, rtol=1e-5, atol=1e-8), (granularity, penalty.__name__)


def test_a_zero_group_has_a_finite_gradient():
    w = torch.zeros(4, 6, dtype=torch.float64)
    w[0] = 1.0
    x = w.clone().requires_grad_(True)
    group_lasso(x, grouping(w.shape, "channel"), 1.0).backward()
    assert torch.isfinite(x.grad).all() and torch.all(x.grad[1:] == 0)


def test_group_sparsity_averages_layers_times_strength():
    torch.manual_seed(1)
    layers = {"a": nn.Linear(6, 4).double(), "b": nn.Linear(4, 3).double()}
    reg = GroupSparsity(layers, "group-lasso", 0.5, "channel")
    terms = [group_lasso(m.weight, grouping(m.weight.shape, "channel"), float(m.weight.detach().norm()))
             for m in layers.values()]
    assert float(reg().detach()) == pytest_approx(0.5 * float(sum(terms).detach()) / 2)


def test_lipschitz_gradient_is_that_of_the_spectral_norm():
    torch.manual_seed(2)
    w = torch.randn(4, 7, dtype=torch.float64)
    u = torch.nn.functional.normalize(torch.randn(4, dtype=torch.float64), dim=0)
    x = w.clone().requires_grad_(True)
    s, _ = spectral_norm(x, u, iterations=500)
    assert float(s.detach()) == pytest_approx(float(torch.linalg.matrix_norm(w, ord=2)))
    s.backward()
    expected = _fd_grad(lambda v: torch.linalg.matrix_norm(v, ord=2), w)
    assert torch.allclose(x.grad, expected, rtol=1e-5, atol=1e-7)


def test_lipschitz_penalty_is_one_per_layer_at_the_start():
    torch.manual_seed(3)
    layers = {"a": nn.Conv2d(2, 3, 3).double(), "b": nn.Linear(5, 4).double()}
    reg = Lipschitz(layers, 2.0, warmup=500)
    assert abs(float(reg().detach()) - 2.0) < 1e-6  # power iteration converged: sigma / sigma_0 = 1 per layer
