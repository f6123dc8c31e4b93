"""Batch-norm folding equals the unfolded network in eval mode, for BN before and after the activation."""
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from spikec.conversion.fold import bn_affine, fold_batchnorm
from spikec.conversion.shift_current import InputShiftCurrent
from spikec.models import build_model


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial statistics and affine parameters (negative scales included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
                if m.affine:
                    m.weight.copy_(torch.randn(n, generator=g))
                    m.bias.copy_(torch.randn(n, generator=g))
    return model.double().eval()


def _batchnorms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _check_folded(model: nn.Module, input_shape, expect_shift_current: bool = False):
    x = torch.randn(5, *input_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    folded = fold_batchnorm(model)
    assert isinstance(folded, fx.GraphModule)
    assert not folded.training
    assert _batchnorms(folded) == 0
    assert _batchnorms(model) > 0, "the original model must be left unchanged"
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-12, atol=1e-12)
    shifts = [m for m in folded.modules() if isinstance(m, InputShiftCurrent)]
    assert bool(shifts) == expect_shift_current
    return folded


class ConvBNReLU(nn.Module):
    """BN before the activation, with and without conv bias."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 6, 3, bias=False), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 6 * 6, 3)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.flatten(1))


class ConvReLUBN(nn.Module):
    """BN after the activation, feeding an unpadded conv, a zero-padded conv and (after flatten) a linear."""

    def __init__(self, padding: int):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 6, 3, padding=padding), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * (4 + 2 * padding) ** 2, 3)

    def forward(self, x):
        x = self.b1(F.relu(self.c1(x)))
        x = self.b2(F.relu(self.c2(x)))
        return self.fc(torch.flatten(x, 1))


def test_bn_before_relu_folds_into_the_preceding_layer():
    _check_folded(_randomise(ConvBNReLU()), (1, 8, 8))


@pytest.mark.parametrize("padding", [0, 1])
def test_bn_after_relu_folds_into_the_next_layer(padding):
    _check_folded(_randomise(ConvReLUBN(padding)), (1, 6, 6), expect_shift_current=padding > 0)


def test_bn_on_the_input_and_bn1d_after_relu_in_an_mlp():
    model = nn.Sequential(
        nn.BatchNorm1d(10), nn.Linear(10, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3)
    )
    _check_folded(_randomise(model), (10,))


def test_bn_after_relu_through_pooling_to_a_grouped_conv():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2),
    )
    _check_folded(_randomise(model), (2, 6, 6))


@pytest.mark.parametrize("name,cfg", [
    ("vgg", dict(width=0.125, depth=11)),
    ("resnet", dict(depth=8)),
    ("lenet", dict(batch_norm=True, pool="max")),
    ("mlp", dict(batch_norm=True)),
])
def test_models_with_batch_norm_fold_exactly(name, cfg):
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 10, **cfg)
    _check_folded(_randomise(model), (1, 8, 8))


def test_bn_affine_is_the_eval_mode_map():
    bn = _randomise(nn.BatchNorm1d(5))
    a, c = bn_affine(bn)
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(bn(x), a * x + c)


def test_bn_that_cannot_fold_stays_in_the_graph():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.BatchNorm1d(4), nn.Sigmoid())
    folded = fold_batchnorm(_randomise(model))
    assert _batchnorms(folded) == 1
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x))
