"""Surrogate gradients are the documented derivatives."""
import math

import pytest
import torch

from spikec import IF
from spikec import surrogate as sg
from spikec.surrogate import ArcTan, FastSigmoid, StraightThrough, Triangle


def grad_at(s, points):
    x = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    y = s(x)
    assert torch.equal(y, (x >= 0).double())
    y.sum().backward()
    return x.grad.tolist()


def test_arctan():
    s = sg.ArcTan(alpha=2.0)
    g = grad_at(s, [0.0, 0.5, -0.5])
    expected = 1.0 / (1 + (math.pi / 2 * 2.0 * 0.5) ** 2)
    assert g == pytest.approx([1.0, expected, expected])


def test_fast_sigmoid():
    g = grad_at(sg.FastSigmoid(alpha=25.0), [0.0, 0.04, -0.2])
    assert g == pytest.approx([1.0, 0.25, 1 / 36])


def test_triangle():
    g = grad_at(sg.Triangle(alpha=2.0), [0.0, 0.25, -0.25, 0.5, 3.0])
    assert g == pytest.approx([2.0, 1.0, 1.0, 0.0, 0.0])


def test_straight_through():
    assert grad_at(sg.StraightThrough(), [-3.0, 0.0, 5.0]) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "s, area",
    [(sg.ArcTan(), 1.0), (sg.Triangle(alpha=0.5), 1.0), (sg.FastSigmoid(alpha=4.0), 2 / 4.0)],
)
def test_surrogate_areas(s, area):
    # arctan and triangle integrate to the step's jump of 1; fast sigmoid to 2/alpha (snntorch's scale)
    x = torch.linspace(-2000, 2000, 4_000_001, dtype=torch.float64)
    assert torch.trapezoid(s.derivative(x), x).item() == pytest.approx(area, rel=0.01)


def test_by_name_round_trips():
    for s in (sg.ArcTan(3.0), sg.FastSigmoid(5.0), sg.Triangle(0.5), sg.StraightThrough()):
        assert sg.by_name(s.name, s.alpha) == s
    with pytest.raises(ValueError, match="arctan"):
        sg.by_name("sigmoid")


@pytest.mark.parametrize("base", [ArcTan(), Triangle(alpha=0.7), FastSigmoid(), StraightThrough()])
@pytest.mark.parametrize("threshold", [torch.tensor(3.5), torch.tensor([0.5, 2.0, 8.0])])
def test_threshold_relative_surrogate_is_the_base_on_membrane_over_threshold(base, threshold):
    from spikec.surrogate import relative_to_threshold

    x = torch.linspace(-10, 10, 61).reshape(-1, 1).expand(-1, threshold.numel())
    rel = relative_to_threshold(base, threshold)
    want = base.derivative(x / threshold) / threshold
    torch.testing.assert_close(rel.derivative(x), want)
    if threshold.numel() == 1 and isinstance(base, (ArcTan, Triangle)):
        assert type(rel) is type(base)  # same closed form: the fused kernels keep running it


def test_balanced_if_gradient_is_measured_in_thresholds():
    from spikec.conversion.rate_modules import BalancedIF

    torch.manual_seed(0)
    x = (torch.rand(4, 3, 5) * 12).requires_grad_()
    for thr in (torch.tensor(6.0), torch.tensor([[1.0], [6.0], [20.0]])):
        neuron = BalancedIF(thr)
        neuron.backend = "torch"
        neuron(x).sum().backward()
        g_conv = x.grad.clone()
        x.grad = None
        # the same neuron, written out: IF on x / thr with threshold 1 has the same spikes and,
        # through the chain rule, d/dx = base'((v - thr) / thr) / thr at every step
        ref = IF(threshold=1.0, reset="subtract", v_init=0.5, backend="torch")
        ref(x / thr).sum().backward()
        torch.testing.assert_close(g_conv, x.grad)
        x.grad = None
