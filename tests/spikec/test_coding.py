"""Encoders give the right rates and spike times; decoders read them back."""
import pytest
import torch

from spikec import coding


def test_rate_encode_matches_probability():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, 1.7, -0.3])
    s = coding.rate_encode(x, 20_000, generator=g)
    assert s.shape == (20_000, 7)
    rates = s.mean(0)
    # binomial std at p=0.5 and n=20000 is 0.0035; 0.015 is > 4 sigma
    assert rates.tolist() == pytest.approx([0.0, 0.1, 0.5, 0.9, 1.0, 1.0, 0.0], abs=0.015)
    assert set(s.unique().tolist()) <= {0.0, 1.0}


def test_rate_encode_is_seeded():
    x = torch.rand(3, 4)
    a = coding.rate_encode(x, 5, generator=torch.Generator().manual_seed(1))
    b = coding.rate_encode(x, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_direct_encode_repeats_input():
    x = torch.randn(2, 3)
    s = coding.direct_encode(x, 4)
    assert s.shape == (4, 2, 3) and all(torch.equal(s[t], x) for t in range(4))


def test_latency_encode_spike_times():
    x = torch.tensor([1.0, 0.5, 0.2, 0.0])
    s = coding.latency_encode(x, 11)
    # t = round((1 - x) * 10): 0, 5, 8; zero input is silent
    assert s.sum(0).tolist() == [1, 1, 1, 0]
    assert s.argmax(0)[:3].tolist() == [0, 5, 8]
    t = coding.latency_times(x, 11)
    assert t[:3].tolist() == [0, 5, 8] and t[3] == float("inf")


def test_counts_rates_and_membrane_decoders():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]).view(4, 1, 2)
    assert coding.spike_count(s).tolist() == [[3.0, 1.0]]
    assert coding.spike_rate(s).tolist() == [[0.75, 0.25]]
    assert coding.mean_membrane(s * 2).tolist() == [[1.5, 0.5]]


def test_first_spike_time_values_and_gradient():
    s = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]).view(4, 1, 3)
    s.requires_grad_(True)
    t = coding.first_spike_time(s)
    assert t.tolist() == [[1.0, 2.0, 4.0]]
    assert coding.first_spike_time(s, no_spike=-1.0).tolist() == [[1.0, 2.0, -1.0]]
    t.sum().backward()
    # neuron 0 first fires at step 1: moving its spike earlier (s[0]) gives d t / d s[0] = 0 - 1
    assert s.grad[0, 0, 0].item() == pytest.approx(-1.0)


def test_bad_timesteps():
    with pytest.raises(ValueError, match="timesteps"):
        coding.direct_encode(torch.zeros(2), 0)
