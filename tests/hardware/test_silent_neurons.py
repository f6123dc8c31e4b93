"""Silent neurons (no weights, bias not positive) are left off the chip, with the rows that read them."""
import pytest
import torch
from torch import nn

from spikec.conversion.ttfs import convert_ttfs
from spikec.hardware.config import HardwareConfig
from spikec.hardware.evaluate import PEModel
from spikec.hardware.extract import pe_program
from spikec.hardware.simulate import run_program
from spikec.hardware.timing import RunOptions


def _network():
    """conv1 (4 channels: 1 pruned with its bias, 2 without weights but with a positive bias), 2x2 max
    pooling, conv2 (3 channels: 0 reads only conv1's channel 1 and has a negative bias), a readout."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).double()
    with torch.no_grad():
        ann[0].bias.abs_()
        ann[0].weight[1] = 0
        ann[0].bias[1] = 0
        ann[0].weight[2] = 0
        ann[0].bias[2] = 0.5
        ann[3].weight[0] = 0
        ann[3].weight[0, 1] = 1.0
        ann[3].bias[0] = -0.1
        ann[3].bias[1:].abs_()
    calib = torch.rand(64, 1, 8, 8, dtype=torch.float64)
    return convert_ttfs(ann, calib), torch.rand(16, 1, 8, 8, dtype=torch.float64)


def test_silent_channels_and_their_rows_leave_the_program():
    snn, _ = _network()
    conv1, conv2, readout = pe_program(snn).layers
    kept = pe_program(snn, keep_silent=True).layers
    assert conv1.channels.tolist() == [0, 2, 3] and conv1.neurons == 3 and conv1.map_neurons == 4
    assert bool(conv1.silent[1].all()) and not bool(conv1.silent[[0, 2, 3]].any())
    # conv2 reads conv1 through the max pooling: channel 1's 9 taps are gone, and its channel 0, whose
    # only input was that channel, is silent itself
    assert kept[1].rows == 4 * 9 and conv2.rows == 3 * 9
    assert conv2.channels.tolist() == [1, 2]
    # the readout keeps its 5 neurons and drops the 16 rows of conv2's silent channel
    assert readout.channels is None and readout.neurons == 5
    assert kept[2].rows == 48 and readout.rows == 32
    assert kept[0].channels is None and kept[0].neurons == 4


def test_leaving_them_off_changes_no_spike_and_saves_their_neuron_energy_by_hand():
    snn, x = _network()
    cfg = HardwareConfig(power_gating=False, wakeup_on_input=False, tta=False, tile_rows=16, tile_cols=16,
                         cells_per_weight=1)
    opts = RunOptions.from_config(cfg)
    off, on = PEModel.from_snn(snn, cfg), PEModel.from_snn(snn, cfg, keep_silent=True)
    run_off = run_program(off.program, off.ideal(), x, cfg, opts)
    run_on = run_program(on.program, on.ideal(), x, cfg, opts)
    assert torch.equal(run_off.predictions, run_on.predictions)
    for name in run_on.layers:
        a, b = run_off.layers[name], run_on.layers[name]
        assert torch.equal(a.steps, b.steps), name  # silent neurons never fire in either
        # no power gating, no wake-up: every neuron's integrator runs to the layer's stop (S + own window)
        # and its comparator through the own window, so the saving is exactly that, per removed neuron
        layer_off = off.program.layers[[l.name for l in off.program.layers].index(name)]
        removed = (layer_off.map_neurons - layer_off.neurons) * layer_off.positions
        S = cfg.window_steps
        stop = a.stop[0, 0, 0].item() + S
        assert float(b.energy["opamp"].sum() - a.energy["opamp"].sum()) == pytest.approx(
            x.shape[0] * removed * cfg.opamp_power_w * cfg.cycle_s * stop, rel=1e-9, abs=1e-30)
        assert float(b.energy["comparator"].sum() - a.energy["comparator"].sum()) == pytest.approx(
            x.shape[0] * removed * cfg.comparator_energy_j * (stop - S), rel=1e-9, abs=1e-30)
        # the rows of silent sources are never driven: no drives, reads or conduction lost with them
        assert float(a.energy["spikes_in"].sum()) == float(b.energy["spikes_in"].sum())
    tiles_off = sum(xb.tiling.tiles for xb in off.crossbars)
    tiles_on = sum(xb.tiling.tiles for xb in on.crossbars)
    assert tiles_off < tiles_on
