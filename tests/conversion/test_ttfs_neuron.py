"""TTFS neurons and single layers against hand-derived spike times and the ReLU layers they map."""
import pytest
import torch
import torch.nn.functional as F

from spikec.conversion.ttfs_neuron import fire_analytic, fire_stepped, ramp_trace, times_from_trains
from spikec.conversion.ttfs_sim import layer_spike_times, simulate_layer_steps
from spikec.conversion.ttfs_synapse import SynapseSpec, apply_time_op, make_op, synapse_charge_trace

LINEAR = SynapseSpec("linear")


def one_neuron(tau, w, b=None, **kw):
    t = torch.tensor([tau], dtype=torch.float64)
    w = torch.tensor([w], dtype=torch.float64)
    b = None if b is None else torch.tensor([b], dtype=torch.float64)
    return layer_spike_times([(t, w, b, LINEAR)], **kw)[0, 0].item()


def test_single_neuron_continuous_by_hand():
    # charge = 0.5*(1-0.2) + 0.25*(1-0.6) + 0.1 = 0.6 ; ramp of slope 1 reaches threshold 1 at tau = 0.4
    assert one_neuron([0.2, 0.6], [0.5, 0.25], 0.1) == pytest.approx(0.4, abs=1e-12)
    # a silent input (tau = 1, or inf) adds nothing: charge 0.4 -> tau 0.6
    assert one_neuron([0.2, 1.0], [0.5, 0.25]) == pytest.approx(0.6, abs=1e-12)
    assert one_neuron([0.2, float("inf")], [0.5, 0.25]) == pytest.approx(0.6, abs=1e-12)
    # negative or zero charge: never reaches threshold inside the window -> silent (1)
    assert one_neuron([0.2, 0.6], [-0.5, 0.25]) == 1.0
    assert one_neuron([1.0, 1.0], [0.5, 0.25]) == 1.0
    # charge above threshold when the window opens: fires at t_min (saturation, tau 0)
    assert one_neuron([0.0, 0.0], [0.9, 0.6]) == 0.0
    # threshold scaled by 1.2: tau = 1.2 - 0.6 = 0.6 ; stop at 0.3: silent
    assert one_neuron([0.2, 0.6], [0.5, 0.25], 0.1, threshold_scale=1.2) == pytest.approx(0.6, abs=1e-12)
    assert one_neuron([0.2, 0.6], [0.5, 0.25], 0.1, stop=0.3) == 1.0
    assert one_neuron([0.2, 0.6], [0.5, 0.25], 0.1, stop=0.5) == pytest.approx(0.4, abs=1e-12)


def test_single_neuron_stepped_by_hand():
    # 8 steps; inputs at steps 1 and 5 -> charge = 0.5*7/8 + 0.25*3/8 + 0.1 = 0.63125
    # the ramp adds 1/8 per step; fire when charge + (m+1)/8 >= 1 + 1/16: m = 2.45 -> m = 3
    for sim in ("analytic", "stepped"):
        assert one_neuron([1 / 8, 5 / 8], [0.5, 0.25], 0.1, time_bits=3, simulator=sim) == 3 / 8
    # charge 0.25 exactly half-way is no tie here: 0.3 -> 8*0.7 - 0.5 = 5.1 -> step 6
    assert one_neuron([0.0], [0.3], time_bits=3, simulator="stepped") == 6 / 8
    # less than half a step of charge rounds to silence: 0.05 -> 8*0.95 - 0.5 = 7.1 -> step 8 = t_max
    assert one_neuron([0.0], [0.05], time_bits=3, simulator="stepped") == 1.0
    assert one_neuron([0.0], [0.07], time_bits=3, simulator="stepped") == 7 / 8


def test_ramp_trace_spikes_once_at_the_crossing_step():
    charge = torch.tensor([0.63125, 1.5, -0.2, 0.3], dtype=torch.float64)
    spikes, membrane = ramp_trace(charge, 8)
    assert spikes.sum(0).tolist() == [1, 1, 0, 1]
    assert torch.argmax(spikes, 0)[[0, 1, 3]].tolist() == [3, 0, 6]
    assert membrane[:, 0].tolist() == pytest.approx([0.63125 + (m + 1) / 8 for m in range(8)])
    assert times_from_trains(spikes).tolist() == [3 / 8, 0.0, 1.0, 6 / 8]
    # the closed form gives the same steps
    assert fire_stepped(charge, 8).tolist() == [3 / 8, 0.0, 1.0, 6 / 8]


