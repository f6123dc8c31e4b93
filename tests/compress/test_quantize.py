"""Quantized weights take at most 2^k values per scale group; thresholds and biases sit on the grid."""
import pytest
import torch
from torch import nn

import spikec
from spikec.compress import PruneConfig, QuantConfig, freeze_, prepare_qat_, prune_, quantize_
from spikec.compress.masks import get_mask


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 6, 3), spikec.IF(threshold=0.9), nn.Flatten(), nn.Linear(24, 5))


def _groups(w, group):
    return w.reshape(w.shape[0], -1) if group == "channel" else w.reshape(1, -1)


@pytest.mark.parametrize("group", ["layer", "channel"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_at_most_two_to_the_k_values_per_scale_group(bits, group):
    net = _net(bits)
    prune_(net, PruneConfig(density=0.5))
    masks = {i: get_mask(net[i]).clone() for i in (0, 3)}
    info = quantize_(net, QuantConfig(bits=bits, group=group))
    for i in (0, 3):
        w = net[i].weight.detach()
        assert torch.all(w[~masks[i]] == 0)  # zeros stay zero
        for row, s in zip(_groups(w, group), info[str(i)]["scale"].expand(_groups(w, group).shape[0])):
            assert row.unique().numel() <= 2 ** bits
            levels = row / s
            assert torch.allclose(levels, levels.round(), atol=1e-5)
            assert levels.abs().max() <= 2 ** (bits - 1) - 1 + 1e-3


def test_threshold_and_bias_are_whole_numbers_of_weight_steps():
    net = _net(7)
    info = quantize_(net, QuantConfig(bits=4))
    s = info["0"]["scale"]
    assert info["0"]["on_grid"]
    n = 0.9 / s
    assert torch.allclose(n, n.round(), atol=1e-4)
    assert torch.allclose(net[0].bias / s, (net[0].bias / s).round(), atol=1e-4)
    # per channel: every channel's scale divides the threshold
    net = _net(8)
    info = quantize_(net, QuantConfig(bits=4, group="channel"))
    n = 0.9 / info["0"]["scale"]
    assert torch.allclose(n, n.round(), atol=1e-4)
    assert not info["3"]["on_grid"]  # the readout layer drives no neuron


def test_binary_and_ternary_weights():
    net = _net(3)
    quantize_(net, QuantConfig(mode="binary", group="channel"))
    for row in net[0].weight.detach().reshape(6, -1):
        vals = row.unique()
        assert vals.numel() == 2 and torch.allclose(vals[0], -vals[1])
    net = _net(4)
    w = net[3].weight.detach().clone()
    quantize_(net, QuantConfig(mode="ternary", grid_thresholds=False))
    q = net[3].weight.detach()
    assert q.unique().numel() <= 3
    cut = 0.7 * w.abs().mean()
    assert torch.all((q == 0) == (w.abs() <= cut))
    assert torch.allclose(q.abs().max(), w.abs()[w.abs() > cut].mean())


def test_qat_passes_gradients_straight_through_and_freezes_to_the_same_values():
    net = _net(5)
    keys = set(net.state_dict())
    prepare_qat_(net, QuantConfig(bits=3))
    lin = net[3]
    feats = torch.randn(4, 24)
    out = lin(feats)
    out.sum().backward()
    # d out / d weight_fp through the STE is the gradient of a linear layer: sum of inputs
    assert torch.allclose(lin.weight_fp.grad, feats.sum(0).expand(5, 24))
    expected = lin.weight.detach().clone()
    freeze_(net)
    assert torch.equal(net[3].weight.detach(), expected)
    assert set(net.state_dict()) == keys


def test_scale_search_clips_an_outlier_for_a_finer_step():
    # 99 weights spread over [-1, 1] and one outlier of 10: max scaling (10 / 7) rounds nearly all
    # of them to 0 or +-1 step; the searched scale clips the outlier and keeps the rest
    torch.manual_seed(0)
    w = torch.cat([torch.linspace(-1, 1, 99), torch.tensor([10.0])]).reshape(1, 1, 10, 10)
    for unit in (None, 0.9):
        lin = nn.Conv2d(1, 1, 10, bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        net = nn.Sequential(lin, spikec.IF(threshold=unit)) if unit else nn.Sequential(lin)
        info = quantize_(net, QuantConfig(bits=4))
        s = float(info["0"]["scale"])
        q = lin.weight.detach()
        err = float((q - w).pow(2).sum())
        max_scaled = (w / (10 / 7)).round().clamp(-7, 7) * (10 / 7)
        assert s < 10 / 7 and err < float((max_scaled - w).pow(2).sum())
        assert s >= 0.25 * 10 / 7 - 1e-6  # the search range
        if unit:
            assert info["0"]["on_grid"] and abs(unit / s - round(unit / s)) < 1e-4


def test_a_channel_of_denormal_weights_rounds_to_zero_instead_of_nan():
    # a group-sparsity regulariser can shrink a whole output channel to ~1e-39 without zeroing it;
    # threshold / (its max / 7) overflows to inf and the grid scale to 0, and 0 / 0 gave NaN weights
    lin = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.25, 0.0, 0.125], [1e-39, -1e-39, 0.0, 1e-39], [0.3, 0.0, -0.6, 0.1]]))
    net = nn.Sequential(lin, spikec.IF(threshold=1.0))
    info = quantize_(net, QuantConfig(bits=4, group="channel"))
    w = lin.weight.detach()
    assert torch.isfinite(w).all() and torch.isfinite(info["0"]["scale"]).all()
    assert bool((info["0"]["scale"] > 0).all())
    assert torch.equal(w[1], torch.zeros(4))
    assert w[0].unique().numel() <= 15 and w[2].unique().numel() <= 15


