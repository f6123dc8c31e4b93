"""Whole-network TTFS conversion: exact scores, simulator agreement, one spike per neuron, errors."""
import pytest
import torch
from torch import nn

import spikec
from spikec.conversion.ttfs import convert_ttfs
from spikec.errors import SpikecError
from spikec.models import build_model

SMALL = {
    "mlp": dict(hidden=[32, 16]),
    "lenet": dict(channels=[4, 8], hidden=[24, 16]),
    "lenet_max": dict(channels=[4, 8], hidden=[24], pool="max", batch_norm=True),
    "vgg": dict(layers=[8, "M", 16, "M", 16], hidden=[32], width=1.0),
    "vgg_max": dict(layers=[8, "M", 16, "M", 16], hidden=[32], pool="max"),
    "resnet": dict(blocks=[1, 1], channels=[8, 16]),
}


def make_ann(key: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    ann = build_model(key.split("_")[0], (1, 8, 8), 10, **SMALL[key]).double()
    for m in ann.modules():  # batch norms with non-trivial statistics
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return ann.eval()


def inputs(n=32, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("key", sorted(SMALL))
def test_float64_scores_equal_ann_logits(key):
    ann = make_ann(key)
    x = inputs()
    snn = spikec.convert(ann, x, coding="ttfs")
    with torch.no_grad():
        expected, got = ann(x), snn(x)
    assert got.dtype == torch.float64 and got.shape == expected.shape
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-6
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_hidden_spike_times_decode_to_ann_activations():
    ann = make_ann("mlp")
    x = inputs()
    snn = convert_ttfs(ann, x)
    with torch.no_grad():
        out = snn.run(x)
        h1 = torch.relu(ann[1](ann[0](x)))
        h2 = torch.relu(ann[3](h1))
    for (name, layer), act in zip(snn.spiking_layers(), (h1, h2)):
        tau = out[name]
        decoded = torch.where(tau < 1, layer.scale * (1 - tau), torch.zeros_like(tau))
        assert torch.allclose(decoded, act, atol=1e-12)
        assert ((tau < 1) == (act > 0)).all()  # silent exactly where the ReLU is 0


@pytest.mark.parametrize("key", ["lenet_max", "resnet"])
def test_simulators_agree_at_the_same_resolution(key):
    ann = make_ann(key)
    x = inputs(4)
    snn = convert_ttfs(ann, x)
    with torch.no_grad():
        for bits in (3, 5):
            analytic = snn.set_simulation("analytic", bits)(x)
            stepped = snn.set_simulation("stepped", bits)(x)
            assert torch.allclose(analytic, stepped, rtol=0, atol=1e-9), bits


def test_stepped_simulation_converges_to_the_exact_mapping():
    ann = make_ann("mlp")
    x = inputs(8)
    snn = convert_ttfs(ann, x)
    with torch.no_grad():
        exact = snn(x)
        errors = [float((snn.set_simulation("stepped", b)(x) - exact).abs().max() / exact.abs().max())
                  for b in (4, 8, 11)]
    # rounding spike times to 2**-b of a window: the error shrinks with the step
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 3e-3


@pytest.mark.parametrize("key,simulator,bits", [("vgg_max", "analytic", None), ("lenet", "stepped", 5),
                                                ("resnet", "stepped", 4), ("mlp", "analytic", 3)])
def test_at_most_one_spike_per_neuron_on_random_networks(key, simulator, bits):
    for seed in range(2):
        ann = make_ann(key, seed)
        x = inputs(16, seed + 5)
        snn = convert_ttfs(ann, x * 0.8, time_bits=bits, simulator=simulator)  # inputs beyond calibration too
        with torch.no_grad(), spikec.record(snn) as rec:
            snn(x)
        assert rec.max_spikes_per_neuron == 1
        assert 0 < rec.spikes_per_neuron < 1
        steps = snn.simulation.report_steps
        for name, layer in rec.layers.items():
            t = layer.first_spike_times
            finite = t[torch.isfinite(t)]
            assert finite.min() >= 0 and finite.max() < steps, name
            if bits is not None:
                assert torch.equal(finite, finite.round()), name  # whole steps
            if name != "encoder":  # every random pixel is > 0, so every input neuron fires
                assert 0 < layer.fired_fraction < 1


def test_record_reports_first_spike_steps_of_each_layer():
    ann = make_ann("mlp")
    x = inputs(4)
    snn = convert_ttfs(ann, x, time_bits=6)
    with torch.no_grad(), spikec.record(snn) as rec:
        out = snn.run(x)
    assert list(rec.layers) == ["encoder"] + [f"ops.{n}" for n, _ in snn.spiking_layers()]
    for name, _ in snn.spiking_layers():
        tau = out[name].reshape(4, -1)
        expected = torch.where(tau < 1, tau * 64, torch.full_like(tau, float("inf"))).float()
        assert torch.equal(rec.layers[f"ops.{name}"].first_spike_times, expected)
        assert rec.layers[f"ops.{name}"].fired_fraction == pytest.approx(float((tau < 1).double().mean()))
    assert snn.latency_windows == 3 and snn.latency_steps == 3 * 64


def test_signed_inputs_use_two_populations():
    ann = make_ann("mlp")
    x = inputs() * 2 - 1
    snn = convert_ttfs(ann, x)
    assert snn.encoder.signed
    with torch.no_grad():
        assert torch.allclose(snn(x), ann(x), rtol=1e-9, atol=1e-12)
        enc = snn.run(x)["encoder"]
    assert enc.shape == (2, 32, 1, 8, 8)
    assert not ((enc[0] < 1) & (enc[1] < 1)).any()  # a pixel is positive or negative, not both


def test_margin_and_clipping():
    ann = make_ann("mlp")
    x = inputs()
    with torch.no_grad():
        wide = convert_ttfs(ann, x, margin=2.0)
        assert torch.allclose(wide(x), ann(x), rtol=1e-9, atol=1e-12)
        # calibrating on a fraction of the range clips large activations: no longer exact
        narrow = convert_ttfs(ann, x * 0.3)
        assert not torch.allclose(narrow(x), ann(x), rtol=1e-3, atol=1e-3)


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.sigmoid(self.fc1(x)))


class _NoRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x))


