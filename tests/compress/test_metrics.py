"""Synaptic operations are input events times non-zero fan-out; spikes come from spikec.record."""
import pytest
import torch
from torch import nn

import spikec
from spikec.compress.metrics import E_AC_PJ, E_MAC_PJ, activity, layer_ops


def test_linear_ops_are_events_times_nonzero_fan_out():
    lin = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]))
    # fan-out of inputs: 1, 0, 2; events: step 0 inputs {0, 1}, step 1 inputs {1, 2}
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    assert layer_ops(lin, x) == (1 + 0) + (0 + 2)


def test_conv_ops_respect_borders():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    corner = torch.zeros(1, 1, 3, 3)
    corner[0, 0, 0, 0] = 1.0
    centre = torch.zeros(1, 1, 3, 3)
    centre[0, 0, 1, 1] = 1.0
    assert layer_ops(conv, corner) == 4  # a corner input reaches a 2x2 block of outputs
    assert layer_ops(conv, centre) == 9
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = 0.0  # a zero weight is no operation
    assert layer_ops(conv, centre) == 8


def test_activity_counts_spikes_sops_and_energy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), spikec.IF(threshold=0.5), nn.Linear(6, 3))
    with torch.no_grad():
        net[2].weight[:, :2] = 0.0  # neurons 0 and 1 drive nothing
    clf = spikec.SpikingClassifier(net, timesteps=5)
    x = torch.rand(7, 4)
    y = torch.zeros(7, dtype=torch.long)
    with spikec.record(clf) as rec:
        clf(x)
        spikes = rec.layers["net.net.1"]
    # the SNN's per-neuron counts: run the first layer by hand
    v = torch.zeros(7, 6)
    counts = torch.zeros(7, 6)
    cur = net[0](x).detach()
    for _ in range(5):
        v = v + cur
        s = (v >= 0.5).float()
        v = v - 0.5 * s
        counts += s
    assert spikes.spikes == counts.sum()
    fan_out = (net[2].weight != 0).sum(0).float()
    a = activity(clf, (x, y))
    assert a.spikes_per_inference == pytest.approx(float(counts.sum()) / 7)
    assert a.sops_per_inference == pytest.approx(float((counts * fan_out).sum()) / 7)
    # the first layer sees analog input every step: multiply-accumulates over non-zero weights
    # (all 4 inputs non-zero, all 24 weights non-zero, 5 steps)
    assert a.snn_macs_per_inference == pytest.approx(5 * 4 * 6)
    assert a.ann_macs_per_inference == 4 * 6 + 6 * 3
    assert a.snn_energy_pj == pytest.approx(a.sops_per_inference * E_AC_PJ + a.snn_macs_per_inference * E_MAC_PJ)
