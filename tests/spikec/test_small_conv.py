"""Convolutions over tiny maps as dense products: equal to F.conv2d, forward and backward."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikec.kernels import small_conv
from spikec.kernels.small_conv import SmallMapConv2d, dense_conv2d, small_map_convolutions

GEOMETRIES = [  # (in, out, H, W, kernel, stride, padding, dilation, bias)
    (5, 7, 1, 1, 3, 1, 1, 1, True),
    (5, 7, 2, 2, 3, 1, 1, 1, True),
    (4, 3, 2, 1, 3, 1, 1, 1, False),
    (3, 6, 2, 2, 3, 2, 1, 1, True),
    (3, 2, 2, 2, 1, 1, 0, 1, True),
    (3, 2, 2, 2, 5, 1, 2, 1, True),
    (3, 2, 2, 2, 3, 1, 2, 2, True),
    (2, 4, 3, 3, 2, 1, 0, 1, True),
]


@pytest.mark.parametrize("cin,cout,h,w,k,stride,pad,dil,bias", GEOMETRIES)
def test_dense_product_equals_the_convolution_and_its_gradients(cin, cout, h, w, k, stride, pad, dil, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, cin, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(cout, cin, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    args = ((stride, stride), (pad, pad), (dil, dil))
    ref = F.conv2d(x, weight, b, *args)
    out = dense_conv2d(x, weight, b, *args)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    inputs = [x, weight] + ([b] if bias else [])
    want = torch.autograd.grad(ref, inputs, grad)
    got = torch.autograd.grad(out, inputs, grad)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_one_pixel_map_reads_only_the_centre_tap():
    # a padded 3x3 kernel over a 1x1 map: y = b + sum_i W[:, i, 1, 1] x_i, worked by hand
    weight = torch.zeros(2, 2, 3, 3)
    weight[0, 0, 1, 1], weight[0, 1, 1, 1], weight[1, 1, 1, 1] = 2.0, -1.0, 3.0
    weight[0, 0, 0, 0] = 100.0  # reads padding only
    x = torch.tensor([[[[1.5]], [[4.0]]]])
    out = dense_conv2d(x, weight, torch.tensor([0.5, -1.0]), (1, 1), (1, 1), (1, 1))
    assert out.flatten().tolist() == [0.5 + 3.0 - 4.0, -1.0 + 12.0]


def test_layers_use_the_dense_product_only_on_small_maps(monkeypatch):
    calls = []
    real = small_conv.dense_conv2d
    monkeypatch.setattr(small_conv, "dense_conv2d", lambda *a: calls.append(a[0].shape) or real(*a))
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with small_map_convolutions(conv):
        for size in (1, 2, 4):
            x = torch.randn(2, 3, size, size)
            torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))
        conv(torch.randn(3, 1, 1))  # unbatched input: the plain convolution
    assert calls == [torch.Size([2, 3, 1, 1]), torch.Size([2, 3, 2, 2])]


def test_grouped_and_circular_convolutions_keep_the_plain_path():
    x = torch.randn(2, 4, 2, 2)
    grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
    circular = nn.Conv2d(4, 2, 3, padding=1, padding_mode="circular")
    with small_map_convolutions(grouped, circular):
        assert not small_conv.fits_dense(x, grouped) and not small_conv.fits_dense(x, circular)
        torch.testing.assert_close(circular(x), nn.Conv2d.forward(circular, x))


def test_the_class_is_lent_for_the_block_and_restored():
    class Mine(nn.Conv2d):
        pass

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), Mine(2, 2, 1), nn.Conv2d(2, 2, 1))
    keys = list(net.state_dict())
    with small_map_convolutions(net, None):
        assert [type(m) for m in net] == [SmallMapConv2d, nn.ReLU, Mine, SmallMapConv2d]
        assert list(net.state_dict()) == keys
        with small_map_convolutions(net):  # nested: the outer block restores
            pass
        assert type(net[0]) is SmallMapConv2d
    assert [type(m) for m in net] == [nn.Conv2d, nn.ReLU, Mine, nn.Conv2d]


def test_a_weight_set_by_a_pre_hook_is_the_one_used():
    # masks and quantizers replace `weight` in a forward pre-hook: the dense path must see it
    conv = nn.Conv2d(2, 3, 3, padding=1)
    conv.register_forward_pre_hook(lambda m, i: setattr(m, "weight", nn.Parameter(torch.zeros_like(m.weight))))
    with small_map_convolutions(conv):
        out = conv(torch.randn(4, 2, 1, 1))
    torch.testing.assert_close(out, conv.bias.detach().view(1, 3, 1, 1).expand(4, 3, 1, 1))


def test_a_kernel_larger_than_the_map_raises_torchs_error():
    conv = nn.Conv2d(2, 2, 3)  # no padding: a 3x3 kernel cannot slide over a 1x1 map
    with small_map_convolutions(conv), pytest.raises(RuntimeError, match="[Kk]ernel size"):
        conv(torch.randn(1, 2, 1, 1))
