"""The ANN-side route: compress the ANN once, convert it to rate and TTFS SNNs, quantize each on its own scales."""
import copy

import pytest
import torch

from spikec.compress import CompressConfig, FinetuneConfig, PruneConfig, QuantConfig, compress_, compress_via_ann
from spikec.compress.api import compress_converted_
from spikec.compress.layers import synaptic_layers

rate = pytest.importorskip("spikec.conversion.rate")
ttfs = pytest.importorskip("spikec.conversion.ttfs")


def _ann_and_data(seed=0):
    from spikec.models import build_model

    torch.manual_seed(seed)
    ann = build_model("vgg", (1, 8, 8), 3, layers=[6, "M", 8], hidden=(12,), batch_norm=True)
    x = torch.rand(96, 1, 8, 8)
    y = (x[:, 0, :4].mean((1, 2)) * 3).long().clamp(max=2)
    return ann, (x, y)


def _config(group):
    return CompressConfig(prune=PruneConfig(density=0.3, method="magnitude"),
                          quant=QuantConfig(bits=4, group=group), attention=None,
                          finetune=FinetuneConfig(epochs=1, quant_epochs=1, batch_size=32))


def _nonzero_pattern(model):
    return [(l.weight != 0) for l in synaptic_layers(model).values()]


@pytest.mark.parametrize("group", ["layer", "channel"])
def test_one_compressed_ann_serves_rate_and_ttfs_with_its_own_zeros_and_grid(group):
    ann, data = _ann_and_data()
    cfg = _config(group)
    compress_(ann, cfg, data)
    ann.eval()
    zeros = _nonzero_pattern(ann)
    for convert in (lambda a: rate.convert_rate(a, data[0][:32], timesteps=8),
                    lambda a: ttfs.convert_ttfs(a, data[0][:32], time_bits=4)):
        snn = convert(copy.deepcopy(ann))
        report = compress_converted_(snn, cfg)
        assert [torch.equal(a, b) for a, b in zip(zeros, _nonzero_pattern(snn))] == [True] * len(zeros)
        for layer in synaptic_layers(snn).values():
            w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
            rows = w if group == "channel" else w.reshape(1, -1)
            assert max(int(r.unique().numel()) for r in rows) <= 15  # 4 bits: -7..7 on one scale
        assert report.size.density == pytest.approx(sum(int(z.sum()) for z in zeros) / sum(z.numel() for z in zeros))


def test_compress_via_ann_is_compress_then_convert_then_compress_converted():
    ann, data = _ann_and_data(1)
    cfg = _config("channel")
    convert = lambda a: rate.convert_rate(a, data[0][:32], timesteps=8)  # noqa: E731
    snn_a, rep_a = compress_via_ann(copy.deepcopy(ann), cfg, data, convert)
    ann_b = copy.deepcopy(ann)
    compress_(ann_b, cfg, data)
    ann_b.eval()
    snn_b = convert(ann_b)
    rep_b = compress_converted_(snn_b, cfg)
    for a, b in zip(synaptic_layers(snn_a).values(), synaptic_layers(snn_b).values()):
        assert torch.equal(a.weight, b.weight)
    assert rep_a.size.compressed_bits == rep_b.size.compressed_bits


def test_quantization_aware_epochs_on_the_converted_ttfs_network_keep_its_zeros_and_need_data():
    from spikec.errors import UsageError

    ann, data = _ann_and_data(2)
    cfg = _config("channel")
    compress_(ann, cfg, data)
    ann.eval()
    snn = ttfs.convert_ttfs(copy.deepcopy(ann), data[0][:32], time_bits=4)
    with pytest.raises(UsageError, match="training data"):
        compress_converted_(copy.deepcopy(snn), cfg, None, snn_quant_epochs=1)
    zeros = _nonzero_pattern(ann)
    report = compress_converted_(snn, cfg, data, snn_quant_epochs=1)
    assert len(report.history) == 1
    for z, layer in zip(zeros, synaptic_layers(snn).values()):
        assert not bool(((layer.weight != 0) & ~z).any())  # pruned weights stay zero through the epochs
        rows = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        assert max(int(r.unique().numel()) for r in rows) <= 15
