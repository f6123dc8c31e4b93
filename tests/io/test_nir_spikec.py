"""spikec <-> NIR without the peers: node parameters by hand, hand-computed traces of imported
graphs, exact round trips through files, and the one-line errors for what NIR cannot express."""
from __future__ import annotations

import os

import nir
import numpy as np
import pytest
import torch
from torch import nn

import spikec
from spikec.io import NIRExportError, NIRImportError, from_nir, read_nir, to_nir, write_nir
from spikec.module import SpikingModule

f32 = np.float32


def below(x):
    return np.nextafter(f32(x), f32(-np.inf))


def run(net, x):
    spikec.reset(net)
    return spikec.MultiStep(net)(x).detach()


def one_line(exc_info):
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


# ---- export: node parameters by hand ------------------------------------------------------------

def test_export_parameters_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(3, 4), spikec.IF(threshold=0.7, reset="zero"),
        nn.Linear(4, 2, bias=False), spikec.LIF(beta=0.8, threshold=0.5, reset="zero"),
    )
    g = to_nir(net, dt=1e-3)
    assert list(g.nodes) == ["input", "0", "1", "2", "3", "output"]
    assert g.edges == [("input", "0"), ("0", "1"), ("1", "2"), ("2", "3"), ("3", "output")]
    assert g.metadata["dt"] == 1e-3
    np.testing.assert_array_equal(g.nodes["0"].weight, net[0].weight.detach().numpy())
    np.testing.assert_array_equal(g.nodes["0"].bias, net[0].bias.detach().numpy())
    np.testing.assert_array_equal(g.nodes["2"].bias, np.zeros(2, f32))  # no bias -> Affine with zero bias
    if_node = g.nodes["1"]
    assert isinstance(if_node, nir.IF) and if_node.v_threshold.shape == (4,)
    # NIR fires at v > t, spikec at v >= thr: t is the float32 just below thr
    assert np.all(if_node.v_threshold == below(0.7)) and np.all(if_node.v_threshold < f32(0.7))
    assert np.all(if_node.r == 1) and np.all(if_node.v_reset == 0)
    lif = g.nodes["3"]
    beta = float(f32(0.8))
    assert isinstance(lif, nir.LIF)
    np.testing.assert_allclose(lif.tau, 1e-3 / (1 - beta), rtol=1e-15)  # tau = dt / (1 - beta)
    np.testing.assert_allclose(lif.v_threshold, (1 - beta) * float(below(0.5)), rtol=1e-15)
    assert np.all(lif.r == 1) and np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0)


def test_avgpool_becomes_sumpool_with_the_scale_folded_into_the_next_layer():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), spikec.IF(reset="zero"), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 4)
    )
    g = to_nir(net, (1, 6, 6))
    pool, flat, fc = g.nodes["2"], g.nodes["3"], g.nodes["4"]
    assert isinstance(pool, nir.SumPool2d)
    assert pool.kernel_size.tolist() == [2, 2] and pool.stride.tolist() == [2, 2] and pool.padding.tolist() == [0, 0]
    assert isinstance(flat, nir.Flatten) and (flat.start_dim, flat.end_dim) == (0, -1)
    np.testing.assert_array_equal(fc.weight, net[4].weight.detach().numpy() / 4)
    assert g.nodes["0"].output_type["output"].tolist() == [2, 6, 6] and fc.input_type["input"].tolist() == [18]


def test_avgpool_scale_into_a_neuron_threshold():
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.AvgPool2d(2), spikec.IF(threshold=0.5, reset="zero"))
    g = to_nir(net, (1, 4, 4))
    assert np.all(g.nodes["2"].v_threshold == below(0.5) * 4)  # sum = 4 * average


# ---- import: hand-computed traces ----------------------------------------------------------------

def _single(neuron: nir.NIRNode) -> nir.NIRGraph:
    return nir.NIRGraph.from_list(nir.Affine(weight=np.ones((1, 1), f32), bias=np.zeros(1, f32)), neuron)


def _train(net, current, steps):
    return run(net, torch.full((steps, 1, 1), current)).flatten().tolist()


