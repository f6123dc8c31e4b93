"""QCFS: quantisation levels, trainable threshold, and exact conversion at T = L."""
import pytest
import torch
from torch import nn

import spikec
from spikec.conversion.qcfs import QCFS, qcfs
from spikec.conversion.rate import convert_rate


@pytest.mark.parametrize("levels", [1, 2, 4, 8])
def test_output_takes_exactly_the_l_plus_one_levels(levels):
    q = QCFS(levels=levels, threshold=2.0)
    x = torch.linspace(-1.0, 3.0, 4001)
    y = q(x).detach()
    expected = torch.arange(levels + 1) * 2.0 / levels
    torch.testing.assert_close(torch.unique(y), expected)


def test_hand_computed_values_with_the_half_step_shift():
    # lambda = 4, L = 4: steps of 1, rounding at the half step (floor(x + 1/2)), clipped to [0, 4]
    q = QCFS(levels=4, threshold=4.0)
    x = torch.tensor([-3.0, 0.0, 0.49, 0.5, 1.49, 1.5, 2.7, 3.5, 9.0])
    torch.testing.assert_close(q(x).detach(), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0, 4.0, 4.0]))


def test_threshold_is_trained_and_the_floor_passes_gradients_straight_through():
    q = QCFS(levels=4, threshold=4.0)
    assert isinstance(q.threshold, nn.Parameter)
    x = torch.tensor([0.3, 1.2, 2.6, 7.0], requires_grad=True)
    q(x).sum().backward()
    # inside (0, lambda) the input gradient is 1, above the clip it is 0
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    # d/d lambda of lambda/L * (floor(xL/lambda + 1/2) with straight-through floor):
    # in range: (floor(xL/lambda + 1/2) - xL/lambda)/L; clipped above: 1
    xs = torch.tensor([0.3, 1.2, 2.6])
    inside = ((torch.floor(xs + 0.5) - xs) / 4).sum() + 1.0
    torch.testing.assert_close(q.threshold.grad, inside)


def test_fixed_threshold_and_bad_arguments():
    assert not isinstance(QCFS(4, 2.0, learn_threshold=False).threshold, nn.Parameter)
    with pytest.raises(ValueError):
        QCFS(levels=0)
    with pytest.raises(ValueError):
        QCFS(levels=4, threshold=0.0)


def _composed_qcfs(x, threshold, levels, shift=0.5):
    """QCFS as clamp, floor with an identity gradient and scalings, each a torch op (autograd derives the gradient)."""
    f = torch.clamp(x / threshold, 0.0, 1.0) * levels + shift
    return (f + (torch.floor(f) - f).detach()) / levels * threshold


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("levels", [1, 4, 8])
def test_written_out_gradient_equals_the_composed_one(dtype, levels):
    """Values, input gradients and threshold gradient of qcfs equal autograd's through the composition,
    at the clip bounds and on quantisation-step edges too."""
    gen = torch.Generator().manual_seed(levels)
    x = (torch.randn(4000, generator=gen) * 3).to(dtype)
    x[:8] = torch.tensor([0.0, -0.0, 2.5, 5.0, 2.5 / levels * 0.5, 2.5 / levels * 1.5, -1.0, 7.0]).to(dtype)
    g = (torch.randn(4000, generator=gen)).to(dtype)
    got, want = [], []
    for fn, out in ((qcfs, got), (_composed_qcfs, want)):
        xa = x.clone().requires_grad_(True)
        th = torch.tensor(2.5, requires_grad=True)
        y = fn(xa, th, levels)
        y.backward(g)
        out += [y.detach(), xa.grad, th.grad]
    assert got[0].dtype == dtype and torch.equal(got[0], want[0])
    # the same clip mask; inside it the written-out gradient is the incoming one, autograd's the incoming one
    # scaled by lambda / L, L and 1 / lambda in turn (a rounding or two apart)
    assert torch.equal(got[1] != 0, want[1] != 0) and bool((got[1][got[1] != 0] == g[got[1] != 0]).all())
    torch.testing.assert_close(got[1], want[1])
    if dtype == torch.bfloat16:  # the written-out sum accumulates in float32, autograd's in bfloat16
        torch.testing.assert_close(got[2], want[2], rtol=2e-2, atol=0.5)
    else:
        torch.testing.assert_close(got[2], want[2], rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-6)


def test_functional_form_matches_the_module():
    x = torch.randn(100) * 3
    torch.testing.assert_close(qcfs(x, torch.tensor(2.5), 8), QCFS(8, 2.5)(x).detach())


@pytest.mark.parametrize("levels", [2, 4, 8])
def test_one_hidden_layer_converts_exactly_at_t_equal_l(levels):
    """With a constant input current, an IF neuron (threshold lambda, v0 = lambda/2, soft reset) fires
    clamp(floor(T x / lambda + 1/2), 0, T) times in T steps: QCFS with L = T."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(6, 16), QCFS(levels, threshold=1.5), nn.Linear(16, 3)).eval()
    x = torch.randn(32, 6)
    snn = convert_rate(ann, x, timesteps=levels, norm="max")
    with torch.no_grad():
        torch.testing.assert_close(snn(x), ann(x), rtol=1e-5, atol=1e-5)
    neuron = next(m for m in snn.modules() if isinstance(m, spikec.IF))
    assert float(neuron.threshold) == pytest.approx(1.5)  # the trained threshold, not a calibrated one
    assert float(neuron.v_init) == pytest.approx(0.75)
    assert snn.conversion["qcfs_levels"] == {"1": levels}


def test_qcfs_from_relu_copies_weights_and_sets_thresholds_at_the_percentile():
    import math

    from spikec.conversion.qcfs import QCFS, qcfs_from_relu
    from spikec.models import build_model

    torch.manual_seed(0)
    ann = build_model("mlp", (1, 4, 4), 3, hidden=(8, 6)).eval()
    calib = torch.rand(50, 1, 4, 4)
    q = qcfs_from_relu(ann, calib, levels=4, percentile=90.0)
    qstate = q.state_dict()
    for name, a in ann.state_dict().items():
        assert torch.equal(a, qstate[name]), name
    assert sorted(set(qstate) - set(ann.state_dict())) == ["2.threshold", "4.threshold"]
    relus = [name for name, m in ann.named_modules() if isinstance(m, torch.nn.ReLU)]
    outs = {}
    hooks = [ann.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.flatten()))
             for n in relus]
    with torch.no_grad():
        ann(calib)
    for h in hooks:
        h.remove()
    for name in relus:
        positive = torch.sort(outs[name][outs[name] > 0]).values
        want = positive[math.ceil(0.9 * len(positive)) - 1]  # nearest rank
        got = q.get_submodule(name)
        assert isinstance(got, QCFS) and got.levels == 4
        assert float(got.threshold.detach()) == pytest.approx(float(want), rel=1e-6, abs=0)
    with pytest.raises(ValueError, match="build_model"):
        qcfs_from_relu(torch.nn.Sequential(torch.nn.ReLU()), calib)