def test_input_phase_is_integrated_step_by_step():
    # inputs spike at steps 1 and 5 of 8: currents 0.5 from step 1 on, 0.25 from step 5 on, bias 0.1/8 per step
    trace = synapse_charge_trace(torch.tensor([[1.0, 5.0]], dtype=torch.float64), 8,
                                 torch.tensor([[0.5, 0.25]], dtype=torch.float64),
                                 torch.tensor([0.1], dtype=torch.float64), LINEAR)[:, 0, 0]
    expected, v = [], 0.0
    for k in range(8):
        v += (0.5 * (k >= 1) + 0.25 * (k >= 5) + 0.1) / 8
        expected.append(v)
    assert trace.tolist() == pytest.approx(expected)
    assert trace[-1].item() == pytest.approx(0.63125)


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
def test_one_layer_equals_the_relu_layer_it_maps(kind):
    torch.manual_seed(0)
    if kind == "linear":
        a = torch.relu(torch.randn(16, 20, dtype=torch.float64))
        W, b = torch.randn(7, 20, dtype=torch.float64) * 0.3, torch.randn(7, dtype=torch.float64) * 0.1
        spec = SynapseSpec("linear")
        ann = torch.relu(F.linear(a, W, b))
    else:
        a = torch.relu(torch.randn(4, 3, 6, 6, dtype=torch.float64))
        W, b = torch.randn(5, 3, 3, 3, dtype=torch.float64) * 0.3, torch.randn(5, dtype=torch.float64) * 0.1
        spec = SynapseSpec("conv2d", stride=(1, 1), padding=(1, 1), dilation=(1, 1))
        ann = torch.relu(F.conv2d(a, W, b, padding=1))
    m_in, m_out = float(a.max()), float(ann.max()) * 1.01
    tau_in = 1 - a / m_in  # the encoding of the layer's input (a = 0 -> tau = 1, silent)
    # weights into SNN units: W * M_in / M_out, bias / M_out
    tau = layer_spike_times([(tau_in, W * m_in / m_out, b / m_out, spec)])
    decoded = torch.where(tau < 1, m_out * (1 - tau), torch.zeros_like(tau))
    assert torch.allclose(decoded, ann, rtol=0, atol=1e-12)
    assert ((tau < 1) == (ann > 0)).all()


def test_threshold_scale_and_stop_broadcast_per_neuron_and_sample():
    torch.manual_seed(1)
    tau_in = torch.rand(3, 6, dtype=torch.float64)
    W = torch.randn(4, 6, dtype=torch.float64) * 0.4
    scale = torch.tensor([1.0, 1.1, 0.9, 1.3], dtype=torch.float64)
    stop = torch.tensor([[0.9], [0.5], [1.0]], dtype=torch.float64)
    charge = W @ (1 - tau_in).T
    expected = (scale[:, None] - charge).clamp(min=0).T
    expected = torch.where(expected < stop, expected, torch.ones_like(expected))
    got = layer_spike_times([(tau_in, W, None, LINEAR)], threshold_scale=scale, stop=stop)
    assert torch.allclose(got, expected)
    for bits in (3, 6):
        a = layer_spike_times([(torch.round(tau_in * 2 ** bits) / 2 ** bits, W, None, LINEAR)], time_bits=bits,
                              threshold_scale=scale, stop=stop)
        s = layer_spike_times([(torch.round(tau_in * 2 ** bits) / 2 ** bits, W, None, LINEAR)], time_bits=bits,
                              simulator="stepped", threshold_scale=scale, stop=stop)
        assert torch.equal(a, s)


def test_max_pool_is_the_min_of_spike_times():
    torch.manual_seed(2)
    tau = torch.rand(2, 3, 6, 6)
    tau[tau > 0.8] = 1.0  # some silent neurons
    pooled = apply_time_op(tau, make_op("max_pool2d", kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False))
    expected = tau.unfold(2, 2, 2).unfold(3, 2, 2).amin((-1, -2))
    assert torch.equal(pooled, expected)
    # and it is the time code of the max-pooled values
    values = F.max_pool2d(1 - tau, 2)
    assert torch.allclose(1 - pooled, values)


def test_fire_analytic_gradient_is_the_piecewise_linear_relation():
    charge = torch.tensor([0.3, 1.4, -0.2], requires_grad=True)
    fire_analytic(charge).sum().backward()
    assert charge.grad.tolist() == [-1.0, 0.0, 0.0]
    charge.grad = None
    fire_stepped(charge, 16).sum().backward()
    assert charge.grad.tolist() == [-1.0, 0.0, 0.0]


def test_stepped_simulation_gradients_flow_and_values_match_the_trace():
    torch.manual_seed(3)
    tau_in = torch.round(torch.rand(5, 8) * 16) / 16
    W = (torch.randn(3, 8) * 0.3).requires_grad_()
    tau, counts = simulate_layer_steps([(tau_in, W, None, LINEAR)], 16)
    with torch.no_grad():
        ref, _ = simulate_layer_steps([(tau_in, W, None, LINEAR)], 16)
    assert torch.equal(tau.detach(), ref)
    assert counts.max() <= 1 and torch.equal(counts > 0, ref < 1)
    tau.sum().backward()
    assert W.grad is not None and W.grad.abs().sum() > 0
