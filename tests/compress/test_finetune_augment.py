"""Augmentation while fine-tuning a compressed network: chosen by input shape, seeded, really applied."""
import pytest
import torch
from torch import nn

from spikec.compress import FinetuneConfig
from spikec.compress.finetune import augmentation, finetune, input_shape
from spikec.data.augment import CropFlip
from spikec.errors import UsageError


def _images(n=32, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    return x, (x[:, 0, :4, :4].mean((1, 2)) > 0.5).long()


def _net(size=16):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * size * size, 2))


def test_auto_augments_images_only_and_crop_flip_refuses_tiny_inputs():
    assert isinstance(augmentation("auto", _images(size=32)), CropFlip)
    assert augmentation("auto", _images(size=32)).padding == 4  # the CIFAR recipe
    assert augmentation("auto", (torch.rand(4, 1, 8, 8), torch.zeros(4).long())) is None  # digits
    assert augmentation("none", _images(size=32)) is None
    dataset = torch.utils.data.TensorDataset(*_images(size=32))
    assert input_shape(dataset) == (3, 32, 32)
    assert input_shape(torch.utils.data.DataLoader(dataset, batch_size=4)) == (3, 32, 32)
    with pytest.raises(UsageError, match=r"\(1, 8, 8\)"):
        augmentation("crop-flip", (torch.rand(4, 1, 8, 8), torch.zeros(4).long()))
    with pytest.raises(ValueError, match="augment"):
        FinetuneConfig(augment="mixup")


def test_augmented_finetuning_is_seeded_and_differs_from_plain_finetuning():
    data = _images()
    aug = CropFlip(padding=2)

    def tuned(augment, seed=0):
        net = _net()
        finetune(net, data, epochs=2, lr=1e-2, batch_size=8, seed=seed, augment=augment)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    assert torch.equal(tuned(aug), tuned(aug))
    assert not torch.equal(tuned(aug), tuned(None))
    assert not torch.equal(tuned(aug, seed=0), tuned(aug, seed=1))


def test_the_model_sees_the_transformed_batch_drawn_from_the_seeded_generator():
    data = _images(n=8)
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _net()

        def forward(self, x):
            seen.append(x.detach().clone())
            return self.net(x)

    aug = CropFlip(padding=2)
    finetune(Spy(), data, epochs=1, lr=1e-2, batch_size=8, seed=3, augment=aug)
    order = torch.Generator().manual_seed(3)
    perm = torch.randperm(8, generator=order)
    expected = aug(data[0][perm], torch.Generator().manual_seed(4))
    assert torch.equal(seen[0], expected)
