"""Magnitude masks keep exactly the requested density."""
import pytest
import torch
from torch import nn

from spikec.compress import PruneConfig, prune_
from spikec.compress.masks import get_mask, masks
from spikec.compress.prune import magnitude_masks


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(13, 7), nn.Linear(7, 3))


def _layers(net):
    return {n: m for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("density", [0.05, 0.1, 0.3, 0.37, 1.0])
def test_weight_masks_keep_exactly_the_requested_density(scope, density):
    net = _net()
    total = 135 + 91 + 21
    prune_(net, PruneConfig(density=density, scope=scope))
    kept = sum(int(m.sum()) for m in masks(net).values())
    assert kept == round(density * total)
    for m in _layers(net).values():
        assert int(get_mask(m).sum()) >= 1  # no layer cut off
        assert torch.all(m.weight[~get_mask(m)] == 0)


def test_layer_scope_prunes_every_layer_alike_and_keeps_its_largest_weights():
    net = _net(1)
    weights = {n: m.weight.detach().clone() for n, m in _layers(net).items()}
    prune_(net, PruneConfig(density=0.3, scope="layer"))
    for n, m in _layers(net).items():
        mask = get_mask(m)
        assert abs(int(mask.sum()) - 0.3 * mask.numel()) <= 1
        w = weights[n].abs()
        assert w[mask].min() >= w[~mask].max()


def test_global_scope_ranks_all_layers_together():
    net = _net(2)
    weights = {n: m.weight.detach().abs().clone() for n, m in _layers(net).items()}
    masks_ = magnitude_masks(_layers(net), 0.2, scope="global")
    kept = torch.cat([weights[n][masks_[n]] for n in weights])
    dropped = torch.cat([weights[n][~masks_[n]] for n in weights])
    # apart from the one weight every layer is guaranteed, kept weights are the largest overall
    assert torch.sort(kept).values[len(weights):].min() >= dropped.max()


def test_kernel_and_channel_granularity_prune_whole_groups():
    net = _net(3)
    prune_(net, PruneConfig(density=0.3, granularity="kernel", scope="layer"))
    conv_mask = get_mask(net[0])
    per_kernel = conv_mask.reshape(15, 9)
    assert torch.all(per_kernel.all(1) | (~per_kernel).all(1))
    assert abs(int(conv_mask.sum()) - 0.3 * 135) <= 9

    net = _net(5)
    prune_(net, PruneConfig(density=0.3, granularity="row", scope="layer"))
    conv_mask = get_mask(net[0])
    per_row = conv_mask.reshape(45, 3)
    assert torch.all(per_row.all(1) | (~per_row).all(1))
    assert abs(int(conv_mask.sum()) - 0.3 * 135) <= 3
    assert not torch.all(conv_mask.reshape(15, 9).all(1) | (~conv_mask.reshape(15, 9)).all(1))  # finer than kernels

    net = _net(4)
    pruned = prune_(net, PruneConfig(density=0.4, granularity="channel", scope="layer"))
    assert list(pruned) == ["0", "3"]  # the readout's channels are the classes: never channel-pruned
    assert get_mask(net[4]) is None
    for m in list(_layers(net).values())[:2]:
        rows = get_mask(m).reshape(m.weight.shape[0], -1)
        assert torch.all(rows.all(1) | (~rows).all(1))
        dead = ~rows.any(1)
        assert torch.all(m.bias[dead] == 0)  # a removed channel is silent, not bias-driven


def test_magnitude_masks_follow_a_density_plan():
    """Per-layer budgets: 30 of 100 weights in layer 0, the global 0.5 (50) in layer 2, the largest magnitudes."""
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.ReLU(), nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        for lin in (model[0], model[2]):
            lin.weight.copy_(torch.randperm(100, generator=torch.Generator().manual_seed(1)).float().reshape(10, 10) + 1)
    densities = prune_(model, PruneConfig(density=0.5, layer_density={"0": 0.3}))
    assert densities == pytest.approx({"0": 0.3, "2": 0.5}, abs=1e-6)
    kept = model[0].weight.detach()[model[0].weight.detach() != 0]
    assert sorted(kept.tolist()) == list(range(71, 101))
