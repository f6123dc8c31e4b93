"""Rate conversion of small hand-built networks: thresholds, firing counts, outputs, pooling, residuals."""
import math

import pytest
import torch
from torch import nn

import spikec
from spikec.conversion.maxpool import SpikeMaxPool
from spikec.conversion.normalize import NormSpec, calibrate
from spikec.conversion.prepare import prepare_ann
from spikec.conversion.rate import RateSNN, convert_rate
from spikec.conversion.rate_modules import BalancedIF
from spikec.errors import UsageError


def _two_layer(w2=None):
    """x[4] -> Linear (first three inputs passed through) -> ReLU -> Linear(3, 2)."""
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3, 4))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]) if w2 is None else w2)
        net[2].bias.copy_(torch.tensor([0.1, -0.2]))
    return net.eval()


X = torch.tensor([[1.0, 0.5, -1.0, 0.25]])


@pytest.mark.parametrize("T,counts", [(4, [4, 2, 0]), (3, [3, 2, 0]), (1, [1, 1, 0])])
def test_first_layer_fires_round_half_up_of_t_times_the_normalised_activation(T, counts):
    # activations [1, 0.5, 0], max-norm lambda = 1; an IF neuron from v0 = lambda/2 fires
    # floor(T * a / lambda + 1/2) times under a constant current a
    net = _two_layer()
    snn = convert_rate(net, X, timesteps=T, norm="max")
    with spikec.record(snn) as rec:
        out = snn(X)
    layer = rec.layers["net.net.1"]
    assert layer.num_neurons == 3
    assert layer.sample_spikes.tolist() == [float(sum(counts))]
    rates = torch.tensor(counts, dtype=torch.float32) / T
    expected = rates @ net[2].weight.detach().T + net[2].bias.detach()
    torch.testing.assert_close(out, expected.unsqueeze(0))


def test_hand_traced_first_spike_times():
    # a = 0.5, lambda = 1, v0 = 0.5: v reaches 1.0 at step 0 (spike, reset to 0), 0.5, 1.0 (spike), ...
    snn = convert_rate(_two_layer(), X, timesteps=4, norm="max")
    with spikec.record(snn) as rec:
        snn(X)
    first = rec.layers["net.net.1"].first_spike_times[0]
    assert first[:2].tolist() == [0.0, 0.0] and math.isinf(first[2])


def test_initial_membrane_option_changes_rounding_to_floor():
    snn = convert_rate(_two_layer(), X, timesteps=3, norm="max", v_init=0.0)
    with spikec.record(snn) as rec:
        snn(X)
    assert rec.layers["net.net.1"].sample_spikes.tolist() == [3.0 + 1.0]  # floor(3*1), floor(3*0.5)


def test_thresholds_and_initial_membranes_follow_the_normalisation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 5), nn.ReLU(),
                        nn.Linear(5, 2)).eval()
    x = torch.randn(40, 1, 4, 4)
    with torch.no_grad():
        conv_out = torch.relu(net[0](x))
        fc_out = torch.relu(net[3](torch.relu(net[0](x)).flatten(1)))

    def nearest_rank(values, p):
        v = values.flatten().sort().values
        return v[int(round(p / 100 * (v.numel() - 1)))]

    prepared = prepare_ann(net)
    scales = calibrate(prepared, x, "max")
    assert float(scales["1"]) == pytest.approx(float(conv_out.max()))
    scales = calibrate(prepared, x, "percentile:99")
    assert float(scales["1"]) == pytest.approx(float(nearest_rank(conv_out, 99)))
    assert float(scales["4"]) == pytest.approx(float(nearest_rank(fc_out, 99)))
    scales = calibrate(prepared, x, "channel:100")
    assert scales["1"].shape == (3, 1, 1) and scales["4"].shape == (5,)
    torch.testing.assert_close(scales["1"].flatten(), conv_out.amax((0, 2, 3)))
    snn = convert_rate(net, x, norm="channel:100")
    neurons = [m for m in snn.modules() if isinstance(m, BalancedIF)]
    torch.testing.assert_close(neurons[0].threshold.flatten(), conv_out.amax((0, 2, 3)))
    torch.testing.assert_close(neurons[0].v_init, 0.5 * neurons[0].threshold)


def test_a_channel_that_never_fires_gets_the_layer_threshold():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        net[0].bias.copy_(torch.tensor([0.0, -1.0]))
    scales = calibrate(prepare_ann(net), torch.tensor([[2.0, 1.0], [1.0, 1.0]]), "channel:100")
    assert scales["1"].tolist() == [2.0, 2.0]


@pytest.mark.parametrize("text,expected", [
    ("percentile", NormSpec(False, 99.9)), ("percentile:99.99", NormSpec(False, 99.99)),
    ("max", NormSpec(False, 100.0)), ("channel", NormSpec(True, 99.9)), ("channel:100", NormSpec(True, 100.0)),
])
def test_norm_strings(text, expected):
    assert NormSpec.parse(text) == expected
    assert NormSpec.parse(str(expected)) == expected


@pytest.mark.parametrize("bad", ["minmax", "percentile:abc", "percentile:0", "channel:101", "max:5"])
def test_bad_norm_strings_are_usage_errors(bad):
    with pytest.raises(UsageError):
        NormSpec.parse(bad)


