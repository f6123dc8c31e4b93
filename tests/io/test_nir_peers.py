"""NIR interop with norse and snntorch: equal spikes in both directions, on seeded random inputs.

spikec -> NIR file -> norse / snntorch, and graphs exported by norse / snntorch -> spikec. Each
comparison checks, for every spiking layer in order, the spikes of each sample (spikec's through
``spikec.record``) and each neuron's first spike time, plus the network output at every step.
Peers apply NIR ``Flatten`` dimensions to the tensor as given, so conv graphs run one unbatched
sample at a time there (see docs/nir.md).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

import nir
import pytest
import torch
from torch import nn

import spikec
from spikec.io import from_nir, to_nir, write_nir

norse_torch = pytest.importorskip("norse.torch")
snn = pytest.importorskip("snntorch")
from norse.torch.functional.iaf import IAFParameters  # noqa: E402
from norse.torch.functional.lif_box import LIFBoxParameters  # noqa: E402
from norse.torch.module.iaf import IAFCell  # noqa: E402
from norse.torch.module.lif_box import LIFBoxCell  # noqa: E402
from snntorch.export_nir import export_to_nir  # noqa: E402
from snntorch.import_nir import import_from_nir  # noqa: E402

T = 24


@pytest.fixture(autouse=True)
def _quiet_peers():
    """norse logs and snntorch prints on import; nirtorch warns of deprecations."""
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    logging.disable(logging.NOTSET)


def _quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


# ---- running each library and summarising its spikes the same way ----------------------------

def _summary(spikes: torch.Tensor):
    """``(spikes per sample [B], first spike step per neuron [B, N])`` of a train ``[T, B, ...]``."""
    s = spikes.detach().float().reshape(spikes.shape[0], spikes.shape[1], -1)
    fired = s > 0
    steps = torch.arange(s.shape[0], dtype=torch.float32).view(-1, 1, 1).expand_as(s)
    first = torch.where(fired, steps, torch.full_like(s, float("inf"))).amin(0)
    return s.sum((0, 2)), first


def run_spikec(net: nn.Module, x: torch.Tensor):
    spikec.reset(net)
    with spikec.record(net) as rec:
        out = spikec.MultiStep(net)(x)
    layers = [(r.sample_spikes, r.first_spike_times) for r in rec.layers.values()]
    return out.detach(), layers


def _run_steps(model, x, neuron_types, reset):
    """Step a peer model over ``x [T, B, ...]``; returns (output [T, B, ...], spikes per neuron layer)."""
    trains: dict[int, list] = {}
    order: list[int] = []

    def hook(mod, inputs, output):
        out = output[0] if isinstance(output, tuple) else output  # norse cells and snntorch output=True: (spikes, state)
        if id(mod) not in trains:
            trains[id(mod)] = []
            order.append(id(mod))
        trains[id(mod)].append(out.detach())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, neuron_types)]
    reset(model)
    state, outs = None, []
    try:
        with torch.no_grad():
            for t in range(x.shape[0]):
                out, state = model(x[t], state)
                outs.append(out.detach())
    finally:
        for h in handles:
            h.remove()
    return torch.stack(outs), [torch.stack(trains[k]) for k in order]


def run_peer(model, x, kind: str, batched: bool):
    neuron_types = (IAFCell, LIFBoxCell) if kind == "norse" else (snn.SpikingNeuron,)

    def reset(m):
        for mod in m.modules():
            if isinstance(mod, snn.SpikingNeuron):
                mod.reset_mem()

    if batched:
        out, trains = _run_steps(model, x, neuron_types, reset)
    else:  # one sample at a time, without a batch dimension
        runs = [_run_steps(model, x[:, b], neuron_types, reset) for b in range(x.shape[1])]
        out = torch.stack([r[0] for r in runs], 1)
        trains = [torch.stack([r[1][i] for r in runs], 1) for i in range(len(runs[0][1]))]
    return out, [_summary(s) for s in trains]


def assert_same_spikes(ours, theirs):
    out_a, layers_a = ours
    out_b, layers_b = theirs
    assert len(layers_a) == len(layers_b) > 0
    for i, ((count_a, first_a), (count_b, first_b)) in enumerate(zip(layers_a, layers_b)):
        assert count_a.sum() > 0, f"layer {i} is silent: the test input does not exercise it"
        assert torch.equal(count_a, count_b.to(count_a.dtype)), f"layer {i}: spikes per sample differ"
        assert torch.equal(first_a, first_b), f"layer {i}: first spike times differ"
    assert out_a.shape == out_b.shape
    torch.testing.assert_close(out_a, out_b.to(out_a.dtype), rtol=1e-5, atol=1e-5)


def rate_input(shape, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, *shape, generator=g) < p).float()


def seeded(seed, build):
    torch.manual_seed(seed)
    return build()


# ---- spikec networks ---------------------------------------------------------------------------

def mlp_if_lif():
    """Linear+IF, Linear+LIF; spiking output."""
    return nn.Sequential(
        nn.Linear(12, 16), spikec.IF(threshold=0.6, reset="zero"),
        nn.Linear(16, 6), spikec.LIF(beta=0.85, threshold=0.3, reset="zero"),
    )


def mlp_analog_output():
    """LIF then IF hidden layers and a non-spiking Linear output (the converted-SNN shape)."""
    return nn.Sequential(
        nn.Linear(12, 20), spikec.LIF(beta=0.7, threshold=0.4, reset="zero"),
        nn.Linear(20, 10, bias=False), spikec.IF(threshold=0.5, reset="zero"),
        nn.Linear(10, 4),
    )


def mlp_neuron_thresholds():
    """One threshold per neuron (norse takes them; snntorch's importer asserts they are equal)."""
    return nn.Sequential(
        nn.Linear(12, 20), spikec.LIF(beta=0.7, threshold=torch.linspace(0.2, 0.6, 20), reset="zero"),
        nn.Linear(20, 10), spikec.IF(threshold=torch.linspace(0.3, 0.8, 10), reset="zero"),
    )


def small_cnn():
    """Conv2d+IF, 2x2 AvgPool, Flatten, Linear+LIF."""
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), spikec.IF(threshold=0.8, reset="zero"),
        nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10), spikec.LIF(beta=0.9, threshold=0.25, reset="zero"),
    )
    with torch.no_grad():
        net[0].weight.mul_(1.5)
    return net


