"""Residual networks on the PE: skip rows replayed from the spike-time buffer, checked by hand and against the SNN."""
import math

import pytest
import torch
from torch import nn

from spikec.conversion.ttfs import convert_ttfs
from spikec.hardware.config import HardwareConfig
from spikec.hardware.crossbar import make_chips, program_crossbar
from spikec.hardware.evaluate import PEModel
from spikec.hardware.extract import pe_program
from spikec.hardware.simulate import run_program
from spikec.hardware.timing import RunOptions
from spikec.models import build_model

CFG = HardwareConfig(window_bits=4, tile_rows=128, tile_cols=128)


class _Block(nn.Module):
    """h1 = relu(fc1 x); h2 = relu(fc2 h1); h3 = relu(fc3 h2 + h1): fc3 fires in window 3, h1 in window 1."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3, self.out = nn.Linear(4, 3), nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        h1 = torch.relu(self.fc1(x))
        return self.out(torch.relu(self.fc3(torch.relu(self.fc2(h1))) + h1))


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(1)
    ann = _Block().double()
    return convert_ttfs(ann, torch.rand(64, 4, dtype=torch.float64), time_bits=CFG.window_bits)


def test_skip_source_gets_replayed_rows(block):
    prog = pe_program(block)
    fc3 = next(s for s in prog.steps if s.name.startswith("fc3"))
    layer = fc3.layer
    assert [(g.kind, g.skip, g.rows) for g in layer.groups] == [("linear", False, 3), ("gain", True, 3)]
    assert layer.rows == 6 and layer.skip_rows == 3
    # rows 3..5 read h1 (the second source, after fc2's 3 neurons) through gain * identity
    assert layer.index[0].tolist() == [0, 1, 2, 3, 4, 5]
    gain = float(block.ops[fc3.name].synapses[1].weight.detach())
    assert torch.allclose(layer.weight[:, 3:], gain * torch.eye(3, dtype=torch.float64))


def test_residual_block_by_hand(block):
    """Spike times equal the SNN's on the ideal chip; on the nominal chip the skip rows' crossbar, driver and
    buffer energy is every replayed spike's, summed line by line."""
    model = PEModel.from_snn(block, CFG)
    S = CFG.window_steps
    x = torch.rand(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ideal = run_program(model.program, model.ideal(), x, CFG, RunOptions(tta=False), with_energy=False)
    snn = block.set_simulation("analytic", CFG.window_bits).run(x)
    readout = model.program.layers[-1].name
    for name in ideal.layers:
        if name in snn and name != readout:
            ref = snn[name].detach() * S
            ref = torch.where(ref < S, ref, torch.full_like(ref, math.inf))
            assert torch.equal(ideal.layers[name].steps[0], ref), name
    i = next(j for j, n in enumerate(model.layer_names) if n.startswith("fc3"))
    name = model.layer_names[i]
    xb = model.crossbars[i]
    chip = make_chips(xb, CFG, 1, i)
    run = run_program(model.program, [make_chips(c, CFG, 1, j) for j, c in enumerate(model.crossbars)], x, CFG,
                      RunOptions(power_gating=True, tta=False), keep=True)
    t = run.inputs[name][0]  # [B, 6] steps of fc2's spikes and of h1's replayed spikes
    assert torch.equal(t[:, 3:], run.layers[model.layer_names[0]].steps[0])  # the replayed spikes are h1's
    e = run.layers[name].energy
    g = (chip.g_pos + chip.g_neg)[0, 0]  # [rows, K]
    dt, v2 = CFG.cycle_s, CFG.v_read ** 2
    n_aux = xb.bias_rows + xb.ramp_rows + xb.dup_of.numel()
    m = run.layers[name].steps[0]  # [B, K] firing steps in fc3's window
    for b in range(x.shape[0]):
        inputs = sum((S - float(t[b, r])) * float(g[r].sum()) for r in range(6) if math.isfinite(t[b, r]))
        bias = sum(S * float(g[6 + r].sum()) for r in range(xb.bias_rows))
        ends = [min(S + float(m[b, k]) + 1, 2 * S) for k in range(3)]
        ramp = sum(float(g[6 + xb.bias_rows + r, k]) * (ends[k] - S) for r in range(xb.ramp_rows) for k in range(3))
        dups = sum((S - float(t[b, int(r)])) * float(g[6 + xb.bias_rows + xb.ramp_rows + j].sum())
                   for j, r in enumerate(xb.dup_of) if math.isfinite(t[b, int(r)]))
        assert float(e["crossbar"][0, b]) == pytest.approx(v2 * dt * (inputs + bias + ramp + dups), rel=1e-12, abs=0)
        spikes = int(torch.isfinite(t[b]).sum())
        dup_spikes = sum(1 for r in xb.dup_of if math.isfinite(t[b, int(r)]))
        assert float(e["driver"][0, b]) == pytest.approx(
            CFG.driver_energy_j * (spikes + dup_spikes + xb.bias_rows + xb.ramp_rows), rel=1e-12, abs=0)
        fired = int(torch.isfinite(m[b]).sum())
        assert float(e["spikes_in"][0, b]) == spikes  # skip spikes are read from the buffer like the others
        assert float(e["buffer"][0, b]) == pytest.approx(
            CFG.spike_bits * CFG.buffer_energy_per_bit_j * (spikes + fired), rel=1e-12, abs=0)
    assert n_aux >= 1 + 1  # a bias row and a ramp row at least


def test_small_resnet_maps_and_matches_the_snn_on_the_ideal_chip():
    torch.manual_seed(0)
    ann = build_model("resnet", (3, 8, 8), 10, depth=20, width=0.25).double().eval()
    calib = torch.rand(32, 3, 8, 8, dtype=torch.float64)
    snn = convert_ttfs(ann, calib, time_bits=CFG.window_bits)
    model = PEModel.from_snn(snn, CFG)
    assert sum(l.skip_rows > 0 for l in model.program.layers) >= 6  # every block but the projections' own
    x = torch.rand(8, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    run = run_program(model.program, model.ideal(), x, CFG, RunOptions(tta=False), with_energy=False)
    ref = snn.set_simulation("analytic", CFG.window_bits).run(x)
    S = CFG.window_steps
    for name, lr in run.layers.items():
        if model.program.layers[model.layer_names.index(name)].readout:
            continue
        want = ref[name].detach() * S
        want = torch.where(want < S, want, torch.full_like(want, math.inf))
        same = (lr.steps[0] == want).double().mean()
        assert same >= 0.999, (name, float(same))


def _gain_layer(conv_scale, off_grid=False):
    """A 3-neuron linear layer: 3 weight rows (column k's largest weight ``conv_scale[k]``) and 3 identity rows of gain 1.

    ``off_grid``: each column also holds ``conv_scale[k] / pi``, on no grid of at most 30 levels, so every
    column is scaled to its own largest weight (an exact column would refine only as far as the ramp
    of the layer's other columns allows)."""
    from spikec.hardware.extract import PELayer, RowGroup

    w = torch.diag(torch.tensor(conv_scale, dtype=torch.float64))
    if off_grid:
        w = w + torch.roll(w, 1, dims=1) / math.pi
    weight = torch.cat([w, torch.eye(3, dtype=torch.float64)], dim=1)
    groups = (RowGroup(0, 0, 3, "linear", False), RowGroup(1, 3, 6, "gain", True))
    return PELayer("fc", "linear", weight, None, (6,), (3,), None, False, 1.0, ((3,), (3,)),
                   torch.arange(6).view(1, 6), groups)


def test_identity_copies_follow_their_own_neuron():
    """Column 2's fine step needs many copies of its shortcut row; the other channels need none, and the
    copies realise every gain on the nominal chip."""
    cfg = HardwareConfig(window_bits=4, tile_rows=128, tile_cols=128, cell_levels=16, sigma=0.0)
    layer = _gain_layer([1.0, 1.0, 0.05], off_grid=True)
    xb = program_crossbar(layer, cfg)
    step = xb.grid.step
    assert not bool(xb.grid.on_grid.any())
    need = [math.ceil(1.0 / float(step[k]) / xb.grid.max_level - 1e-12) for k in range(3)]
    assert need[0] == need[1] == 1 and need[2] > 10  # by hand: step_2 = 0.05/15, 300 levels -> 20 rows
    assert need[2] == 20
    assert xb.dup_of.tolist() == [5] * (need[2] - 1)  # only channel 2's row is copied
    chip = make_chips(xb, cfg, 1, 0)
    assert torch.allclose(chip.weight[0, 0, 3:, :], torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_row_budget_caps_ramp_and_copy_rows():
    """max_row_copies coarsens only the fine column: its ramp and shortcut fit in the budget, by hand."""
    base = HardwareConfig(window_bits=4, tile_rows=128, tile_cols=128, cell_levels=16, sigma=0.0)
    layer = _gain_layer([1.0, 0.5, 0.002])
    free = program_crossbar(layer, base)
    capped = program_crossbar(layer, base.replace(max_row_copies=8))
    L1 = free.grid.max_level  # 2 cells x 15 levels = 30
    assert free.ramp_rows > 8 and capped.ramp_rows <= 8
    # by hand: column 2's step is floored at max(1, gain 1) / (30 * 8); columns 0 and 1 keep theirs
    assert float(capped.grid.step[2]) == pytest.approx(1.0 / (L1 * 8))
    assert torch.equal(capped.grid.step[:2], free.grid.step[:2])
    assert not bool(capped.grid.on_grid[2])
    copies = torch.bincount(capped.dup_of, minlength=6)
    assert int(copies.max()) <= 7  # the row itself plus at most 7 copies
    chip = make_chips(capped, base.replace(max_row_copies=8), 1, 0)
    assert torch.allclose(chip.weight[0, 0, 3:, :], torch.eye(3, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="max_row_copies"):
        base.replace(max_row_copies=0)
