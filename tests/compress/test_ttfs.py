"""Compression of a converted TTFS network: its synapses are pruned, quantized and counted too."""
import pytest
import torch
import torch.nn.functional as F

from spikec.compress import CompressConfig, FinetuneConfig, PruneConfig, QuantConfig, compress_, prune_, quantize_
from spikec.compress.masks import get_mask
from spikec.compress.metrics import activity

def _synapses(snn):
    return {n: m for n, m in snn.named_modules() if n.endswith(".synapses.0")}


def test_masks_hold_in_the_forward_pass_of_a_ttfs_network(ttfs_net):
    snn, x = ttfs_net()
    prune_(snn, PruneConfig(density=0.3))
    syn = _synapses(snn)
    first = syn["ops.features_0.synapses.0"]
    mask = get_mask(first)
    with torch.no_grad():
        first.weight[~mask] = 5.0
    snn(x)
    assert torch.all(first.weight[~mask] == 0)  # the owning layer's hook re-applied the mask


def test_quantized_ttfs_weights_sit_on_a_grid_that_divides_the_threshold(ttfs_net):
    snn, _ = ttfs_net(1)
    info = quantize_(snn, QuantConfig(bits=3))
    for name, m in _synapses(snn).items():
        w = m.weight.detach()
        assert w.unique().numel() <= 2 ** 3
        if "readout" not in name:  # spiking layers have threshold 1
            assert info[name]["on_grid"]
            n = 1.0 / info[name]["scale"]
            assert torch.allclose(n, n.round(), atol=1e-4)


def test_ttfs_synaptic_operations_are_input_spikes_times_fan_out(ttfs_net):
    snn, x = ttfs_net(2)
    prune_(snn, PruneConfig(density=0.5))
    y = torch.zeros(len(x), dtype=torch.long)
    a = activity(snn, (x, y))
    first = _synapses(snn)["ops.features_0.synapses.0"]
    events = (snn.encoder(x, snn.simulation)[0] < 1).float()  # input spikes (too small a value rounds to silence)
    expected = F.conv2d(events, (first.weight != 0).float(), padding=1).sum() / len(x)
    assert a.layers["ops.features_0.synapses.0"]["sops_per_inference"] == pytest.approx(float(expected))
    assert a.snn_macs_per_inference == 0  # every layer is fed spikes


def test_compress_a_ttfs_network_end_to_end(ttfs_net):
    snn, x = ttfs_net(3)
    y = (x.flatten(1)[:, :3].argmax(1))
    total = sum(m.weight.numel() for m in _synapses(snn).values())
    cfg = CompressConfig(prune=PruneConfig(density=0.25, interval=1), quant=QuantConfig(bits=4),
                         finetune=FinetuneConfig(epochs=1, quant_epochs=1, batch_size=8))
    report = compress_(snn, cfg, (x, y))
    assert sum(int(get_mask(m).sum()) for m in _synapses(snn).values()) == round(0.25 * total)
    assert snn.simulation.simulator == "analytic"  # its own simulator is restored
    for m in _synapses(snn).values():
        assert torch.all(m.weight[~get_mask(m)] == 0)
    assert report.attention_layers == ["ops." + n for n, _ in snn.spiking_layers()]  # the hidden TTFS layers


@pytest.mark.parametrize("quant", [None, QuantConfig(bits=4)])
def test_ttfs_finetuning_through_the_stepped_and_the_analytic_simulator_learns_the_same_weights(quant, ttfs_net):
    """The analytic simulator at the network's time resolution is the closed form of the stepped one:
    the same spike times forward and the same relation backward, so the same training run."""
    results = []
    for simulator in ("stepped", "analytic"):
        snn, x = ttfs_net(4)
        y = x.flatten(1)[:, :3].argmax(1)
        cfg = CompressConfig(prune=PruneConfig(density=0.4, interval=1), quant=quant,
                             finetune=FinetuneConfig(epochs=2, quant_epochs=1, batch_size=8, ttfs_simulator=simulator))
        compress_(snn, cfg, (x, y))
        assert snn.simulation.simulator == "analytic"
        results.append({n: m.weight.detach().clone() for n, m in _synapses(snn).items()})
    stepped, analytic = results
    start = {n: m.weight.detach() for n, m in _synapses(ttfs_net(4)[0]).items()}
    for name in stepped:
        torch.testing.assert_close(analytic[name], stepped[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(analytic[name], start[name])  # training did move the weights


def test_auto_recalibration_runs_in_rate_snns_and_not_in_ttfs_networks(monkeypatch, ttfs_net):
    import spikec.compress.api as api

    calls = []
    real = api.Recalibrator

    class Spy(real):
        def __call__(self, student, names):
            calls.append(type(student).__name__)
            return super().__call__(student, names)

    monkeypatch.setattr(api, "Recalibrator", Spy)
    snn, x = ttfs_net(5)
    y = x.flatten(1)[:, :3].argmax(1)
    ft = FinetuneConfig(epochs=1, batch_size=8)
    compress_(snn, CompressConfig(prune=PruneConfig(density=0.5, interval=1), quant=None, finetune=ft), (x, y))
    assert calls == []
    compress_(snn, CompressConfig(prune=PruneConfig(density=0.5, interval=1, recalibrate=True), quant=None,
                                  finetune=ft), (x, y))
    assert calls and set(calls) == {"TTFSNetwork"}

    from spikec.conversion.rate import convert_rate
    from spikec.models import build_model

    torch.manual_seed(6)
    ann = build_model("vgg", (1, 8, 8), 3, layers=[4, "M", 6, "M"], hidden=(), batch_norm=False)
    rate = convert_rate(ann, x, timesteps=4)
    calls.clear()
    compress_(rate, CompressConfig(prune=PruneConfig(density=0.5, interval=1), quant=None, finetune=ft), (x, y))
    assert calls and "TTFSNetwork" not in calls


def test_a_loaded_ttfs_network_lists_its_layers_in_forward_order(tmp_path):
    """HDF5 lists groups alphabetically ("classifier_1" before "features_0"); skip_first must still
    mean the first convolution and per-layer bit lists must still follow the forward pass."""
    from spikec.checkpoint import load_model, save_checkpoint
    from spikec.compress.config import LayerSelection
    from spikec.compress.layers import select_layers, synaptic_layers
    from spikec.conversion.ttfs import convert_ttfs, ttfs_checkpoint
    from spikec.models import build_model

    torch.manual_seed(0)
    ann = build_model("vgg", (1, 8, 8), 3, layers=[4, "M"], hidden=(8,), batch_norm=False)
    snn = convert_ttfs(ann, torch.rand(16, 1, 8, 8), time_bits=3)
    path = save_checkpoint(tmp_path / "t.h5", ttfs_checkpoint(snn, ann))
    loaded, _ = load_model(path)
    names = list(synaptic_layers(loaded))
    assert names == list(synaptic_layers(snn))
    assert names[0].startswith("ops.features_") and names[-1].startswith("ops.readout")
    kept = select_layers(loaded, LayerSelection(skip_first=True))
    assert names[0] not in kept and len(kept) == len(names) - 1
