"""Every supported op converts (and the SNN approaches the ANN); unsupported ops raise a named error."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spikec
from spikec.conversion.graph import UnsupportedOpError
from spikec.conversion.prepare import prepare_ann
from spikec.conversion.qcfs import QCFS
from spikec.conversion.rate import convert_rate
from spikec.errors import SpikecError


class Net(nn.Module):
    """conv stem -> ``body(self, x)`` -> linear head, on 1 x 6 x 6 inputs."""

    def __init__(self, body, features: int, extra: dict | None = None):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        for name, module in (extra or {}).items():
            self.add_module(name, module)
        self.body = body
        self.head = nn.Linear(features, 3)

    def forward(self, x):
        return self.head(self.body(self, self.stem(x)))


def _flat(x):
    return x.flatten(1)


SUPPORTED = {
    "nn.ReLU": lambda: Net(lambda s, x: _flat(s.act(x)), 144, {"act": nn.ReLU(inplace=True)}),
    "F.relu": lambda: Net(lambda s, x: _flat(F.relu(x)), 144),
    "torch.relu": lambda: Net(lambda s, x: _flat(torch.relu(x)), 144),
    "Tensor.relu": lambda: Net(lambda s, x: _flat(x.relu()), 144),
    "nn.ReLU6": lambda: Net(lambda s, x: _flat(s.act(x)), 144, {"act": nn.ReLU6()}),
    "F.relu6": lambda: Net(lambda s, x: _flat(F.relu6(x)), 144),
    "torch.clamp": lambda: Net(lambda s, x: _flat(torch.clamp(x, 0.0, 0.3)), 144),
    "Tensor.clamp(min=0)": lambda: Net(lambda s, x: _flat(x.clamp(min=0)), 144),
    "nn.Hardtanh(0, m)": lambda: Net(lambda s, x: _flat(s.act(x)), 144, {"act": nn.Hardtanh(0.0, 0.4)}),
    "QCFS": lambda: Net(lambda s, x: _flat(s.act(x)), 144, {"act": QCFS(8, 0.8)}),
    "nn.AvgPool2d": lambda: Net(lambda s, x: _flat(s.pool(torch.relu(x))), 36, {"pool": nn.AvgPool2d(2)}),
    "F.avg_pool2d": lambda: Net(lambda s, x: _flat(F.avg_pool2d(torch.relu(x), 2)), 36),
    "nn.AdaptiveAvgPool2d": lambda: Net(lambda s, x: _flat(s.pool(torch.relu(x))), 4, {"pool": nn.AdaptiveAvgPool2d(1)}),
    "Tensor.mean": lambda: Net(lambda s, x: torch.relu(x).mean((2, 3)), 4),
    "nn.MaxPool2d": lambda: Net(lambda s, x: _flat(s.pool(torch.relu(x))), 36, {"pool": nn.MaxPool2d(2)}),
    "F.max_pool2d (before ReLU)": lambda: Net(lambda s, x: _flat(torch.relu(F.max_pool2d(x, 2))), 36),
    "nn.AdaptiveMaxPool2d": lambda: Net(lambda s, x: _flat(s.pool(torch.relu(x))), 4, {"pool": nn.AdaptiveMaxPool2d(1)}),
    "nn.Flatten": lambda: Net(lambda s, x: s.flat(torch.relu(x)), 144, {"flat": nn.Flatten()}),
    "torch.flatten": lambda: Net(lambda s, x: torch.flatten(torch.relu(x), 1), 144),
    "view(size(0), -1)": lambda: Net(lambda s, x: torch.relu(x).view(x.size(0), -1), 144),
    "reshape(shape[0], -1)": lambda: Net(lambda s, x: torch.relu(x).reshape(x.shape[0], -1), 144),
    "nn.Dropout": lambda: Net(lambda s, x: _flat(s.drop(torch.relu(x))), 144, {"drop": nn.Dropout(0.5)}),
    "F.dropout": lambda: Net(lambda s, x: _flat(F.dropout(torch.relu(x), 0.5, s.training)), 144),
    "nn.BatchNorm2d before ReLU": lambda: Net(lambda s, x: _flat(torch.relu(s.bn(x))), 144, {"bn": nn.BatchNorm2d(4)}),
    "nn.BatchNorm2d after ReLU": lambda: Net(
        lambda s, x: _flat(torch.relu(s.conv(s.bn(torch.relu(x))))), 144,
        {"bn": nn.BatchNorm2d(4), "conv": nn.Conv2d(4, 4, 3, padding=1)}),
    "residual add": lambda: Net(
        lambda s, x: _flat(torch.relu(s.conv(torch.relu(x)) + torch.relu(x))), 144, {"conv": nn.Conv2d(4, 4, 3, padding=1)}),
    "residual add_ with 1x1 shortcut": lambda: Net(
        lambda s, x: _flat(torch.relu(s.conv(torch.relu(x)).add_(s.short(torch.relu(x))))), 144,
        {"conv": nn.Conv2d(4, 4, 3, padding=1), "short": nn.Conv2d(4, 4, 1)}),
    "nn.Linear hidden": lambda: Net(lambda s, x: torch.relu(s.fc(_flat(torch.relu(x)))), 8, {"fc": nn.Linear(144, 8)}),
}


def _init(net: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    return net.eval()


@pytest.mark.parametrize("op", list(SUPPORTED))
def test_supported_op_converts_and_approaches_the_ann(op):
    net = _init(SUPPORTED[op]())
    x = torch.rand(24, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = net(x)
        torch.testing.assert_close(prepare_ann(net)(x), reference, rtol=1e-5, atol=1e-5)
        snn = convert_rate(net, x, timesteps=8, norm="max")
        err_short = float((snn(x) - reference).abs().max())
        snn.timesteps = 256
        err_long = float((snn(x) - reference).abs().max())
    scale = float(reference.abs().max())
    if op == "QCFS":  # one QCFS layer of L = 8 levels is reproduced exactly at T = 8, not at T -> inf
        assert err_short < 1e-4 * scale
        return
    assert err_long < 0.05 * scale, f"{op}: relative error {err_long / scale:.3f} at T=256"
    assert err_long <= err_short + 1e-6
    assert any(isinstance(m, spikec.IF) for m in snn.modules())


class Block(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.inner = inner

    def forward(self, x):
        return self.inner(self.fc(x))


class Tanh(nn.Module):
    def forward(self, x):
        return torch.tanh(x)


class Gate(nn.Module):
    def forward(self, x):
        return x * torch.relu(x)


@pytest.mark.parametrize("model,op,path", [
    (nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)), "nn.Sigmoid", "module '1'"),
    (nn.Sequential(Block(nn.GELU()), nn.Linear(4, 2)), "nn.GELU", "module '0.inner'"),
    (nn.Sequential(nn.Linear(4, 4), Block(Tanh())), "torch.tanh", "in module '1.inner'"),
    (nn.Sequential(nn.Linear(4, 4), Gate()), "operator.mul", "in module '1'"),
    (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), "nn.LayerNorm", "module '1'"),
    (nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=1), nn.Linear(4, 2)), "nn.Softmax", "module '1'"),
    (nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU()), "nn.LeakyReLU", "module '1'"),
    (nn.Sequential(nn.Linear(4, 4), spikec.IF()), "IF", "module '1'"),
])
def test_unsupported_op_is_named_with_its_place(model, op, path):
    with pytest.raises(UnsupportedOpError) as info:
        convert_rate(model.eval(), torch.rand(4, 4))
    message = str(info.value)
    assert op in message and path in message
    assert "\n" not in message
    assert isinstance(info.value, SpikecError)


@pytest.mark.parametrize("last", [nn.Softmax(dim=1), nn.LogSoftmax(dim=-1)])
def test_a_final_softmax_is_dropped_as_it_keeps_the_predicted_class(last):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), last).eval()
    x = torch.rand(16, 4)
    snn = convert_rate(net, x, timesteps=256, norm="max")
    with torch.no_grad():
        logits = net[:3](x)
        torch.testing.assert_close(snn(x), logits, rtol=0.05, atol=0.05 * float(logits.abs().max()))


def test_clamp_that_is_not_a_relu_is_unsupported():
    net = Net(lambda s, x: _flat(torch.clamp(x, -1.0, 1.0)), 144).eval()
    with pytest.raises(UnsupportedOpError, match="torch.clamp"):
        convert_rate(net, torch.rand(2, 1, 6, 6))


def test_untraceable_model_is_a_named_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(UnsupportedOpError, match="Branchy"):
        convert_rate(Branchy(), torch.rand(2, 4))


def test_wrong_input_shape_for_the_ann_is_an_error():
    with pytest.raises(SpikecError, match="shape"):
        convert_rate(nn.Sequential(nn.Linear(4, 2)), torch.rand(3, 5))