def _via_file(graph, tmp_path):
    path = tmp_path / "net.nir"
    write_nir(graph, path)
    return nir.read(path)  # what a user of norse or snntorch would load


@pytest.mark.parametrize(
    "build", [mlp_if_lif, mlp_analog_output, mlp_neuron_thresholds], ids=["if_lif", "analog_output", "neuron_thresholds"]
)
def test_spikec_mlp_runs_in_norse_with_equal_spikes(build, tmp_path):
    net = seeded(1, build)
    x = rate_input((5, 12))
    graph = _via_file(to_nir(net), tmp_path)
    theirs = run_peer(_quiet(norse_torch.from_nir, graph, dt=1e-4), x, "norse", batched=True)
    assert_same_spikes(run_spikec(net, x), theirs)


@pytest.mark.parametrize("build", [mlp_if_lif, mlp_analog_output], ids=["if_lif", "analog_output"])
def test_spikec_mlp_runs_in_snntorch_with_equal_spikes(build, tmp_path):
    net = seeded(1, build)
    x = rate_input((5, 12))
    # snntorch <= 1.0 imports nir.IF as a leaky neuron, so IF layers go as a leak-free LIF
    graph = _via_file(to_nir(net, if_as="LIF"), tmp_path)
    theirs = run_peer(_quiet(import_from_nir, graph), x, "snntorch", batched=True)
    assert_same_spikes(run_spikec(net, x), theirs)


def test_if_as_lif_also_runs_in_norse(tmp_path):
    net = seeded(1, mlp_if_lif)
    x = rate_input((5, 12))
    graph = _via_file(to_nir(net, if_as="LIF"), tmp_path)
    theirs = run_peer(_quiet(norse_torch.from_nir, graph, dt=1e-4), x, "norse", batched=True)
    assert_same_spikes(run_spikec(net, x), theirs)


@pytest.mark.parametrize("kind", ["norse", "snntorch"])
def test_spikec_cnn_runs_in_peers_with_equal_spikes(kind, tmp_path):
    net = seeded(2, small_cnn)
    x = rate_input((3, 1, 8, 8), p=0.6)
    clf = spikec.SpikingClassifier(net, timesteps=T, readout="count")  # exporting the classifier exports its net
    if kind == "norse":
        graph = _via_file(to_nir(clf, (1, 8, 8)), tmp_path)
        model = _quiet(norse_torch.from_nir, graph, dt=1e-4)
    else:
        graph = _via_file(to_nir(clf, (1, 8, 8), if_as="LIF"), tmp_path)
        model = _quiet(import_from_nir, graph)
    assert_same_spikes(run_spikec(net, x), run_peer(model, x, kind, batched=False))


# ---- graphs exported by the peers --------------------------------------------------------------

def _snntorch_mlp():
    # snntorch's exporter needs per-neuron beta/threshold tensors (scalar ones fail NIR's type check)
    return nn.Sequential(
        nn.Linear(12, 16),
        snn.Leaky(beta=torch.full((16,), 0.8), threshold=torch.full((16,), 0.5), reset_mechanism="zero", init_hidden=True),
        nn.Linear(16, 6),
        snn.Leaky(beta=torch.full((6,), 0.9), threshold=torch.full((6,), 0.4), reset_mechanism="zero", init_hidden=True, output=True),
    )


