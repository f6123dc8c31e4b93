"""Pruned weights stay zero in the forward pass, through fine-tuning and through saving."""
import torch
from torch import nn

import spikec
from spikec.checkpoint import SNNSpec, load_model, save_checkpoint
from spikec.compress import CompressConfig, FinetuneConfig, PruneConfig, QuantConfig, compress_, prune_
from spikec.compress.finetune import finetune
from spikec.compress.masks import get_mask, masks


def test_forward_pass_zeroes_a_masked_weight_that_moved():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    prune_(nn.Sequential(lin), PruneConfig(density=0.5))
    mask = get_mask(lin)
    with torch.no_grad():
        lin.weight[~mask] = 5.0
    x = torch.randn(2, 4)
    out = lin(x)
    assert torch.all(lin.weight[~mask] == 0)
    assert torch.allclose(out, x @ (lin.weight * mask).t() + lin.bias)


def _snn_spec():
    return SNNSpec(arch="mlp", arch_config={"input_shape": [1, 4, 4], "num_classes": 3, "hidden": [12],
                                            "batch_norm": False}, timesteps=3, coding="direct")


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = (x.flatten(1)[:, :3].argmax(1))
    return x, y


def test_pruned_weights_stay_zero_through_finetuning_and_saving(tmp_path):
    torch.manual_seed(0)
    spec = _snn_spec()
    model = spec.build()
    keys = set(model.state_dict())
    prune_(model, PruneConfig(density=0.3))
    pruned = {n: ~m for n, m in masks(model).items()}
    finetune(model, _data(), epochs=2, lr=0.05, batch_size=16, optimizer="adamw")
    modules = dict(model.named_modules())
    for n, off in pruned.items():
        assert torch.all(modules[n].weight[off] == 0)
    assert set(model.state_dict()) == keys  # masks are not extra state-dict entries
    path = save_checkpoint(tmp_path / "c.pt", spec.checkpoint(model))
    loaded, _ = load_model(path)
    lmods = dict(loaded.named_modules())
    for n, off in pruned.items():
        assert torch.all(lmods[n].weight[off] == 0)
        assert torch.equal(lmods[n].weight, modules[n].weight)


def test_compress_lands_on_the_exact_density_and_keeps_masked_weights_zero():
    torch.manual_seed(1)
    model = _snn_spec().build()
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    cfg = CompressConfig(prune=PruneConfig(density=0.2, interval=2), quant=QuantConfig(bits=3), attention=None,
                         finetune=FinetuneConfig(epochs=2, quant_epochs=1, batch_size=16))
    report = compress_(model, cfg, _data())
    ms = masks(model)
    assert sum(int(m.sum()) for m in ms.values()) == round(0.2 * total)
    assert report.mask_density == round(0.2 * total) / total
    modules = dict(model.named_modules())
    for n, m in ms.items():
        assert torch.all(modules[n].weight[~m] == 0)
    assert report.size.density <= report.mask_density
    assert isinstance(model, spikec.SpikingClassifier)


def test_quantization_aware_training_without_pruning_keeps_a_pruned_network_sparse():
    # a network pruned earlier and reloaded without its masks (or converted from a pruned ANN) keeps
    # its zeros through quantization-aware epochs: its zeros become masks
    torch.manual_seed(0)
    spec = _snn_spec()
    pruned = spec.build()
    prune_(pruned, PruneConfig(density=0.3))
    model = spec.build()
    model.load_state_dict(pruned.state_dict())  # weights with zeros, no masks
    assert not masks(model)
    zeros = {n: m.weight.detach() == 0 for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    cfg = CompressConfig(prune=None, quant=QuantConfig(bits=4), attention=None,
                         finetune=FinetuneConfig(epochs=3, lr=0.05, batch_size=16))
    compress_(model, cfg, _data())
    modules = dict(model.named_modules())
    moved = False
    for n, z in zeros.items():
        w = modules[n].weight.detach()
        assert torch.all(w[z] == 0)
        moved |= not torch.equal(w[~z], pruned.get_submodule(n).weight.detach()[~z])
    assert moved  # the kept weights did train
