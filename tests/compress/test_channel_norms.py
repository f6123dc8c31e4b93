"""Channel pruning through a batch norm: the removed channels output exactly zero, and the PE leaves them off."""
import torch
from torch import nn

from spikec.compress import CompressConfig, FinetuneConfig, PruneConfig, compress_
from spikec.compress.config import LayerSelection
from spikec.compress.layers import following_norms
from spikec.compress.masks import apply_masks_, silence_channels_
from spikec.compress.prune import apply_prune_masks_


def _vgg_block():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


def test_following_norms_pairs_each_conv_with_its_batch_norm():
    net = _vgg_block()
    norms = following_norms(net)
    assert list(norms) == ["0", "3"] and norms["0"] is net[1] and norms["3"] is net[4]


def test_pruned_channels_output_zero_in_training_and_evaluation():
    net = _vgg_block()
    with torch.no_grad():
        net[1].bias.fill_(0.3)  # a shift that would drive a removed channel
    mask = torch.ones(8, 3, 3, 3, dtype=torch.bool)
    mask[[1, 5]] = False
    apply_prune_masks_(net, {"0": mask}, "channel")
    x = torch.randn(4, 3, 8, 8)
    for mode in (True, False):
        net.train(mode)
        h = net[:3](x)
        assert torch.equal(h[:, [1, 5]], torch.zeros_like(h[:, [1, 5]]))
        assert bool((h[:, [0, 2]] != 0).any())
    # an optimizer step that moves the norm's scale and shift is undone
    with torch.no_grad():
        net[1].weight += 1.0
        net[1].bias += 1.0
    apply_masks_(net)
    assert net[1].weight[[1, 5]].abs().sum() == 0 and net[1].bias[[1, 5]].abs().sum() == 0
    assert abs(float(net[1].bias[0].detach()) - 1.3) < 1e-6


def test_a_regrown_channel_restarts_from_scale_one():
    net = _vgg_block()
    keep = torch.ones(8, dtype=torch.bool)
    keep[2] = False
    silence_channels_(net[1], keep)
    assert float(net[1].weight[2].detach()) == 0.0
    silence_channels_(net[1], torch.ones(8, dtype=torch.bool))
    assert float(net[1].weight[2].detach()) == 1.0 and float(net[1].bias[2].detach()) == 0.0


def test_channel_compression_of_a_batch_norm_network_leaves_neurons_off_the_pe():
    from spikec.conversion.ttfs import convert_ttfs
    from spikec.hardware.extract import pe_program

    net = _vgg_block()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 8, 8, generator=gen)
    y = torch.randint(0, 4, (64,), generator=gen)
    cfg = CompressConfig(prune=PruneConfig(density=0.5, granularity="channel", scope="layer",
                                           layers=LayerSelection(skip_last=True)),
                         finetune=FinetuneConfig(epochs=1, batch_size=16, augment="none"))
    compress_(net, cfg, torch.utils.data.TensorDataset(x, y))
    net.eval()
    dead = [int((net[i].weight.reshape(net[i].weight.shape[0], -1) == 0).all(1).sum()) for i in (0, 3)]
    assert dead == [4, 3]
    snn = convert_ttfs(net, x[:32])
    layers = pe_program(snn).layers
    assert [l.neurons for l in layers] == [4, 3, 4]
    assert [l.map_neurons for l in layers] == [8, 6, 4]


def test_a_restored_channel_compression_keeps_its_batch_norm_silenced():
    from spikec.compress.checkpoint import compression_record, restore_compression_

    net = _vgg_block()
    mask = torch.ones(8, 3, 3, 3, dtype=torch.bool)
    mask[3] = False
    apply_prune_masks_(net, {"0": mask}, "channel")
    record = compression_record(net, CompressConfig(prune=PruneConfig(density=0.9, granularity="channel")))
    fresh = _vgg_block()
    fresh.load_state_dict(net.state_dict())
    restore_compression_(fresh, record)
    with torch.no_grad():
        fresh[1].bias += 0.5  # a training step
    h = fresh[:3].train()(torch.randn(2, 3, 8, 8))
    assert torch.equal(h[:, 3], torch.zeros_like(h[:, 3]))
