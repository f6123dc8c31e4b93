"""Dynamic network rewiring moves connections between layers as the gradient momentum says."""
import math

import pytest
import torch
from torch import nn

from spikec.compress.config import DNRConfig, PruneConfig
from spikec.compress.dnr import DynamicRewiring, decayed_rate, scheduled_density
from spikec.compress.masks import get_mask, set_mask_


def _two_layers():
    a, b = nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False)
    for lin in (a, b):
        with torch.no_grad():
            # weights 1..100 in flat order; the first 50 are pruned, so the active ones are 51..100
            lin.weight.copy_(torch.arange(1, 101, dtype=torch.float32).reshape(10, 10))
        mask = torch.zeros(100, dtype=torch.bool)
        mask[50:] = True
        set_mask_(lin, mask.reshape(10, 10))
    return {"a": a, "b": b}


def test_regrowth_follows_the_layers_mean_momentum():
    layers = _two_layers()
    dnr = DynamicRewiring(layers, DNRConfig())
    # momentum of active weights: 3 in layer a, 1 in layer b -> a gets 3/4 of the regrowth
    # zero weights: increasing momentum with position, so the last zeros are regrown first
    for name, active_value in (("a", 3.0), ("b", 1.0)):
        m = torch.empty(100)
        m[50:] = active_value
        m[:50] = torch.arange(50, dtype=torch.float32) / 100
        dnr.momenta[name] = m.reshape(10, 10)
    pruned, regrown = dnr.rewire(0.2)
    # each layer drops round(0.2 * 50) = 10 (weights 51..60, momentum 3 or 1 there); 20 freed
    assert pruned == {"a": 10, "b": 10}
    assert regrown == {"a": 15, "b": 5}
    ma, mb = get_mask(layers["a"]).flatten(), get_mask(layers["b"]).flatten()
    assert int(ma.sum()) == 55 and int(mb.sum()) == 45
    # layer a: the dropped 50..59 have momentum 3, the largest of its zeros: they come back first (10),
    # then the 5 zeros of largest momentum (45..49)
    assert ma[45:].all() and not ma[:45].any()
    assert layers["a"].weight.detach().flatten()[45:60].eq(0).all()  # regrown connections start at zero
    # layer b: its dropped weights have momentum 1 > any of its other zeros: 5 of them return
    assert int(mb[50:60].sum()) == 5 and mb[60:].all() and not mb[:50].any()


def test_momentum_is_an_exponential_average_of_gradients():
    layers = _two_layers()
    dnr = DynamicRewiring(layers, DNRConfig(momentum=0.5))
    for g in (2.0, 4.0):
        for lin in layers.values():
            lin.weight.grad = torch.full((10, 10), g)
        dnr.accumulate()
    # 0.5 * (0.5 * 0 + 0.5 * 2) + 0.5 * 4 = 2.5
    assert torch.allclose(dnr.momenta["a"], torch.full((10, 10), 2.5))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_shrinking_lands_on_the_exact_count(scope):
    layers = _two_layers()
    dnr = DynamicRewiring(layers)
    removed = dnr.shrink_to(63, scope)
    assert dnr.active_weights() == 63 and sum(removed.values()) == 37
    if scope == "global":  # equal weights in both layers: ties go to the first layer first
        assert abs(removed["a"] - removed["b"]) <= 1


def test_schedules():
    cfg = DNRConfig(prune_rate=0.4)
    assert decayed_rate(cfg, 0.0) == pytest.approx(0.4)
    assert decayed_rate(cfg, 0.5) == pytest.approx(0.2)
    assert decayed_rate(cfg, 1.0) == pytest.approx(0.0, abs=1e-12)
    p = PruneConfig(density=0.1, ramp=0.5)
    assert scheduled_density(p, 0.0) == pytest.approx(1.0)
    assert scheduled_density(p, 0.25) == pytest.approx(0.1 + 0.9 * 0.125)
    assert scheduled_density(p, 0.6) == pytest.approx(0.1)
    assert scheduled_density(PruneConfig(density=0.1, schedule="oneshot"), 0.0) == pytest.approx(0.1)
    assert math.isclose(decayed_rate(DNRConfig(prune_rate=0.3, decay="linear"), 0.25), 0.225)


