"""The model zoo: shapes from 8x8 to 32x32, rebuild from arch_config, swappable activations, fx tracing."""
import operator

import pytest
import torch
from torch import fx, nn

import spikec
from spikec.models import MODELS, build_model, model_options
from spikec.models.vgg import VGG_LAYERS

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
SMALL = {"mlp": {"hidden": [32, 16]}, "lenet": {}, "vgg": {"width": 0.125, "hidden": [32]}, "resnet": {"width": 0.5}}


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_maps_any_input_shape_to_class_scores(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7, **SMALL[name]).eval()
    x = torch.rand(3, *shape)
    assert model(x).shape == (3, 7)
    again = build_model(model.arch_name, **model.arch_config).eval()
    again.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    torch.testing.assert_close(again(x), model(x))
    traced = fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("name", list(MODELS))
def test_arch_config_is_plain_data(name):
    model = build_model(name, (1, 8, 8), 10, **SMALL[name])
    assert model.arch_name == name
    plain = (int, float, str, bool, type(None))

    def check(v):
        if isinstance(v, (list, dict)):
            for item in v.values() if isinstance(v, dict) else v:
                check(item)
        else:
            assert isinstance(v, plain), v

    check(model.arch_config)
    assert set(model.arch_config) == set(model_options(name)) | {"input_shape", "num_classes"}


@pytest.mark.parametrize("name,expected", [("mlp", 2), ("lenet", 4), ("vgg", 9), ("resnet", 1 + 2 * 3 * 3)])
def test_activations_are_relu_modules_made_by_act(name, expected):
    calls = []

    def act():
        calls.append(1)
        return nn.ReLU()

    cfg = {"depth": 11} if name == "vgg" else {"depth": 20} if name == "resnet" else {}
    model = build_model(name, (3, 32, 32), 10, act=act, **cfg)
    assert len(calls) == expected == _count(model, nn.ReLU)
    assert not any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    assert _count(build_model(name, (3, 32, 32), 10, **cfg), nn.ReLU) == expected
    if name != "resnet":
        assert _count(model, nn.Flatten) == 1


@pytest.mark.parametrize("name", list(MODELS))
def test_neurons_as_activations_give_a_spiking_classifier(name):
    torch.manual_seed(0)
    net = build_model(name, (1, 8, 8), 10, act=lambda: spikec.LIF(beta=0.9), **SMALL[name])
    snn = spikec.SpikingClassifier(net, timesteps=3, encoding="direct")
    out = snn(torch.rand(4, 1, 8, 8))
    assert out.shape == (4, 10)
    assert _count(net, nn.ReLU) == 0 and _count(net, spikec.LIF) > 0
    out.sum().backward()
    first = next(p for p in net.parameters() if p.dim() > 1)
    assert first.grad is not None and first.grad.abs().sum() > 0  # gradients reach the first layer through the neurons


@pytest.mark.parametrize("name", ["lenet", "vgg", "resnet"])
def test_pooling_kind_is_selectable(name):
    avg = build_model(name, (3, 32, 32), 10, pool="avg", **SMALL[name])
    mx = build_model(name, (3, 32, 32), 10, pool="max", **SMALL[name])
    avg_kinds = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
    max_kinds = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)
    assert _count(avg, avg_kinds) > 0 and _count(avg, max_kinds) == 0
    assert _count(mx, max_kinds) > 0 and _count(mx, avg_kinds) == 0
    with pytest.raises(ValueError, match="pool"):
        build_model(name, (3, 32, 32), 10, pool="median", **SMALL[name])


@pytest.mark.parametrize("depth,convs", [(11, 8), (13, 10), (16, 13), (19, 16)])
def test_vgg_depth_counts_weight_layers(depth, convs):
    model = build_model("vgg", (3, 32, 32), 10, depth=depth, width=0.0625, hidden=[8])
    assert _count(model, nn.Conv2d) == convs
    assert _count(model, nn.Linear) == 2  # depth = convs + 3 in the paper's 3-FC head; here hidden + output
    assert _count(model, nn.AvgPool2d) == 5  # 32 -> 1
    small = build_model("vgg", (1, 8, 8), 10, depth=depth, width=0.0625, hidden=[8])
    assert _count(small, nn.AvgPool2d) == 3  # 8 -> 1, the remaining pooling steps are skipped
    assert small.classifier[1].in_features == VGG_LAYERS[depth][-2] // 16


def test_vgg_layer_list_and_batch_norm():
    model = build_model("vgg", (1, 8, 8), 4, layers=[8, "M", 16], batch_norm=False, hidden=[])
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [8, 16]
    assert _count(model, nn.BatchNorm2d) == 0 and all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model.classifier[1].in_features == 16 * 4 * 4
    bn = build_model("vgg", (1, 8, 8), 4, layers=[8, "M", 16])
    assert _count(bn, nn.BatchNorm2d) == 2


def test_resnet18_parameter_count_matches_the_cifar_reference():
    # ResNet-18 with a 3x3 stem, 1x1-conv shortcuts and a 10-way head: 11,173,962 parameters
    # (the CIFAR-10 ResNet-18 of the widely used kuangliu/pytorch-cifar layout).
    model = build_model("resnet", (3, 32, 32), 10, depth=18)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_resnet20_layout_and_traced_residual_additions():
    model = build_model("resnet", (3, 32, 32), 10, depth=20)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) == 19  # 1 stem + 18 in 9 blocks (+ the FC = 20 layers)
    assert sum(m.kernel_size == (1, 1) for m in convs) == 2  # projection shortcuts where the shape changes
    assert [m.out_channels for m in convs if m.kernel_size == (1, 1)] == [32, 64]
    graph = fx.symbolic_trace(model).graph
    adds = [n for n in graph.nodes if n.op == "call_function" and n.target in (operator.add, torch.add)]
    assert len(adds) == 9
    with pytest.raises(ValueError, match="depth"):
        build_model("resnet", (3, 32, 32), 10, depth=21)


def test_resnet_keeps_stride_one_once_the_map_is_one_pixel():
    model = build_model("resnet", (1, 2, 2), 3, blocks=[1, 1, 1], channels=[4, 8, 8])
    strides = [m.stride for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert strides.count((2, 2)) == 1
    assert model(torch.rand(2, 1, 2, 2)).shape == (2, 3)


def test_lenet_adapts_kernel_to_input_size():
    small = build_model("lenet", (1, 8, 8), 10)
    large = build_model("lenet", (1, 28, 28), 10)
    assert {m.kernel_size for m in small.modules() if isinstance(m, nn.Conv2d)} == {(3, 3)}
    assert {m.kernel_size for m in large.modules() if isinstance(m, nn.Conv2d)} == {(5, 5)}
    assert small.classifier[1].in_features == 32 * 2 * 2
    assert large.classifier[1].in_features == 32 * 7 * 7


def test_bad_names_and_options_say_what_is_valid():
    with pytest.raises(ValueError, match="mlp, lenet, vgg, resnet"):
        build_model("alexnet", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="no option 'depth'"):
        build_model("lenet", (1, 8, 8), 10, depth=3)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model("lenet", (64,), 10)
    assert build_model("mlp", (64,), 10)(torch.rand(2, 64)).shape == (2, 10)