def _snntorch_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        snn.Leaky(beta=torch.full((4, 8, 8), 0.9), threshold=torch.full((4, 8, 8), 0.5), reset_mechanism="zero", init_hidden=True),
        nn.AvgPool2d((2, 2), (2, 2)),
        nn.Flatten(),
        nn.Linear(64, 10),
        snn.Leaky(beta=torch.full((10,), 0.8), threshold=torch.full((10,), 0.2), reset_mechanism="zero", init_hidden=True, output=True),
    )


class _SnnStepper(nn.Module):
    """An snntorch Sequential with init_hidden layers, called like a NIR-imported model: (x, state) -> (out, state)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, state=None):
        out = self.net(x)
        return (out[0] if isinstance(out, tuple) else out), None


@pytest.mark.parametrize("build,shape", [(_snntorch_mlp, (5, 12)), (_snntorch_cnn, (4, 1, 8, 8))], ids=["mlp", "cnn"])
def test_snntorch_exported_graph_imports_with_equal_spikes(build, shape):
    original = seeded(3, build)
    with torch.no_grad():
        original[0].weight.mul_(1.5)
    graph = _quiet(export_to_nir, original, torch.rand(1, *shape[1:]), ignore_dims=[0])
    x = rate_input(shape, p=0.6, seed=4)
    theirs = run_peer(_SnnStepper(original), x, "snntorch", batched=True)
    ours = run_spikec(from_nir(graph), x)  # dt defaults to 1e-4, snntorch's step
    assert_same_spikes(ours, theirs)


def _norse_mlp():
    # norse's to_nir writes tau = dt / tau_mem_inv (norse issue #411), right only for dt = 1
    return norse_torch.SequentialState(
        nn.Linear(12, 16), IAFCell(IAFParameters(v_th=torch.tensor(0.6))),
        nn.Linear(16, 6), LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.tensor(0.2), v_th=torch.tensor(0.3)), dt=1.0),
    )


def _norse_cnn():
    return norse_torch.SequentialState(
        nn.Conv2d(1, 4, 3, padding=1), IAFCell(IAFParameters(v_th=torch.tensor(0.7))),
        nn.Conv2d(4, 3, 3, stride=2), LIFBoxCell(LIFBoxParameters(tau_mem_inv=torch.tensor(0.25), v_th=torch.tensor(0.2)), dt=1.0),
    )


@pytest.mark.parametrize("build,shape", [(_norse_mlp, (5, 12)), (_norse_cnn, (4, 1, 8, 8))], ids=["mlp", "cnn"])
def test_norse_exported_graph_imports_with_equal_spikes(build, shape):
    original = seeded(5, build)
    with torch.no_grad():  # a norse box LIF integrates (dt/tau) x per step; larger weights keep it busy
        original[2].weight.mul_(4.0)
    graph = norse_torch.to_nir(original, torch.rand(1, *shape[1:]), dt=1.0)
    x = rate_input(shape, p=0.6, seed=6)
    theirs = run_peer(original, x, "norse", batched=True)
    ours = run_spikec(from_nir(graph, dt=1.0), x)
    assert_same_spikes(ours, theirs)
    # norse's own import of its graph agrees too
    assert_same_spikes(ours, run_peer(norse_torch.from_nir(graph, dt=1.0), x, "norse", batched=True))


def _tie_net():
    """Weights that make membranes land exactly on the threshold: spikec fires there (v >= thr)."""
    net = nn.Sequential(
        nn.Linear(4, 4, bias=False), spikec.IF(threshold=1.0, reset="zero"),
        nn.Linear(4, 2, bias=False), spikec.IF(threshold=1.0, reset="zero"),
    )
    with torch.no_grad():
        net[0].weight.copy_(0.5 * torch.eye(4))
        net[2].weight.fill_(0.25)
    return net


@pytest.mark.parametrize("kind", ["norse", "snntorch"])
def test_membranes_exactly_at_threshold_fire_in_peers_too(kind, tmp_path):
    net = _tie_net()
    x = torch.ones(8, 2, 4)
    x[:, 1, 2:] = 0  # second sample: half the inputs silent
    if kind == "norse":
        model = _quiet(norse_torch.from_nir, _via_file(to_nir(net), tmp_path), dt=1e-4)
    else:
        model = _quiet(import_from_nir, _via_file(to_nir(net, if_as="LIF"), tmp_path))
    ours = run_spikec(net, x)
    # by hand: layer 1 v = 0.5, 1.0* -> 4 spikes per active neuron (4 active in sample 0, 2 in sample 1);
    # layer 2 gets 4 * 0.25 = 1.0* (sample 0: 4 spikes each) or 2 * 0.25 = 0.5 (sample 1: 0.5, 1.0* -> 2 each)
    assert ours[1][0][0].tolist() == [16, 8] and ours[1][1][0].tolist() == [8, 4]
    assert_same_spikes(ours, run_peer(model, x, kind, batched=True))
