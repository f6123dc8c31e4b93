"""A network whose weights sit on the cell grid runs on the nominal chip exactly as on the ideal one;
sample subsets are seeded stratified draws; unmappable layers fail in one line naming them."""
import copy

import pytest
import torch
from torch import nn

from spikec.conversion.ttfs import convert_ttfs
from spikec.errors import SpikecError
from spikec.hardware.config import HardwareConfig
from spikec.hardware.evaluate import PEModel
from spikec.hardware.extract import pe_program
from spikec.hardware.simulate import run_program
from spikec.hardware.study import calibration_inputs
from spikec.hardware.timing import RunOptions


def _snap_to_4bit_grid(snn):
    """Every synapse weight to q * s_k (|q| <= 7, one scale per output channel), biases to multiples of s_k."""
    snn = copy.deepcopy(snn)
    with torch.no_grad():
        for m in snn.ops.values():
            for syn in getattr(m, "synapses", []):
                w = syn.weight
                if w.dim() < 2:
                    continue
                s = w.reshape(w.shape[0], -1).abs().amax(1).clamp(min=1e-12) / 7
                view = (-1,) + (1,) * (w.dim() - 1)
                w.copy_(torch.round(w / s.view(view)) * s.view(view))
                if syn.bias is not None:
                    syn.bias.copy_(torch.round(syn.bias / s) * s)
    return snn


@pytest.mark.parametrize("cells", [1, 2])
def test_nominal_chip_equals_ideal_on_the_cell_grid(lenet_snn, digits, cells):
    cfg = HardwareConfig(cells_per_weight=cells)
    snn = _snap_to_4bit_grid(lenet_snn)
    model = PEModel.from_snn(snn, cfg)
    assert all(xb.grid.exact for xb in model.crossbars)
    x = digits[1].tensors[0][:64].double()
    opts = RunOptions(tta=False)
    nominal = run_program(model.program, model.nominal(), x, cfg, opts, with_energy=False)
    ideal = run_program(model.program, model.ideal(), x, cfg, opts, with_energy=False)
    for name in ideal.layers:
        assert torch.equal(nominal.layers[name].steps, ideal.layers[name].steps), name
    assert torch.equal(nominal.predictions, ideal.predictions)
    # off the grid (the trained float weights) the nominal chip does round: the check can fail
    rounded = PEModel.from_snn(lenet_snn, cfg)
    assert not any(xb.grid.exact for xb in rounded.crossbars)


def test_calibration_reads_are_a_seeded_stratified_draw():
    x = torch.arange(100, dtype=torch.float64).view(100, 1)
    y = torch.arange(100) // 10  # sorted by class, as an image folder is
    a = calibration_inputs(x, y, 20, seed=0)
    assert torch.equal(a, calibration_inputs(x, y, 20, seed=0))
    classes = (a.view(-1) // 10).long()
    assert torch.bincount(classes, minlength=10).tolist() == [2] * 10  # not the first 20 (classes 0 and 1)
    assert not torch.equal(a, calibration_inputs(x, y, 20, seed=1))


class _Conv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 2, 3), nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_unmappable_layer_is_one_line_naming_it():
    torch.manual_seed(0)
    snn = convert_ttfs(_Conv1d().double(), torch.rand(16, 1, 8, dtype=torch.float64))
    with pytest.raises(SpikecError) as err:
        pe_program(snn)
    msg = str(err.value)
    assert "\n" not in msg and "'conv'" in msg
