"""Surrogate gradients are the documented derivatives."""
import math

import pytest
import torch

from spikec import surrogate as sg


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
