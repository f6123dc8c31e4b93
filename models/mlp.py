"""Multi-layer perceptron: flatten, then ``Linear -> [BatchNorm1d] -> act`` per hidden layer."""
from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from spikec.models.common import Activation, check_classes, check_input_shape


class MLP(nn.Sequential):
    """Fully connected classifier for inputs of any shape (images are flattened)."""

    arch_name = "mlp"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        act: Activation = nn.ReLU,
        hidden: Sequence[int] = (256, 128),
        batch_norm: bool = False,
    ):
        shape = check_input_shape(input_shape, image=False)
        classes = check_classes(num_classes)
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(shape)
        for h in hidden:
            layers.append(nn.Linear(features, int(h)))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(h)))
            layers.append(act())
            features = int(h)
        layers.append(nn.Linear(features, classes))
        super().__init__(*layers)
        self.arch_config = {
            "input_shape": list(shape),
            "num_classes": classes,
            "hidden": [int(h) for h in hidden],
            "batch_norm": bool(batch_norm),
        }