def test_row_granularity_rewires_whole_kernel_rows():
    torch.manual_seed(0)
    convs = {"a": nn.Conv2d(4, 6, 3, bias=False), "b": nn.Conv2d(6, 8, 3, bias=False)}
    for conv in convs.values():
        rows = conv.weight.shape[:3].numel()
        keep = torch.zeros(rows, dtype=torch.bool)
        keep[torch.randperm(rows)[: rows // 2]] = True
        set_mask_(conv, keep.reshape(-1, 1).expand(-1, 3).reshape(conv.weight.shape))
    dnr = DynamicRewiring(convs, DNRConfig(), granularity="row")
    dnr.momenta["a"] = torch.full(convs["a"].weight.shape, 3.0)
    dnr.momenta["b"] = torch.full(convs["b"].weight.shape, 1.0)
    before = {n: int(get_mask(c).sum()) for n, c in convs.items()}
    dnr.rewire(0.25)
    for conv in convs.values():
        per_row = get_mask(conv).reshape(-1, 3)
        assert torch.all(per_row.all(1) | (~per_row).all(1))
    after = {n: int(get_mask(c).sum()) for n, c in convs.items()}
    assert sum(after.values()) == sum(before.values())  # what is pruned regrows, in whole rows
    assert after["a"] > before["a"] and after["b"] < before["b"]  # towards the larger mean momentum


def test_a_density_plan_keeps_each_layer_on_its_own_budget():
    """Layer a to 20%, layer b to the global 60%: gradual shrinking, DNR rewiring that would move
    weights towards a (its momentum is 3x b's) and the final shrink all keep each layer's own count."""
    from spikec.compress.dnr import SparseTraining

    layers = _two_layers()
    for lin in layers.values():
        set_mask_(lin, torch.ones(10, 10, dtype=torch.bool))
    prune = PruneConfig(density=0.6, layer_density={"a": 0.2}, ramp=0.5)
    sparse = SparseTraining(layers, prune, DNRConfig(prune_rate=0.3))
    assert sparse.target == 20 + 60
    sparse.rewiring.momenta["a"] = torch.full((10, 10), 3.0)
    sparse.rewiring.momenta["b"] = torch.full((10, 10), 1.0)
    step = sparse.update(0.25)  # scheduled: d + (1 - d) * 0.125 -> 30 and 65 weights, then rewired in place
    held = {n: int(get_mask(m).sum()) for n, m in layers.items()}
    assert held == {"a": 30, "b": 65}
    assert step.pruned == step.regrown  # each layer regrows what it lost
    sparse.update(0.75)
    sparse.finish()
    assert {n: int(get_mask(m).sum()) for n, m in layers.items()} == {"a": 20, "b": 60}
    # magnitude order: a keeps its 20 largest weights (81..100)
    assert get_mask(layers["a"]).flatten()[80:].all()


def test_a_density_plan_names_only_pruned_layers():
    prune = PruneConfig(layer_density={"c": 0.5})
    with pytest.raises(ValueError, match="'c'.*pruned: a, b"):
        prune.layer_densities(["a", "b"])
    with pytest.raises(ValueError, match="layer_density of 'a'"):
        PruneConfig(layer_density={"a": 1.5})
    with pytest.raises(ValueError, match="twice"):
        PruneConfig(layer_density=(("a", 0.5), ("a", 0.4)))


def test_a_layer_at_density_one_in_a_plan_loses_no_channel_to_rewiring():
    """A CIFAR VGG-16 with a channel plan (first two convs at 0.5, the middle ones at 1) ended its fine-tuning
    with 3-15 channels of each density-1 layer at zero weights: every rewiring dropped that layer's weakest
    channels, chose them again (nothing else was free) and zeroed them. Now a re-chosen channel keeps its
    weights (single weights and rows still restart from zero, as the first test here shows)."""
    from spikec.compress import prune_
    from spikec.compress.dnr import SparseTraining

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 1))
    convs = {"0": model[0], "2": model[2]}  # the readout (4) is left dense
    before = convs["0"].weight.detach().clone()
    prune = PruneConfig(density=0.5, granularity="channel", layer_density={"0": 1.0}, ramp=0.5)
    prune_(model, prune)
    sparse = SparseTraining(convs, prune, DNRConfig(prune_rate=0.5))
    for m in convs.values():
        m.weight.grad = torch.randn_like(m.weight)
    sparse.rewiring.accumulate()
    step = sparse.update(0.5)
    assert step.pruned["0"] > 0  # it did drop (and choose again) channels of layer 0
    assert torch.equal(convs["0"].weight.detach(), before)


def test_a_regrown_channel_restarts_from_random_weights_not_zero():
    """A channel at zero weights outputs a constant and, behind a ReLU at 0, gets no gradient: regrown
    channels start from random weights with the spread of the layer's kept ones."""
    from spikec.compress.masks import set_channel_mask_

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3)
    keep = torch.tensor([True, True, False, False])
    set_channel_mask_(conv, keep.view(4, 1, 1, 1).expand_as(conv.weight).clone())
    conv.weight.grad = None
    dnr = DynamicRewiring({"c": conv}, DNRConfig(), "channel")
    dnr.momenta["c"] = torch.zeros_like(conv.weight)
    dnr.momenta["c"][2] = 5.0  # channel 2 has the largest momentum among the pruned ones
    with torch.no_grad():
        conv.weight[1] *= 1e-3  # channel 1 is the weakest kept one: it is dropped
    kept0 = conv.weight.detach()[0].clone()
    pruned, regrown = dnr.rewire(0.5)
    w = conv.weight.detach()
    assert pruned == {"c": 18} and regrown == {"c": 18}
    assert get_mask(conv).reshape(4, -1).any(1).tolist() == [True, False, True, False]
    assert torch.equal(w[0], kept0) and bool((w[1] == 0).all())
    spread = float(kept0.std())
    assert bool((w[2] != 0).all()) and 0.3 * spread < float(w[2].std()) < 3 * spread
