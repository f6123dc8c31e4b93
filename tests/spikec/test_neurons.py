"""Neuron traces against sequences computed by hand."""
import pytest
import torch

import spikec
from spikec.functional import if_multistep, if_step, lif_multistep, lif_step


def seq(*values):
    return torch.tensor(values, dtype=torch.float64).view(-1, 1)


def run_if(x, **kw):
    n = spikec.IF(**kw).double()
    return n(x).flatten().tolist(), n.v.item()


def test_if_subtract_trace():
    # v: 0.5 | 1.1 -> fire, 0.1 | 0.4 | 1.6 -> fire, 0.6 | 0.6
    spikes, v = run_if(seq(0.5, 0.6, 0.3, 1.2, 0.0), threshold=1.0, reset="subtract")
    assert spikes == [0, 1, 0, 1, 0]
    assert v == pytest.approx(0.6)


def test_if_zero_reset_trace():
    # v: 0.5 | 1.1 -> fire, 0 | 0.3 | 1.5 -> fire, 0 | 0
    spikes, v = run_if(seq(0.5, 0.6, 0.3, 1.2, 0.0), threshold=1.0, reset="zero")
    assert spikes == [0, 1, 0, 1, 0]
    assert v == 0.0


def test_if_v_init_and_fire_at_threshold():
    # v_init 0.5: 1.0 -> fire (v >= thr), 0 | 0.6 | 0.9 | 2.1 -> fire, 1.1 | 1.1 -> fire, 0.1
    spikes, v = run_if(seq(0.5, 0.6, 0.3, 1.2, 0.0), threshold=1.0, v_init=0.5)
    assert spikes == [1, 0, 0, 1, 1]
    assert v == pytest.approx(0.1)


def test_if_threshold_scales_trace():
    # threshold 2: v 1.5 | 3.0 -> fire, 1.0 | 1.5 | 3.0 -> fire, 1.0
    spikes, v = run_if(seq(1.5, 1.5, 0.5, 1.5), threshold=2.0)
    assert spikes == [0, 1, 0, 1]
    assert v == pytest.approx(1.0)


def test_lif_leak_trace():
    # beta 0.5: v 0.8 | 1.2 -> fire, 0.2 | 0.9 | 1.25 -> fire, 0.25
    n = spikec.LIF(beta=0.5, threshold=1.0).double()
    s = n(seq(0.8, 0.8, 0.8, 0.8))
    assert s.flatten().tolist() == [0, 1, 0, 1]
    assert n.v.item() == pytest.approx(0.25)


def test_lif_zero_reset_leak_trace():
    # beta 0.5, zero reset: v 0.8 | 1.2 -> fire, 0 | 0.8 | 1.2 -> fire, 0
    n = spikec.LIF(beta=0.5, reset="zero").double()
    assert n(seq(0.8, 0.8, 0.8, 0.8)).flatten().tolist() == [0, 1, 0, 1]
    assert n.v.item() == 0.0


def test_state_carries_between_calls_and_reset_clears_it():
    n = spikec.IF().double()
    first = n(seq(0.6)).item()
    second = n(seq(0.6)).item()  # v = 1.2 -> fire
    assert (first, second) == (0.0, 1.0)
    spikec.reset(torch.nn.Sequential(n))
    assert n.v is None
    assert n(seq(0.6)).item() == 0.0


def test_shape_mismatch_names_the_fix():
    n = spikec.LIF()
    n(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="spikec.reset"):
        n(torch.zeros(2, 5, 4))


def test_output_dtype_and_shape_follow_input():
    x = torch.randn(4, 2, 3, 5, dtype=torch.float64)
    s = spikec.LIF()(x)
    assert s.shape == x.shape and s.dtype == x.dtype
    assert set(s.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_module_equals_functional_forms(reset, beta):
    torch.manual_seed(0)
    x = torch.randn(9, 3, 7, dtype=torch.float64)
    v0 = torch.full((3, 7), 0.25, dtype=torch.float64)
    n = spikec.LIF(beta=beta, threshold=0.8, reset=reset, v_init=0.25).double()
    s_mod = n(x)
    s_multi, v_multi = lif_multistep(x, v0, beta, 0.8, reset)
    v = v0
    steps = []
    for t in range(x.shape[0]):
        s, v = lif_step(x[t], v, beta, 0.8, reset)
        steps.append(s)
    assert torch.equal(s_mod, s_multi) and torch.equal(s_multi, torch.stack(steps))
    assert torch.allclose(n.v, v_multi) and torch.allclose(v_multi, v)
    if beta == 1.0:
        s_if, v_if = if_multistep(x, v0, 0.8, reset)
        assert torch.equal(s_if, s_multi) and torch.allclose(v_if, v_multi)
        s1, v1 = if_step(x[0], v0, 0.8, reset)
        assert torch.equal(s1, steps[0])


def test_gradient_through_one_step_is_the_surrogate_derivative():
    sg = spikec.surrogate.FastSigmoid(alpha=10.0)
    x = torch.tensor([[0.7]], dtype=torch.float64, requires_grad=True)
    s, _ = lif_step(x, torch.zeros(1, 1, dtype=torch.float64), 1.0, 1.0, "subtract", sg)
    s.sum().backward()
    # d s / d x = sg'(x - 1) = 1 / (1 + 10 * 0.3)^2
    assert x.grad.item() == pytest.approx(1 / (1 + 10 * 0.3) ** 2)


def test_detach_reset_removes_reset_path_from_gradient():
    sg = spikec.surrogate.StraightThrough()
    x = torch.tensor([[1.5], [0.0]], dtype=torch.float64, requires_grad=True)
    v0 = torch.zeros(1, dtype=torch.float64)
    # step 0: v=1.5, s0=1 (ds0/dx0 = 1); v -> 1.5 - s0. step 1: v = 0.5, s1 = 0.
    # attached: ds1/dx0 = dv1/dx0 = 1 - ds0/dx0 = 0 ; detached: ds1/dx0 = 1.
    for detach, expected in [(False, 0.0), (True, 1.0)]:
        x.grad = None
        s, _ = lif_multistep(x, v0, 1.0, 1.0, "subtract", sg, detach_reset=detach)
        s[1].sum().backward()
        assert x.grad[0].item() == pytest.approx(expected)


def test_learnable_threshold_and_leak_get_gradients_and_train():
    torch.manual_seed(0)
    n = spikec.LIF(beta=0.5, threshold=1.0, learn_beta=True, learn_threshold=True)
    names = {name for name, _ in n.named_parameters()}
    assert names == {"beta_logit", "threshold"}
    assert n.beta.item() == pytest.approx(0.5, abs=1e-6)
    x = torch.rand(8, 16, 4)
    n(x).sum().backward()
    assert n.threshold.grad is not None and n.threshold.grad.item() < 0  # higher threshold, fewer spikes
    assert n.beta_logit.grad is not None and n.beta_logit.grad.item() > 0  # less leak, more spikes


def test_if_has_no_leak_parameter():
    n = spikec.IF(learn_threshold=True)
    assert [name for name, _ in n.named_parameters()] == ["threshold"]
    assert float(n.beta) == 1.0


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="reset"):
        spikec.IF(reset="soft")
    with pytest.raises(ValueError, match="beta"):
        spikec.LIF(beta=1.5)
    with pytest.raises(ValueError, match="backend"):
        spikec.LIF(backend="cuda")
    with pytest.raises(ValueError, match=r"\[T, B"):
        spikec.LIF()(torch.zeros(3))
