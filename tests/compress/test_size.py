"""Model size counts the index or mask overhead of every layer, in its cheapest real format."""
import copy

import torch
from torch import nn

from spikec.compress.size import layer_size, model_size, relative_index_entries


def test_relative_index_entries_by_hand():
    mask = torch.zeros(30, dtype=torch.bool)
    mask[[0, 3, 20]] = True
    # gaps 1, 3, 17 with 2-bit gaps (up to 4): 1 + 1 + ceil(17 / 4) = 7 entries (4 of them fillers)
    assert relative_index_entries(mask, 2) == 7
    assert relative_index_entries(mask, 5) == 3


def test_layer_size_picks_the_cheapest_format():
    dense = torch.ones(10, 10)
    s = layer_size(dense, bits=4)
    assert s.encoding == "dense" and s.index_bits == 0 and s.value_bits == 400
    w = torch.zeros(10, 10)
    w[0, 0] = w[9, 9] = 1.0
    s = layer_size(w, bits=4)
    # bitmap: 100 + 8; relative with r=7 (gap up to 128): 2 entries x (4 + 7) = 22 -> relative wins
    assert s.nonzero == 2 and s.total_bits == 22
    conv = torch.zeros(4, 4, 3, 3)
    conv[1, 2] = 1.0
    conv[3, 0] = 1.0
    s = layer_size(conv, bits=4)
    # kernel bitmap: 16 bits + 2 kernels x 9 values x 4 bits = 88; element formats cost more
    assert s.encoding.startswith("kernel") and s.total_bits <= 88


def test_row_formats_by_hand():
    conv = torch.zeros(8, 8, 3, 3)
    conv[0, 0, 0] = 1.0   # row 0
    conv[7, 7, 2] = -1.0  # row 191 (the last)
    s = layer_size(conv, bits=4)
    # row-relative with r = 8 (gaps up to 256): 2 rows x (8 + 3 x 4) = 40 bits (r = 7 needs a filler:
    # 3 x 19 = 57); a row bitmap costs 192 + 24, a kernel bitmap 64 + 24, single weights 6 x (10 + 4)
    assert s.encoding == "row-relative-8" and s.total_bits == 40
    conv = torch.zeros(8, 8, 3, 3)
    conv[:, :, 1, :] = 1.0  # every middle row: 64 of 192 rows, a third of the weights
    s = layer_size(conv, bits=4)
    # row bitmap: 192 + 64 x 3 x 4 = 960; relative-2 (gaps of 3): 64 x (2 + 12) = 896; a kernel
    # bitmap 64 + 576 x 4 = 2368; single weights at best 192 x (2 + 4) = 1152 (gaps 1, 1, 7)
    assert s.encoding == "row-relative-2" and s.total_bits == 896


def test_model_size_and_ratio_count_biases_and_scales():
    net = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, :2] = 1.0
    net[0].register_buffer("weight_scale", torch.ones(1), persistent=False)
    net[0].__dict__["_spikec_weight_bits"] = 4
    report = model_size(net)
    assert report.dense_bits == 32 * (32 + 4 + 8)
    first = report.layers["0"]
    assert first.total_bits == first.index_bits + first.value_bits + 32 * (1 + 4)
    second = report.layers["1"]  # dense float weights, no bias: stored as they are
    assert second.encoding == "dense" and second.total_bits == 32 * 8
    assert report.ratio == report.dense_bits / report.compressed_bits


def test_biases_on_their_grid_are_stored_as_integers_by_hand():
    from spikec.compress.size import bias_bits

    step = torch.tensor([0.5, 0.25])
    assert bias_bits(torch.tensor([3.5, -0.75]), step) == 4  # 7 and -3: |7| needs 3 bits plus a sign
    assert bias_bits(torch.tensor([0.0, 0.0]), step) == 1
    assert bias_bits(torch.tensor([3.6, -0.75]), step) == 32  # 7.2 steps: off the grid, a float
    assert bias_bits(torch.tensor([3.5, -0.75]), None) == 32  # no grid recorded
    net = nn.Sequential(nn.Linear(8, 2))
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([3.5, -0.75]))
    net[0].register_buffer("bias_step", step, persistent=False)
    layer = model_size(net).layers["0"]
    assert layer.bias_bits == 4 and layer.total_bits == layer.index_bits + layer.value_bits + 2 * 4
    report = model_size(net)  # the float-side ratio charges the two biases 32 bits each
    assert report.ratio_float_side == report.dense_bits / (layer.index_bits + layer.value_bits + 2 * 32)