def test_imported_lif_trace_by_hand():
    # NIR LIF, dt = 1e-4, tau = 5e-4, r = 2: v <- 0.8 v + 0.2 * 2 * I ; fire at v > 0.2, reset to 0.
    # I = 0.3: v = 0.12, 0.216* | 0.12, 0.216* ... -> spikes at steps 1, 3, 5
    lif = nir.LIF(tau=np.array([5e-4]), r=np.array([2.0]), v_leak=np.zeros(1), v_threshold=np.array([0.2]), v_reset=np.zeros(1))
    net = from_nir(_single(lif), dt=1e-4)
    assert isinstance(net[1], spikec.LIF) and not isinstance(net[1], spikec.IF)
    assert float(net[1].beta) == float(f32(0.8))
    assert float(net[1].threshold) == pytest.approx(0.5)  # 0.2 / (0.2 * 2), in spikec's units
    assert _train(net, 0.3, 6) == [0, 1, 0, 1, 0, 1]


def test_imported_if_trace_and_threshold_tie_by_hand():
    # NIR IF: v <- v + r I, fire at v > 1 (strictly). r = 1, I = 0.5: v = 0.5, 1.0 (no spike: not > 1), 1.5*
    if_node = nir.IF(r=np.ones(1, f32), v_threshold=np.ones(1, f32), v_reset=np.zeros(1, f32))
    net = from_nir(_single(if_node))
    assert isinstance(net[1], spikec.IF)
    assert float(net[1].threshold) == float(np.nextafter(f32(1), f32(2)))
    assert _train(net, 0.5, 6) == [0, 0, 1, 0, 0, 1]
    # r = 2, I = 0.2: v = 0.4, 0.8, 1.2* -> spikes every third step
    if_node = nir.IF(r=np.full(1, 2, f32), v_threshold=np.ones(1, f32), v_reset=np.zeros(1, f32))
    assert _train(from_nir(_single(if_node)), 0.2, 6) == [0, 0, 1, 0, 0, 1]


def test_dt_comes_from_metadata_unless_given():
    net = nn.Sequential(nn.Linear(2, 2), spikec.LIF(beta=0.5, reset="zero"))
    g = to_nir(net, dt=1e-3)
    assert float(from_nir(g)[1].beta) == 0.5
    assert float(from_nir(g, dt=1e-4)[1].beta) == pytest.approx(1 - 1e-4 / 2e-3)
    g.metadata = {}  # a graph from elsewhere: snntorch's step, 1e-4
    assert float(from_nir(g)[1].beta) == pytest.approx(1 - 1e-4 / 2e-3)
    with pytest.raises(NIRImportError, match="not longer than the time step"):
        from_nir(g, dt=5e-3)


# ---- round trips --------------------------------------------------------------------------------

def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(10, 12), spikec.IF(threshold=0.6, reset="zero"),
        nn.Dropout(0.2), nn.Linear(12, 8), spikec.LIF(beta=0.9, threshold=torch.linspace(0.2, 0.5, 8), reset="zero"),
        nn.Identity(), nn.Linear(8, 3),
    )


def _cnn():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), spikec.LIF(beta=0.75, threshold=0.3, reset="zero"),
        nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, stride=2), spikec.IF(threshold=0.4, reset="zero"),
        nn.Flatten(), nn.Linear(6, 5),
    )
    with torch.no_grad():
        net[0].weight.mul_(2)
    return net