def test_weights_already_on_a_k_bit_grid_keep_it():
    """Row 0 holds whole multiples of 0.013 up to 5 (a 4-bit channel whose largest level is 5), row 1 of 0.1
    up to 7. Re-quantizing to 4 bits per channel with threshold 1 keeps both exactly: row 0 on its own
    step 0.013 (not max/7, and 1/0.013 is no whole number, so the layer is off the threshold grid),
    row 1 on 0.1 = 1/10, which divides the threshold anyway. Off-grid weights still take the searched
    scale (no rounding error 0 there)."""
    from spikec.compress.quantize import WeightQuantizer

    gen = torch.Generator().manual_seed(0)
    levels = torch.stack([torch.randint(-5, 6, (20,), generator=gen), torch.randint(-7, 8, (20,), generator=gen)]).float()
    levels[0, 0], levels[1, 0] = 5.0, -7.0
    w = levels * torch.tensor([[0.013], [0.1]])
    q = WeightQuantizer(QuantConfig(bits=4, group="channel"), unit=torch.tensor([1.0]))
    w_q, s, lv = q.quantize_weight(w)
    assert torch.allclose(w_q, w, rtol=0, atol=1e-7)
    assert torch.allclose(s, torch.tensor([0.013, 0.1]), rtol=1e-6)
    assert not q.on_grid
    only_row1 = WeightQuantizer(QuantConfig(bits=4, group="channel"), unit=torch.tensor([1.0]))
    assert torch.allclose(only_row1.quantize_weight(w[1:])[0], w[1:], rtol=0, atol=1e-7) and only_row1.on_grid
    noisy = w + 1e-3 * torch.randn(w.shape, generator=gen)
    w_n = WeightQuantizer(QuantConfig(bits=4, group="channel"), unit=torch.tensor([1.0])).quantize_weight(noisy)[0]
    assert not torch.allclose(w_n, noisy, rtol=0, atol=1e-5)  # off-grid weights are rounded
    # a quantizer stops looking for exact grids once its weights show none (QAT of a float network)
    assert q._look_for_exact
    off = WeightQuantizer(QuantConfig(bits=4, group="channel"), unit=torch.tensor([1.0]))
    off.quantize_weight(noisy)
    assert not off._look_for_exact
    assert not torch.allclose(off.quantize_weight(w)[0], w, rtol=0, atol=1e-7)  # no longer looked for
    pruned = WeightQuantizer(QuantConfig(bits=4, group="channel"), unit=torch.tensor([1.0]))
    pruned.quantize_weight(torch.cat([noisy, torch.zeros(1, 20)]))  # a pruned (all-zero) channel is on no grid
    assert not pruned._look_for_exact


def test_batched_scale_search_equals_one_candidate_at_a_time(monkeypatch):
    from spikec.compress import quantize

    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 40, generator=g) * torch.rand(6, 1, generator=g)
    w[1] = torch.randint(-7, 8, (40,), generator=g).float() * 0.3  # a row on a 4-bit grid
    w[2] = 0.0
    scales = (w.abs().amax(1).clamp(min=1e-3) / 7) * torch.linspace(1.0, 0.25, 48).unsqueeze(1)
    by_hand = torch.stack([((w / s.unsqueeze(1)).round().clamp(-7, 7) * s.unsqueeze(1) - w).pow(2).sum(1)
                           for s in scales])
    torch.testing.assert_close(quantize._rounding_errors(w, scales, 7), by_hand, rtol=0, atol=0)
    whole = quantize._search_scale(w, scales[0], torch.full((6,), 0.9), 7)
    monkeypatch.setattr(quantize, "_BATCH_ELEMENTS", 50)  # one candidate per batch
    assert torch.equal(quantize._rounding_errors(w, scales, 7), by_hand)
    chunked = quantize._search_scale(w, scales[0], torch.full((6,), 0.9), 7)
    assert torch.equal(whole[0], chunked[0]) and whole[1:] == chunked[1:]
    assert whole[2]  # row 1 was found on its grid


def test_denormal_channels_of_an_ann_layer_round_to_zero_and_train_without_nan():
    # weight decay leaves the weights of a channel that stopped firing at ~1e-43 (denormal): without a
    # threshold grid the candidate scales max / 31 * 0.25 underflow to 0, and after one QAT step of a
    # channel-pruned CIFAR VGG-16 every weight of the network was NaN
    from spikec.compress import prepare_qat_
    from spikec.compress.masks import refresh

    lin = nn.Linear(4, 3, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -0.25, 0.0, 0.125], [7e-44, -2e-44, 0.0, 5e-44], [0.0, 0.0, 0.0, 0.0]]))
        lin.bias.copy_(torch.tensor([0.1, 0.0, -0.2]))
    net = nn.Sequential(lin, nn.ReLU())
    prepare_qat_(net, QuantConfig(bits=6, group="channel"))
    refresh(lin)
    out = net(torch.ones(2, 4))
    out.sum().backward()
    w = lin.weight.detach()
    assert torch.isfinite(w).all() and torch.equal(w[1], torch.zeros(4)) and torch.equal(w[2], torch.zeros(4))
    assert torch.allclose(w[0], torch.tensor([0.5, -0.25, 0.0, 0.125]), atol=0.5 / 62)
    assert torch.isfinite(lin.weight_fp.grad).all()
