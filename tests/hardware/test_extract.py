"""Unrolling TTFS layers into crossbar ops: same charges as the TTFS layers, clear errors otherwise."""
import pytest
import torch
from torch import nn

from spikec.conversion.ttfs import convert_ttfs
from spikec.conversion.ttfs_sim import layer_charge
from spikec.errors import SpikecError
from spikec.hardware.extract import fold_outputs, layer_charge_unrolled, pe_program, stack_sources, unroll_inputs


def test_lenet_layers_fold_pooling_into_kernels(lenet_snn):
    prog = pe_program(lenet_snn)
    kinds = [(l.kind, l.conv.kernel if l.conv else None, l.conv.stride if l.conv else None) for l in prog.layers]
    # conv 3x3; then 2x2 average pooling folded into a 6x6 stride-2 kernel; then dense layers
    assert kinds[0] == ("conv2d", (3, 3), (1, 1))
    assert kinds[1] == ("conv2d", (6, 6), (2, 2))
    assert all(k[0] == "linear" for k in kinds[2:])
    assert prog.layers[-1].readout and not prog.layers[0].readout
    assert prog.layers[1].rows == 4 * 36 and prog.layers[1].positions == 16


def test_unrolled_charge_equals_ttfs_layer(lenet_snn):
    prog = pe_program(lenet_snn)
    gen = torch.Generator().manual_seed(3)
    for step in prog.steps:
        if step.layer is None:
            continue
        layer = step.layer
        module = lenet_snn.ops[step.name]
        taus = [torch.rand(5, *shape, generator=gen, dtype=torch.float64) * 1.2 for shape in layer.source_shapes]
        expected = layer_charge([(t, s.weight, s.bias, s.spec) for t, s in zip(taus, module.synapses)])
        values = [(1 - t).clamp(min=0) for t in taus]
        rows = unroll_inputs(layer, stack_sources(layer, values), 0.0)
        got = fold_outputs(layer, layer_charge_unrolled(layer, rows))
        assert torch.allclose(got, expected.detach(), atol=1e-12), step.name


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 16), nn.Linear(16, 16), nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(h) + h))


def test_skip_connection_maps_onto_extra_rows():
    """fc2(h) + h: the identity term gets its own 16 rows of fc2 (weight gain * I); h fired in the window
    just before fc2's, so these rows are not replayed skip rows."""
    torch.manual_seed(0)
    snn = convert_ttfs(_Skip().double(), torch.rand(32, 1, 8, 8, dtype=torch.float64))
    prog = pe_program(snn)
    fc2 = next(l for l in prog.layers if l.name.startswith("fc2"))
    assert fc2.rows == 32 and fc2.skip_rows == 0
    assert [(g.kind, g.skip, g.rows) for g in fc2.groups] == [("linear", False, 16), ("gain", False, 16)]
    gain = float(snn.ops[fc2.name].synapses[1].weight.detach())
    assert torch.allclose(fc2.weight[:, 16:], gain * torch.eye(16, dtype=torch.float64))