def test_timesteps_can_change_after_conversion_and_calls_are_independent():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(6, 4)
    snn = convert_rate(net, x, timesteps=4)
    assert isinstance(snn, RateSNN)
    first = snn(x)
    torch.testing.assert_close(snn(x), first)  # state is reset on every call
    snn.timesteps = 64
    assert snn(x).shape == (6, 3)
    err = {T: None for T in (4, 256)}
    for T in err:
        snn.timesteps = T
        with torch.no_grad():
            err[T] = float((snn(x) - net(x)).abs().max())
    assert err[256] < err[4]
    assert err[256] < 0.05


def test_direct_input_and_membrane_readout_need_no_output_spikes():
    net = _two_layer()
    snn = convert_rate(net, X, timesteps=8, norm="max")
    assert snn.encoding == "direct" and snn.readout == "membrane"
    neurons = [m for m in snn.modules() if isinstance(m, spikec.IF)]
    assert len(neurons) == 1  # one hidden layer, no spiking output layer


def test_residual_branches_are_added_in_activation_units():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.Linear(4 * 16, 3)

        def forward(self, x):
            h = torch.relu(self.c1(x))
            y = torch.relu(self.c2(h) + h)
            return self.head(y.flatten(1))

    torch.manual_seed(0)
    net = Block().eval()
    x = torch.rand(16, 1, 4, 4)
    snn = convert_rate(net, x, timesteps=512, norm="max")
    # SpikeScale is traced into a multiplication by its buffer
    scales = [b for name, b in snn.named_buffers() if name.endswith("_scale.scale")]
    neurons = [m for m in snn.modules() if isinstance(m, BalancedIF)]
    assert len(scales) == 1 and len(neurons) == 2
    # the identity branch carries spikes of the first layer, scaled by its threshold
    torch.testing.assert_close(scales[0], neurons[0].threshold)
    with torch.no_grad():
        rel = (snn(x) - net(x)).abs().max() / net(x).abs().max()
    assert float(rel) < 0.03


def test_spike_max_pool_counts_hand_traced():
    # two inputs in one window: A fires at steps 0 and 2, B at steps 1, 2 and 3
    a = torch.tensor([1.0, 0.0, 1.0, 0.0])
    b = torch.tensor([0.0, 1.0, 1.0, 1.0])
    x = torch.stack([a, b], -1).view(4, 1, 1, 1, 2)
    count = SpikeMaxPool((1, 2), method="count")
    out = count(x).flatten()
    # running max of counts: 1, 1, 2, 3 -> a spike whenever it grows
    assert out.tolist() == [1.0, 0.0, 1.0, 1.0]
    gate = SpikeMaxPool((1, 2), method="gate")
    # leader by counts before the step (first on ties): A, A, A (1-1 tie), A (2-2 tie)
    assert gate(x).flatten().tolist() == [1.0, 0.0, 1.0, 0.0]


def test_spike_max_pool_keeps_state_between_calls_until_reset():
    pool = SpikeMaxPool(2)
    x = torch.zeros(3, 1, 1, 2, 2)
    x[:, 0, 0, 0, 0] = 1.0
    assert pool(x).sum() == 3
    assert pool(torch.zeros(2, 1, 1, 2, 2)).sum() == 0  # the leader's count is already emitted
    spikec.reset(pool)
    assert pool.counts is None


def test_max_pool_network_matches_the_ann_and_owns_no_neurons():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(12, 2)).eval()
    x = torch.rand(20, 1, 4, 4)
    snn = convert_rate(net, x, timesteps=256, norm="max")
    with spikec.record(snn) as rec:
        out = snn(x)
    pool_layers = [r for n, r in rec.layers.items() if isinstance(dict(snn.named_modules())[n], SpikeMaxPool)]
    assert len(pool_layers) == 1 and pool_layers[0].num_neurons == 0 and pool_layers[0].spikes == 0
    with torch.no_grad():
        rel = (out - net(x)).abs().max() / net(x).abs().max()
    assert float(rel) < 0.03


def test_ann_is_left_unchanged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    convert_rate(net, torch.randn(10, 4))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_empty_calibration_data_and_bad_options_are_usage_errors():
    net = _two_layer()
    with pytest.raises(UsageError):
        convert_rate(net, torch.empty(0, 4))
    with pytest.raises(UsageError):
        convert_rate(net, X, timesteps=0)
    with pytest.raises(UsageError):
        convert_rate(net, X, maxpool="avg")


@pytest.mark.parametrize("budget", [None, 1000])
@pytest.mark.parametrize("p", [99.9, 99.0, 50.0])
def test_percentiles_are_exact_nearest_rank_with_ties_batches_and_reduction(monkeypatch, budget, p):
    from spikec.conversion import normalize

    if budget is not None:  # force the early reduction to top candidates
        monkeypatch.setattr(normalize, "RAW_BUDGET", budget)
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 64, 4)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 2.0, -0.5]).view(3, 1, 1, 1))
        net[0].bias.copy_(torch.tensor([0.0, -0.5, 0.25]))
    torch.manual_seed(3)
    x = (torch.rand(300, 1, 8, 8) * 8).round() / 8  # few distinct values: many ties
    act = torch.relu(net[0](x)).detach()

    def nearest_rank(values):
        v = values.flatten().sort().values
        return float(v[int(round(p / 100 * (v.numel() - 1)))])

    prepared = prepare_ann(net)
    layer = calibrate(prepared, x, f"percentile:{p}", batch_size=64)["1"]
    assert float(layer) == pytest.approx(nearest_rank(act))
    channel = calibrate(prepared, x, f"channel:{p}", batch_size=64)["1"].flatten()
    expected = [nearest_rank(act[:, c]) or float(act[:, c].max()) for c in range(3)]
    assert channel.tolist() == pytest.approx(expected)
