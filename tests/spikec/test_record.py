"""spikec.record reports exactly the spikes a network emitted."""
import pytest
import torch
from torch import nn

import spikec


def test_counts_first_times_and_totals_by_hand():
    # one IF layer of 2 neurons, threshold 1, 2 samples, 4 steps, input currents chosen by hand
    n = spikec.IF(threshold=1.0)
    net = nn.Sequential(n)
    x = torch.tensor(
        [  # [T, B, N]
            [[0.6, 1.0], [0.0, 0.3]],
            [[0.6, 1.0], [0.0, 0.3]],
            [[0.6, 0.0], [0.0, 0.3]],
            [[0.6, 1.0], [0.0, 0.3]],
        ]
    )
    # sample 0: neuron 0 v 0.6,1.2*,0.8,1.4* -> spikes at 1,3 ; neuron 1 fires at 0,1,3
    # sample 1: neuron 0 silent; neuron 1 v 0.3,0.6,0.9,1.2* -> spike at 3
    with spikec.record(net) as rec:
        net(x)
    layer = rec.layers["0"]
    assert layer.num_neurons == 2 and layer.samples == 2
    assert layer.spikes == 6
    assert layer.sample_spikes.tolist() == [5, 1]
    assert layer.max_spikes_per_neuron == 3
    assert layer.first_spike_times.tolist() == [[1, 0], [float("inf"), 3]]
    assert layer.fired_fraction == 0.75
    assert rec.total_spikes == 6 and rec.num_neurons == 2 and rec.max_spikes_per_neuron == 3
    assert rec.spikes_per_neuron == pytest.approx(6 / 2 / 2)
    with spikec.record(net, first_spike_times=False) as lean:  # counts only: same fired fraction, no times kept
        net(x)
    assert lean.layers["0"].fired_fraction == 0.75 and lean.layers["0"].first_times == []


def test_accumulates_over_batches_and_layers_and_removes_hooks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), spikec.IF(threshold=0.5), nn.Linear(5, 4), spikec.LIF(beta=0.9, threshold=0.5))
    clf = spikec.SpikingClassifier(net, timesteps=6, readout="count")
    xs = [torch.rand(2, 3), torch.rand(3, 3)]
    with spikec.record(clf) as rec:
        outs = [clf(x) for x in xs]
    assert list(rec.layers) == ["net.net.1", "net.net.3"]
    assert rec.samples == 5
    assert rec.num_neurons == 5 + 4
    # the readout is the last layer's spike count: its record must agree sample by sample
    last = rec.layers["net.net.3"]
    assert last.sample_spikes.tolist() == torch.cat(outs).sum(1).tolist()
    before = rec.total_spikes
    clf(xs[0])  # outside the block: nothing more is recorded
    assert rec.total_spikes == before
    assert all(len(m._forward_hooks) == 0 for m in clf.modules())


def test_counts_only_mode_keeps_no_times():
    net = nn.Sequential(spikec.IF())
    with spikec.record(net, first_spike_times=False) as rec:
        net(torch.ones(3, 2, 4))
    assert rec.layers["0"].first_spike_times.numel() == 0
    assert rec.total_spikes == 3 * 2 * 4
    assert rec.summary()["layers"]["0"]["spikes_per_inference"] == 12
