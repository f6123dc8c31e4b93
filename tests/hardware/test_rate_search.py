"""The rate baseline's one-pass step search equals fresh runs at every T, and stops at the target."""
import pytest
import torch
from torch import nn

import spikec
from spikec.errors import SpikecError
from spikec.hardware.rate_search import rate_step_counts


@pytest.fixture(scope="module")
def rate_net():
    torch.manual_seed(3)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 16, 24), nn.ReLU(), nn.Linear(24, 5)).eval()
    calib = torch.rand(64, 1, 8, 8)
    return spikec.convert(ann, calib, coding="rate", timesteps=4)


def _fresh(net, x, y, T):
    """A fresh ``T``-step run of the whole batch at once: accuracy and per-layer per-sample spikes."""
    before = net.timesteps
    net.timesteps = T
    try:
        with torch.no_grad(), spikec.record(net, first_spike_times=False) as rec:
            scores = net(x)
    finally:
        net.timesteps = before
    return int((scores.argmax(1) == y).sum()) / len(y), [r.sample_spikes for r in rec.layers.values()]


def test_every_step_equals_a_fresh_run(rate_net):
    x, y = torch.rand(21, 1, 8, 8), torch.randint(0, 5, (21,))
    steps = (1, 3, 8, 13)
    # batches of 5 (the last one short) and chunks of 2 steps: states kept across batches and chunks
    counts = rate_step_counts(rate_net, x, y, steps, batch_size=5, chunk=2)
    assert [c.timesteps for c in counts] == list(steps)
    for c in counts:
        acc, spikes = _fresh(rate_net, x, y, c.timesteps)
        assert c.accuracy == acc
        assert len(c.layer_spikes) == len(spikes) == 2
        for mine, ref in zip(c.layer_spikes, spikes):
            assert mine.shape == (21,)
            assert torch.allclose(mine, ref.to(mine.dtype), atol=1e-9)
    # spikes only accumulate with more steps, and some neurons do fire
    for a, b in zip(counts, counts[1:]):
        assert all(bool((sb >= sa).all()) for sa, sb in zip(a.layer_spikes, b.layer_spikes))
    assert counts[-1].spikes_per_inference > 0
    assert rate_net.timesteps == 4  # the network is left as it was


def test_search_stops_at_the_first_step_reaching_the_target(rate_net):
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 5, (16,))
    full = rate_step_counts(rate_net, x, y, (2, 4, 8, 16))
    target = full[1].accuracy  # reached at T=4 at the latest
    first = next(c.timesteps for c in full if c.accuracy >= target)
    stopped = rate_step_counts(rate_net, x, y, (2, 4, 8, 16), target=target)
    assert stopped[-1].timesteps == first and len(stopped) == [c.timesteps for c in full].index(first) + 1
    never = rate_step_counts(rate_net, x, y, (2, 4), target=1.01, progress=True)  # the bar changes nothing
    assert [c.timesteps for c in never] == [2, 4]


def test_latency_input_is_refused_in_one_line(rate_net):
    net = spikec.convert(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval(), torch.rand(8, 4), coding="rate",
                         timesteps=4)
    net.encoding = "latency"
    with pytest.raises(SpikecError) as err:
        rate_step_counts(net, torch.rand(2, 4), torch.zeros(2, dtype=torch.long), (4,))
    assert "latency" in str(err.value) and "\n" not in str(err.value)