def test_frozen_biases_take_the_width_of_their_grid_and_survive_the_checkpoint_record():
    import spikec
    from spikec.compress import QuantConfig, quantize_
    from spikec.compress.checkpoint import compression_record, restore_compression_

    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 6, 3), spikec.IF(threshold=0.9), nn.Flatten(), nn.Linear(24, 5))
    with torch.no_grad():
        net[0].bias.mul_(5.0)
    fresh = copy.deepcopy(net)
    quantize_(net, QuantConfig(bits=4, group="channel", cell_levels=16, cells_per_weight=3))
    sizes = model_size(net).layers
    for name in ("0", "3"):
        m = net[int(name)]
        n = m.bias.detach().double() / m.bias_step.double()
        assert torch.allclose(n, n.round(), atol=1e-6)
        assert sizes[name].bias_bits == int(n.round().abs().max()).bit_length() + 1 < 32
    record = compression_record(net)
    with torch.no_grad():  # the checkpoint's state dict carries the values, the record the grid
        for a, b in zip(fresh.parameters(), net.parameters()):
            a.copy_(b)
    restore_compression_(fresh, record)
    assert model_size(fresh).compressed_bits == model_size(net).compressed_bits == record["compressed_bits"]


def test_scales_that_divide_the_threshold_are_stored_as_whole_numbers_by_hand():
    from spikec.compress.size import scale_bits

    unit = torch.tensor([1.0])
    assert scale_bits(torch.tensor([1 / 3, 1 / 12, 1.0]), unit) == 3 * 4  # n = 3, 12, 1: 12 needs 4 bits
    # one scale off the grid: a flag per scale, the others' n, a float for the odd one
    assert scale_bits(torch.tensor([1 / 3, 0.3, 1.0]), unit) == 3 + 2 * 2 + 32
    assert scale_bits(torch.tensor([0.5, 0.25]), torch.tensor([1.0, 0.5])) == 2 * 2  # per channel: n = 2, 2
    assert scale_bits(torch.tensor([0.5, 0.25]), None) == 64
    # a channel without weights stores no scale: the odd 0.3 of an empty channel costs nothing, flags neither
    live = torch.tensor([True, False, True])
    assert scale_bits(torch.tensor([1 / 3, 0.3, 1.0]), unit, live) == 2 * 2
    assert scale_bits(torch.tensor([0.5, 0.3]), None, torch.tensor([True, False])) == 32


def test_a_pruned_output_channel_drops_its_scale_from_the_count():
    import spikec
    from spikec.compress import QuantConfig, quantize_

    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), spikec.IF(threshold=1.0), nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        net[0].weight[2] = 0.0
    quantize_(net, QuantConfig(bits=4, group="channel"))
    scale = net[0].weight_scale.double()
    live = torch.tensor([True, True, False, True])
    n = torch.round(1.0 / scale[live])
    assert model_size(net).layers["0"].scale_bits == 3 * int(n.max()).bit_length()


def test_a_quantized_spiking_layer_stores_its_scales_as_threshold_divisors():
    import spikec
    from spikec.compress import QuantConfig, quantize_

    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(2, 6, 3), spikec.IF(threshold=0.9), nn.Flatten(), nn.Linear(24, 5))
    info = quantize_(net, QuantConfig(bits=4, group="channel"))
    sizes = model_size(net).layers
    assert info["0"]["on_grid"] and not info["3"]["on_grid"]
    n = torch.round(0.9 / info["0"]["scale"].double())
    assert sizes["0"].scale_bits == 6 * int(n.max()).bit_length() < 6 * 32
    assert sizes["3"].scale_bits == 5 * 32  # the readout drives no neuron: float scales
