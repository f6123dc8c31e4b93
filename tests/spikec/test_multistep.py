"""The merged-batch multi-step runner equals a per-step loop."""
import pytest
import torch
from torch import nn

import spikec


class ResidualBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.lif1 = spikec.LIF(beta=0.8, threshold=0.5)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.lif2 = spikec.IF(threshold=0.5, reset="zero")

    def forward(self, x):
        out = self.conv2(self.lif1(self.conv1(x)))
        return self.lif2(out + x)


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        spikec.LIF(beta=0.9, threshold=0.3),
        ResidualBlock(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).double()


def per_step(net, x):
    """The reference: each time step through every layer, neurons stepping one at a time."""
    outs = []
    for t in range(x.shape[0]):
        h = x[t]
        for layer in net:
            if isinstance(layer, spikec.SpikingModule):
                h = layer(h.unsqueeze(0))[0]
            elif isinstance(layer, ResidualBlock):
                a = layer.lif1(layer.conv1(h).unsqueeze(0))[0]
                b = layer.conv2(a) + h
                h = layer.lif2(b.unsqueeze(0))[0]
            else:
                h = layer(h)
        outs.append(h)
    return torch.stack(outs)


def test_multistep_equals_per_step_loop_with_residuals():
    net = make_net()
    x = torch.rand(6, 2, 1, 8, 8, dtype=torch.float64) * 2
    expected = per_step(net, x)
    spikec.reset(net)
    ms = spikec.MultiStep(net)
    got = ms(x)
    assert got.shape == (6, 2, 3)
    assert torch.allclose(got, expected, atol=1e-12)
    # the runner held state in the same neurons: running again continues from there
    assert net[1].v is not None


def test_multistep_shares_parameters_and_backpropagates():
    net = make_net()
    ms = spikec.MultiStep(net)
    assert {id(p) for p in ms.parameters()} == {id(p) for p in net.parameters()}
    ms(torch.rand(3, 2, 1, 8, 8, dtype=torch.float64)).sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0


def test_functional_relu_and_flatten_in_forward_are_traced():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(5, 6)
            self.n = spikec.IF(threshold=0.2)
            self.fc2 = nn.Linear(6, 2)

        def forward(self, x):
            return self.fc2(torch.flatten(self.n(torch.relu(self.fc1(x))), 1))

    torch.manual_seed(1)
    net = Net().double()
    x = torch.rand(4, 3, 5, dtype=torch.float64)
    got = spikec.MultiStep(net)(x)
    spikec.reset(net)
    ref = torch.stack([net.fc2(net.n(torch.relu(net.fc1(x[t])).unsqueeze(0))[0]) for t in range(4)])
    assert torch.allclose(got, ref)


def test_untraceable_network_names_itself():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(TypeError, match="Branchy"):
        spikec.MultiStep(Branchy())


def test_spiking_classifier_static_in_scores_out_and_fresh_state():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), spikec.IF(threshold=0.5), nn.Linear(8, 3))
    clf = spikec.SpikingClassifier(net, timesteps=5)
    x = torch.rand(2, 4)
    a, b = clf(x), clf(x)
    assert a.shape == (2, 3) and torch.equal(a, b)  # state cleared between calls
    clf.timesteps = 9
    assert clf(x).shape == (2, 3)
