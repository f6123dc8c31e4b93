"""Attention maps and the transfer loss equal the formula on hand-made tensors."""
import math

import pytest
import torch
from torch import nn

import spikec
from spikec.compress.attention import attention_loss, attention_map, default_attention_layers, tap


def test_attention_map_of_a_hand_made_tensor():
    # one sample, 2 channels, 2x2 positions
    f = torch.tensor([[[[1.0, -2.0], [0.0, 1.0]],
                       [[3.0, 0.0], [0.0, -1.0]]]])
    # mean over channels of |f|^2: [(1+9)/2, (4+0)/2, 0, (1+1)/2] = [5, 2, 0, 1]; L2 norm sqrt(30)
    expected = torch.tensor([[5.0, 2.0, 0.0, 1.0]]) / math.sqrt(30.0)
    assert torch.allclose(attention_map(f), expected)
    # p = 1: mean |f| = [2, 1, 0, 1], norm sqrt(6)
    assert torch.allclose(attention_map(f, p=1), torch.tensor([[2.0, 1.0, 0.0, 1.0]]) / math.sqrt(6.0))


def test_attention_map_of_a_fully_connected_layer_has_one_position_per_neuron():
    f = torch.tensor([[3.0, -4.0], [0.0, 2.0]])
    expected = torch.tensor([[9.0, 16.0], [0.0, 4.0]])
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert torch.allclose(attention_map(f), expected)


def test_attention_loss_is_beta_times_the_sum_of_squared_distances():
    s1 = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])  # [B=2, C=1, 1, 2]
    t1 = torch.tensor([[[[0.0, 1.0]]], [[[0.0, 2.0]]]])
    s2 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    t2 = torch.tensor([[4.0, 3.0], [1.0, 0.0]])
    # layer 1: sample 0 maps [1,0] vs [0,1] -> distance^2 2; sample 1 identical -> 0; mean 1
    # layer 2: maps [9,16]/sqrt(337) vs [16,9]/sqrt(337) -> 2*49/337 for sample 0, 0 for sample 1; mean 49/337
    loss = attention_loss({"a": s1, "b": s2}, {"a": t1, "b": t2}, beta=3.0)
    assert loss.item() == pytest.approx(3.0 * (1.0 + 49.0 / 337.0), rel=1e-6)


def test_tap_reads_spiking_layers_as_firing_rates():
    # one IF neuron fed 0.6 per step for 4 steps: v 0.6, 1.2 (spike, 0.2), 0.8, 1.4 (spike) -> rate 1/2
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.6)
    net = nn.Sequential(lin, spikec.IF(threshold=1.0), nn.Linear(1, 2))
    clf = spikec.SpikingClassifier(net, timesteps=4)
    layers = default_attention_layers(clf)
    assert layers == ["net.net.1"]
    with tap(clf, layers) as feats:
        clf(torch.ones(3, 1))
    assert feats["net.net.1"].tolist() == [[0.5]] * 3


def test_default_layers_leave_out_the_output_neurons():
    net = nn.Sequential(nn.Linear(4, 3), spikec.LIF(), nn.Linear(3, 2), spikec.LIF())
    clf = spikec.SpikingClassifier(net, timesteps=2, readout="count")
    assert default_attention_layers(clf) == ["net.net.1"]
    ann = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    assert default_attention_layers(ann) == ["1", "3"]
