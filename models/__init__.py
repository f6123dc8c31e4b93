"""ANN architectures for conversion and direct SNN training, built from input shape and class count.

``build_model(name, input_shape, num_classes, act=nn.ReLU, **cfg)`` builds one; every model
carries ``arch_name`` and ``arch_config`` (a plain dict) so that
``build_model(model.arch_name, **model.arch_config)`` rebuilds the same architecture. Activations
are made by calling ``act()`` once per position, so ``act=lambda: spikec.LIF(beta=0.9)`` gives a
spiking network and a QCFS factory a quantised one. All models are ``torch.fx``-traceable
(no data-dependent control flow, no in-place operations).
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

from torch import nn

from spikec.models.lenet import LeNet
from spikec.models.mlp import MLP
from spikec.models.resnet import ResNet
from spikec.models.vgg import VGG

MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "lenet": LeNet, "vgg": VGG, "resnet": ResNet}

__all__ = ["MODELS", "MLP", "LeNet", "ResNet", "VGG", "build_model", "model_options"]


def model_options(name: str) -> list[str]:
    """The ``**cfg`` keys a model accepts."""
    params = inspect.signature(_builder(name)).parameters
    return [p for p in params if p not in ("input_shape", "num_classes", "act")]


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, act: Callable[[], nn.Module] = nn.ReLU, **cfg
) -> nn.Module:
    """Build model ``name`` ("mlp", "lenet", "vgg", "resnet") for ``input_shape`` (C, H, W) and ``num_classes``."""
    builder = _builder(name)
    unknown = sorted(set(cfg) - set(model_options(name)))
    if unknown:
        raise ValueError(f"model {name!r} has no option {unknown[0]!r}; options: {', '.join(model_options(name))}")
    return builder(input_shape, num_classes, act=act, **cfg)


def _builder(name: str):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name]
