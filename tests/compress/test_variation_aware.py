"""Sampled conductance variation for noise-aware training: seeded, per chip, per layer, the twin-pair formula."""
import math

import pytest
import torch
from torch import nn

from spikec.compress.variation import (
    ConductanceVariation, attach_variation_, chip_thetas, detach_variation_, vary_weight,
)


def test_thetas_are_seeded_per_chip_and_layer():
    a = chip_thetas(0.2, 7, chip=3, layer=1, shape=(4, 5))
    b = chip_thetas(0.2, 7, chip=3, layer=1, shape=(4, 5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], a[1])  # G+ and G- vary independently
    for other in (chip_thetas(0.2, 7, 4, 1, (4, 5)), chip_thetas(0.2, 7, 3, 2, (4, 5)), chip_thetas(0.2, 8, 3, 1, (4, 5))):
        assert not torch.equal(a[0], other[0])
    big = chip_thetas(0.3, 0, 0, 0, (200, 200))[0]
    assert abs(float(big.std()) - 0.3) < 0.01 and abs(float(big.mean())) < 0.01


def test_twin_pair_formula_by_hand():
    w = torch.tensor([[0.5, -1.0]])
    tp = torch.tensor([[math.log(2.0), 0.0]])
    tn = torch.tensor([[0.0, math.log(3.0)]])
    out = vary_weight(w, tp, tn, 1 / 16)  # full scale 1: off = 1/16
    assert out[0, 0] == pytest.approx((0.5 + 1 / 16) * 2 - 1 / 16)
    assert out[0, 1] == pytest.approx(1 / 16 - (1 + 1 / 16) * 3)
    assert torch.equal(vary_weight(w, torch.zeros_like(w), torch.zeros_like(w), 1 / 16), w)


def test_training_sees_the_chip_of_each_step_and_eval_the_exact_weights():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    exact = lin.weight.detach().clone()
    var = ConductanceVariation(0.2, seed=5, chips=2)
    attach_variation_({"lin": lin}, var)
    x = torch.rand(4, 3)
    lin.train()
    var.set_step(0)
    y0 = lin(x)
    var.set_step(1)
    y1 = lin(x)
    var.set_step(2)  # two chips: step 2 is chip 0 again
    y2 = lin(x)
    assert not torch.allclose(y0, y1) and torch.allclose(y0, y2)
    expected = vary_weight(exact, *chip_thetas(0.2, 5, 0, 0, exact.shape), 1 / 16)
    assert torch.allclose(lin.weight, expected)
    y2.sum().backward()
    assert lin.weight_fp.grad is not None  # the gradient reaches the trained weight
    lin.eval()
    assert torch.allclose(lin(x), x @ exact.t() + lin.bias)
    detach_variation_({"lin": lin})
    assert isinstance(lin.weight, nn.Parameter) and torch.equal(lin.weight.detach(), exact)
    assert not lin._forward_pre_hooks


def test_attaching_in_eval_mode_keeps_weight_fp_the_only_trainable_weight():
    # a converted network arrives in eval mode: its exact weight must not be re-registered as a Parameter
    torch.manual_seed(0)
    lin = nn.Linear(3, 2).eval()
    var = ConductanceVariation(0.2, seed=5)
    attach_variation_({"lin": lin}, var)
    assert list(lin._parameters) == ["bias", "weight_fp"]
    lin.train()
    y = lin(torch.rand(4, 3))  # the varied weight is a plain tensor computed from weight_fp
    y.sum().backward()
    assert lin.weight_fp.grad is not None and list(lin._parameters) == ["bias", "weight_fp"]


def test_robust_finetuning_runs_and_leaves_plain_parameters():
    from spikec.compress import CompressConfig, FinetuneConfig, compress_
    from spikec.compress.config import RobustConfig

    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.rand(64, 4), torch.randint(0, 3, (64,))
    before = [p.detach().clone() for p in net.parameters()]
    cfg = CompressConfig(prune=None, quant=None, attention=None, robust=RobustConfig(sigma=0.2, lipschitz=0.1),
                         finetune=FinetuneConfig(epochs=1, batch_size=16))
    compress_(net, cfg, (x, y))
    names = [n for n, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert any(not torch.equal(p, b) for p, b in zip(net.parameters(), before))


def test_threshold_jitter_is_seeded_per_chip_bounded_and_per_channel(ttfs_net):
    from spikec.compress.variation import ThresholdJitter

    snn, x = ttfs_net(0)
    jit = ThresholdJitter(snn, 0.025, seed=3)
    assert jit.layers  # the spiking layers of the network
    jit.set_step(0)
    first = [layer.threshold_scale.clone() for layer in jit.layers]
    for layer, s in zip(jit.layers, first):
        w = layer.synapses[0].weight
        assert s.shape == (w.shape[0],) + (1,) * (w.dim() - 2)  # one threshold per column pair
        assert float(s.log().abs().max()) <= 0.025 + 1e-6 and float(s.log().abs().max()) > 0.005
    jit.set_step(1)
    assert not torch.equal(jit.layers[0].threshold_scale, first[0])
    jit.set_step(0)  # chip 0 again: the same thresholds
    assert all(torch.equal(layer.threshold_scale, s) for layer, s in zip(jit.layers, first))
    jittered = snn(x)
    jit.detach()
    assert all(layer.threshold_scale is None for layer in jit.layers)
    assert not torch.allclose(jittered, snn(x))


def test_robust_ttfs_finetuning_with_threshold_jitter_restores_exact_thresholds(ttfs_net):
    from spikec.compress import CompressConfig, FinetuneConfig, compress_
    from spikec.compress.config import RobustConfig
    from spikec.errors import UsageError

    snn, x = ttfs_net(0)
    y = snn(x).argmax(1)
    cfg = CompressConfig(prune=None, quant=None, attention=None,
                         robust=RobustConfig(sigma=0.1, threshold_jitter=0.05),
                         finetune=FinetuneConfig(epochs=1, batch_size=8))
    compress_(snn, cfg, (x, y))
    assert all(m.threshold_scale is None for m in snn.modules() if hasattr(m, "threshold_scale"))
    assert not any("weight_fp" in m._parameters for m in snn.modules())
    with pytest.raises(UsageError, match="TTFS"):
        compress_(nn.Sequential(nn.Linear(4, 3)), cfg, (torch.rand(8, 4), torch.randint(0, 3, (8,))))
    with pytest.raises(ValueError, match="threshold_jitter"):
        RobustConfig(threshold_jitter=-0.1)
