"""Per-layer bit widths, the "auto" sensitivity search, and the quantizer's grid being the PE's cell grid."""
import dataclasses

import pytest
import torch
from torch import nn

from spikec.compress import QuantConfig, quantize_
from spikec.compress.quantize import choose_bits

def test_per_layer_widths_set_each_layers_levels(ttfs_net):
    snn, _ = ttfs_net()
    info = quantize_(snn, QuantConfig(bits=(2, 3, 5)))
    assert [v["bits"] for v in info.values()] == [2, 3, 5]
    for (name, v), b in zip(info.items(), (2, 3, 5)):
        w = dict(snn.named_modules())[name].weight.detach()
        levels = (w / v["scale"].reshape(-1, *([1] * (w.dim() - 1)))).round()
        assert levels.abs().max() <= 2 ** (b - 1) - 1
    with pytest.raises(ValueError, match="3 widths for 2"):
        QuantConfig(bits=(4, 4, 4)).layer_bits(2)


def test_bits_beyond_the_cell_levels_are_refused():
    with pytest.raises(ValueError, match="16 levels holds 15"):
        QuantConfig(bits=(4, 8), cell_levels=16)
    QuantConfig(bits=5, cell_levels=16)
    # two 16-level cells a sign hold 30 levels a side: 6 bits (31 levels) are refused, 5 are not
    with pytest.raises(ValueError, match="2 cells of 16 levels hold 30; at most 5 bits"):
        QuantConfig(bits=6, cell_levels=16, cells_per_weight=2)
    QuantConfig(bits=5, cell_levels=16, cells_per_weight=2)
    # binary cells: one holds 1 level a side (2 bits), four hold 4 (3 bits)
    with pytest.raises(ValueError, match="at most 2 bits"):
        QuantConfig(bits=3, cell_levels=2)
    QuantConfig(bits=3, cell_levels=2, cells_per_weight=4)
    with pytest.raises(ValueError, match="cells_per_weight"):
        QuantConfig(cells_per_weight=0)


@pytest.mark.parametrize("bits", [3, 4, 5, (3, 4, 5)])
def test_quantized_weights_are_the_cell_grid_of_the_pe(bits, ttfs_net):
    from spikec.hardware import mapping
    from spikec.hardware.config import HardwareConfig
    from spikec.hardware.extract import pe_program

    snn, _ = ttfs_net(1)
    quantize_(snn, QuantConfig(bits=bits, cell_levels=16))
    config = HardwareConfig()
    for layer in pe_program(snn).layers:
        grid = mapping.cell_grid(layer.weight, config)
        assert grid.exact, layer.name
        w = layer.weight.to(torch.float64)
        tol = 1e-6 * float(w.abs().max())  # float32 weights: equal up to their own rounding
        assert torch.allclose(grid.levels_of(w) * grid.step.view(-1, 1), w, rtol=0, atol=tol), layer.name


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_auto_bits_gives_a_layer_already_on_a_coarse_grid_the_fewest_bits():
    torch.manual_seed(0)
    net = _Net()
    with torch.no_grad():
        net.a.weight.copy_(torch.randint(-1, 2, (8, 6)).float() * 0.5)  # {-0.5, 0, 0.5}: exact in 2 bits
    x = torch.rand(120, 6)
    y = torch.randint(0, 3, (120,))
    cfg = QuantConfig(bits="auto", auto_bits=(2, 3, 4), auto_tolerance=0.0, auto_samples=60, grid_thresholds=False)
    before = [p.detach().clone() for p in net.parameters()]
    widths = choose_bits(net, cfg, (x, y))
    assert widths[0] == 2 and widths[1] in (2, 3, 4)
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))  # the search restores every weight
    assert choose_bits(net, dataclasses.replace(cfg, auto_tolerance=1e9), (x, y)) == (2, 2)


