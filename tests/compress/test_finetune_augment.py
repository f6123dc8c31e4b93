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


def test_distillation_loss_by_hand_and_its_gradient():
    from spikec.compress.finetune import distillation_loss

    s = torch.tensor([[1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0]])
    # T = 1: KL(q || p) with q = softmax(t), p = softmax(s): sum q (log q - log p)
    q, p = torch.softmax(t, -1), torch.softmax(s.detach(), -1)
    expected = float((q * (q.log() - p.log())).sum())
    loss = distillation_loss(s, t, temperature=1.0)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.allclose(s.grad, p - q, atol=1e-6)  # d KL / d s = softmax(s) - softmax(t)
    assert float(distillation_loss(t, t, 4.0)) == pytest.approx(0.0, abs=1e-7)
    # temperature^2 scaling: at T = 2 the loss is 4 x KL of the halved scores
    q2, p2 = torch.softmax(t / 2, -1), torch.softmax(s.detach() / 2, -1)
    assert float(distillation_loss(s, t, 2.0).detach()) == pytest.approx(4 * float((q2 * (q2.log() - p2.log())).sum()), rel=1e-6)


def test_distillation_pulls_the_student_towards_the_teacher_and_needs_one():
    x, y = _images()
    teacher = _net()
    with torch.no_grad():
        teacher[3].weight.mul_(3.0)
    plain, distilled = _net(), _net()
    finetune(plain, (x, y), epochs=3, lr=1e-2, batch_size=8, seed=0)
    finetune(distilled, (x, y), epochs=3, lr=1e-2, batch_size=8, seed=0, teacher=teacher, distill=1.0)
    with torch.no_grad():
        target = torch.softmax(teacher(x), -1)
        gap = lambda m: float((torch.softmax(m(x), -1) - target).abs().mean())  # noqa: E731
        assert gap(distilled) < gap(plain)
    with pytest.raises(UsageError, match="teacher"):
        finetune(_net(), (x, y), epochs=1, distill=0.5)
    with pytest.raises(UsageError, match="distill"):
        finetune(_net(), (x, y), epochs=1, teacher=teacher, distill=2.0)