@pytest.mark.parametrize("model,message", [(_Sigmoid(), "sigmoid"), (_NoRelu(), "fc2"),
                                           (nn.Sequential(nn.Linear(4, 3), nn.Tanh()), "Tanh")])
def test_unsupported_graphs_raise_one_line_errors_naming_the_node(model, message):
    with pytest.raises(SpikecError, match=message):
        convert_ttfs(model, torch.rand(8, 4))


def test_bad_options():
    ann = make_ann("mlp")
    with pytest.raises(ValueError, match="time_bits"):
        convert_ttfs(ann, inputs(), simulator="stepped")
    with pytest.raises(ValueError, match="simulator"):
        convert_ttfs(ann, inputs(), simulator="leaky")
    with pytest.raises(ValueError, match="margin"):
        convert_ttfs(ann, inputs(), margin=0)
    with pytest.raises(SpikecError, match="empty"):
        convert_ttfs(ann, inputs()[:0])


class _Custom(nn.Module):
    """Scaling by constants, subtraction, negation, ReLU6, max pooling, mean, view, a layer used twice."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(6, 8, 1)
        self.fc0, self.fc, self.r6 = nn.Linear(8 * 4 * 4, 8), nn.Linear(8, 10), nn.ReLU6()

    def forward(self, x):
        h = torch.nn.functional.relu(self.c1(x / 2) * 3)
        h = self.r6(h * 2)
        a = torch.relu(-(self.c2(h) - self.c3(h)))
        p = torch.nn.functional.max_pool2d(a, 2)
        v = p.view(p.size(0), -1)
        return self.fc(p.mean((2, 3))) + 0.5 * self.fc(torch.relu(self.fc0(v)))


def test_custom_graph_with_constants_sub_relu6_mean_and_shared_layer():
    torch.manual_seed(0)
    net = _Custom().double().eval()
    x = torch.rand(32, 1, 8, 8, dtype=torch.float64) * 4 - 1
    snn = convert_ttfs(net, x)
    with torch.no_grad():
        assert torch.allclose(snn(x), net(x), rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # the ReLU6 really clips here, and the SNN window clips at 6 with it
        h = torch.relu(net.c1(x / 2) * 3) * 2
    assert h.max() > 6 and snn.ops["r6"].scale == 6.0


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.cat([torch.relu(x), x], 1))


def test_concatenation_is_reported():
    with pytest.raises(SpikecError, match="cat"):
        convert_ttfs(_Cat(), torch.rand(4, 4))


def test_pure_layer_function_reproduces_the_network_and_supports_stop_and_thresholds():
    from spikec.conversion.ttfs_layers import TTFSLayer
    from spikec.conversion.ttfs_sim import layer_charge, layer_spike_times

    ann = make_ann("resnet")
    x = inputs(8)
    snn = convert_ttfs(ann, x, time_bits=5)

    def explicit(stop=None, scale=None):
        def layer_fn(name, module, sources, sim):
            inputs_ = [(tau, s.weight, s.bias, s.spec) for tau, s in zip(sources, module.synapses)]
            if isinstance(module, TTFSLayer):
                return layer_spike_times(inputs_, time_bits=sim.time_bits, simulator=sim.simulator,
                                         stop=stop, threshold_scale=scale)
            return layer_charge(inputs_) * module.scale  # readout: membrane at the end of its input window
        return layer_fn

    with torch.no_grad():
        ref = snn.run(x)
        same = snn.run(x, layer_fn=explicit())
        early = snn.run(x, layer_fn=explicit(stop=0.5))
        high = snn.run(x, layer_fn=explicit(scale=1.5))
    assert torch.equal(ref["readout"], same["readout"])
    first_name = snn.spiking_layers()[0][0]
    # same inputs, so the first layer keeps exactly the spikes that came before the stop time
    t = ref[first_name]
    assert torch.equal(early[first_name], torch.where(t < 0.5, t, torch.ones_like(t)))
    for name, _ in snn.spiking_layers():
        assert (early[name] < 1).float().mean() < (ref[name] < 1).float().mean()
        assert (high[name] < 1).float().mean() < (ref[name] < 1).float().mean()
    # the knobs on the modules do the same as the pure function's arguments
    first = snn.spiking_layers()[0][1]
    first.stop = 0.5
    with torch.no_grad():
        knob = snn.run(x)
    first.stop = None
    with torch.no_grad():
        expected = snn.run(x, layer_fn=lambda n, m, s, sim: (
            explicit(stop=0.5 if n == first_name else None)(n, m, s, sim)))
    assert torch.equal(knob["readout"], expected["readout"])