@pytest.mark.parametrize("cells", [1, 3])
def test_biases_round_to_the_cell_step_of_their_column(cells, ttfs_net):
    """On the cell grid a bias is rounded to the nearest whole number of a step finer than the 4-bit
    weight step, and it is a whole number of its pair's step on the PE (the bias rows realise it
    without a second rounding)."""
    from spikec.compress.layers import synaptic_layers
    from spikec.compress.quantize import WeightQuantizer
    from spikec.hardware import mapping
    from spikec.hardware.config import HardwareConfig
    from spikec.hardware.extract import pe_program

    snn, _ = ttfs_net(2)
    cfg = QuantConfig(bits=4, group="channel", cell_levels=16, cells_per_weight=cells)
    layers = synaptic_layers(snn)
    before = {n: m.bias.detach().clone() for n, m in layers.items()}
    info = quantize_(snn, cfg)
    finer = False
    for name, m in layers.items():
        s = info[name]["scale"]
        levels = (m.weight.detach() / s.view(-1, *[1] * (m.weight.dim() - 1))).round()
        step = WeightQuantizer(cfg).bias_step(s, levels)
        n = m.bias.detach() / step
        assert torch.allclose(n, n.round(), atol=1e-4), name
        assert torch.all((before[name] - m.bias.detach()).abs() <= step / 2 + 1e-6), name  # the nearest step
        assert torch.all(step <= s * (1 + 1e-6))
        finer |= bool((step < s * 0.99).any())
    assert finer  # 3 cells refine 7 levels a side by 6, one cell (15 levels) by 2
    for layer in pe_program(snn).layers:  # the PE's own step divides it (pooling folded in makes it finer)
        pe_step = mapping.cell_grid(layer.weight, HardwareConfig(cells_per_weight=cells)).step
        n = layer.bias.to(torch.float64) / pe_step
        assert torch.allclose(n, n.round(), atol=1e-4), layer.name


def test_bias_step_of_hand_made_levels():
    from spikec.compress.quantize import WeightQuantizer

    q = WeightQuantizer(QuantConfig(bits=4, cell_levels=16, cells_per_weight=3))
    levels = torch.tensor([[7.0, -3.0, 0.0], [2.0, -4.0, 6.0], [0.0, 0.0, 0.0], [5.0, 1.0, 0.0]])
    s = torch.tensor([0.1, 0.2, 0.3, 0.4])
    # 45 levels a side. Coarsest exact grids: 0.1, 0.4 (gcd 2), -, 0.4. The strongest column (max 2.0)
    # refines by floor(45 * 0.4 / 2.0) = 9 to full range, a ramp of 1 / (45 * 0.4 / 9) = 0.5 rows; the
    # unrefined grids need 1 / (45 * 0.1) = 0.22 and 1 / 18 rows. So no column refines beyond a 0.5-row
    # ramp: column 0 by floor(0.5 * 45 * 0.1) = 2 (not 6, its full range), column 1 by 9 (not 15);
    # the zero column takes the coarsest step.
    expect = torch.tensor([0.1 / 2, 0.4 / 9, 0.1 / 2, 0.4 / 9])
    assert torch.allclose(q.bias_step(s, levels), expect)
    plain = WeightQuantizer(QuantConfig(bits=4))
    assert torch.equal(plain.bias_step(s, levels), s)


def test_bias_step_of_a_column_too_small_for_its_pair():
    """A column below 1/64 of the layer's largest is not on an exact grid on the PE: its pair's step is
    the clamped full scale over the pair's 45 levels, and its bias rounds to that step."""
    from spikec.compress.quantize import WeightQuantizer

    q = WeightQuantizer(QuantConfig(bits=4, cell_levels=16, cells_per_weight=3))
    levels = torch.tensor([[7.0, -3.0], [7.0, 1.0]])
    s = torch.tensor([1.0, 1e-3])  # column 1: max |w| 0.007 < 7 / 64
    expect = torch.tensor([1.0 / 6, 7.0 / 64 / 45])
    assert torch.allclose(q.bias_step(s, levels), expect)