@pytest.mark.parametrize("build,shape", [(_mlp, (10,)), (_cnn, (1, 8, 8))], ids=["mlp", "cnn"])
@pytest.mark.parametrize("if_as", ["IF", "LIF"])
def test_round_trip_through_a_file_is_exact(build, shape, if_as, tmp_path):
    net = build().eval()
    path = tmp_path / "net.nir"
    write_nir(to_nir(net, shape, if_as=if_as), path)
    back = from_nir(path)
    ours = [m for m in net.modules() if isinstance(m, SpikingModule)]
    theirs = [m for m in back.modules() if isinstance(m, SpikingModule)]
    assert [type(m) for m in ours] == [type(m) for m in theirs]  # IF stays IF even when written as LIF
    for a, b in zip(ours, theirs):
        assert torch.equal(torch.broadcast_to(a.threshold, b.threshold.shape), b.threshold) or torch.equal(
            a.threshold, torch.broadcast_to(b.threshold, a.threshold.shape)
        )
        assert float(a.beta) == float(b.beta)
    x = (torch.rand(16, 4, *shape, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    out_a, out_b = run(net, x), run(back, x)
    with spikec.record(net) as rec:
        run(net, x)
    assert rec.total_spikes > 0
    assert torch.equal(out_a, out_b)


def test_classifier_exports_its_network_and_coding_metadata(tmp_path):
    clf = spikec.SpikingClassifier(_mlp(), timesteps=12, encoding="rate", readout="membrane").eval()  # dropout off
    path = tmp_path / "clf.nir"
    write_nir(to_nir(clf), path)
    g = read_nir(path)
    assert g.metadata["timesteps"] == 12 and g.metadata["encoding"] == "rate" and g.metadata["readout"] == "membrane"
    back = spikec.SpikingClassifier(from_nir(g), timesteps=12, encoding="direct", readout="membrane")
    clf.encoding = "direct"
    x = torch.rand(5, 10, generator=torch.Generator().manual_seed(2))
    assert torch.equal(clf(x), back(x))


class _Traced(nn.Module):
    """Not a Sequential: exported through torch.fx, with a functional flatten."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.spike = spikec.IF(threshold=0.3, reset="zero")
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.spike(self.conv(x)), 1))


def test_fx_traced_module_with_functional_flatten():
    torch.manual_seed(0)
    net = _Traced()
    g = to_nir(net, (1, 6, 6))
    assert [type(n).__name__ for n in g.nodes.values()] == ["Input", "Conv2d", "IF", "Flatten", "Affine", "Output"]
    x = (torch.rand(8, 2, 1, 6, 6, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    assert torch.equal(run(net, x), run(from_nir(g), x))


def test_learned_threshold_and_leak_export_their_current_values():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), spikec.LIF(beta=0.7, threshold=0.4, reset="zero", learn_beta=True, learn_threshold=True))
    with torch.no_grad():
        net[1].threshold.fill_(0.55)
        net[1].beta_logit.fill_(1.3)
    back = from_nir(to_nir(net))
    assert float(back[1].threshold) == pytest.approx(0.55, rel=1e-7)
    assert float(back[1].beta) == pytest.approx(float(net[1].beta.detach()), rel=1e-7)
    assert not isinstance(back[1].threshold, nn.Parameter)  # learnability is not part of NIR


# ---- what NIR cannot express: one-line errors naming the layer -----------------------------------

class _OtherNeuron(SpikingModule):
    def forward(self, x):
        return (x > 0).float()


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.spike = spikec.IF(reset="zero")

    def forward(self, x):
        return self.spike(self.fc(x) + x)


@pytest.mark.parametrize(
    "net,shape,match",
    [
        (nn.Sequential(nn.Linear(4, 4), spikec.IF()), None, r"layer '1' \(IF\): reset='subtract' \(soft reset\)"),
        (nn.Sequential(nn.Linear(4, 4), spikec.LIF(reset="subtract")), None, r"layer '1' \(LIF\): reset='subtract'"),
        (nn.Sequential(nn.Linear(4, 4), spikec.IF(reset="zero", v_init=0.5)), None, r"layer '1' \(IF\): v_init != 0"),
        (nn.Sequential(nn.Linear(4, 4), _OtherNeuron()), None, r"layer '1' \(_OtherNeuron\): only spikec.IF and spikec.LIF"),
        (nn.Sequential(nn.Linear(4, 4), nn.ReLU()), None, r"layer '1' \(ReLU\) cannot be written as NIR"),
        (nn.Sequential(nn.Linear(4, 16), nn.Unflatten(1, (4, 4))), None, r"layer '1' \(Unflatten\)"),
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2)), (1, 6, 6), r"layer '1' \(MaxPool2d\)"),
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.BatchNorm2d(1)), (1, 6, 6), r"layer '1' \(BatchNorm2d\).*fold_batchnorm"),
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Linear(9, 2)), (1, 6, 6), r"layer '1': AvgPool2d with padding"),
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.AvgPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(4, 2)), (1, 6, 6), r"ceil_mode"),
        (nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")), (1, 6, 6), r"layer '0': padding_mode='reflect'"),
        (nn.Sequential(nn.Linear(4, 4), nn.Flatten(0)), None, r"layer '1': flatten\(start_dim=0\) merges the batch"),
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.AvgPool2d(2)), (1, 6, 6), r"reaches the network output"),
        (nn.Sequential(nn.Conv2d(1, 1, 3), spikec.IF(reset="zero")), None, r"give input_shape"),
        (_Residual(), (4,), r"operation 'add'"),
    ],
    ids=["if_subtract", "lif_subtract", "v_init", "other_neuron", "relu", "unflatten", "maxpool", "batchnorm", "pool_padding", "ceil_mode",
         "padding_mode", "flatten_batch", "pool_to_output", "no_shape", "residual_add"],
)
def test_export_refuses_what_nir_cannot_express(net, shape, match):
    with pytest.raises(NIRExportError, match=match) as info:
        to_nir(net, shape)
    one_line(info)


def _lif(**overrides):
    p = dict(tau=np.full(2, 1e-3), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2))
    p.update(overrides)
    return nir.LIF(**p)


def _affine(n_in=2, n_out=2):
    return nir.Affine(weight=np.ones((n_out, n_in), f32), bias=np.zeros(n_out, f32))


@pytest.mark.parametrize(
    "graph,match",
    [
        (nir.NIRGraph.from_list(_affine(), _lif(v_reset=np.full(2, -0.1))), r"node 'lif' \(LIF\): v_reset != 0"),
        (nir.NIRGraph.from_list(_affine(), _lif(v_leak=np.full(2, 0.1))), r"node 'lif' \(LIF\): v_leak != 0"),
        (nir.NIRGraph.from_list(_affine(), _lif(tau=np.array([1e-3, 2e-3]))), r"tau differs between neurons"),
        (nir.NIRGraph.from_list(_affine(), _lif(tau=np.full(2, 1e-5))), r"not longer than the time step"),
        (
            nir.NIRGraph.from_list(_affine(), nir.CubaLIF(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))),
            r"node 'cubalif' \(CubaLIF\)",
        ),
        (nir.NIRGraph.from_list(_affine(), nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2))), r"node 'li' \(LI\) is not supported"),
        (
            nir.NIRGraph(
                nodes={"input": nir.Input(np.array([2])), "a": _affine(), "lif": _lif(), "rec": _affine(), "output": nir.Output(np.array([2]))},
                edges=[("input", "a"), ("a", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "output")],
                type_check=False,
            ),
            r"node 'lif' has 2 inputs|feeds 2 nodes",
        ),
    ],
    ids=["v_reset", "v_leak", "tau_per_neuron", "tau_below_dt", "cubalif", "li", "recurrent"],
)
def test_import_refuses_what_spikec_cannot_run(graph, match):
    with pytest.raises(NIRImportError, match=match) as info:
        from_nir(graph, dt=1e-4)
    one_line(info)


# ---- files --------------------------------------------------------------------------------------

def test_unreadable_files_give_one_line_errors_naming_the_file(tmp_path):
    missing = tmp_path / "missing.nir"
    with pytest.raises(NIRImportError, match="missing.nir': no such file") as info:
        from_nir(missing)
    one_line(info)
    garbage = tmp_path / "garbage.nir"
    garbage.write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(NIRImportError, match="garbage.nir': not a readable HDF5 file") as info:
        read_nir(garbage)
    one_line(info)
    good = tmp_path / "good.nir"
    write_nir(to_nir(_mlp()), good)
    truncated = tmp_path / "truncated.nir"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(NIRImportError, match="truncated.nir'") as info:
        read_nir(truncated)
    one_line(info)
    import h5py

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(NIRImportError, match="foreign.h5' is an HDF5 file but not a NIR graph") as info:
        read_nir(foreign)
    one_line(info)


def test_write_is_atomic(tmp_path):
    path = tmp_path / "net.nir"
    write_nir(to_nir(_mlp()), path)
    before = path.read_bytes()
    bad = to_nir(_mlp())
    bad.nodes["0"].weight = object()  # nir.write cannot store this
    with pytest.raises(Exception):
        write_nir(bad, path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.nir"]  # and no temporary file is left
    from spikec.errors import SpikecError

    with pytest.raises(SpikecError, match="no_such_dir"):
        write_nir(to_nir(_mlp()), tmp_path / "no_such_dir" / "x.nir")
