"""Benchmark models: the small CNN in Flax, and both benchmark models in PyTorch (optional)."""

import flax.linen as nn
import jax.numpy as jnp

from ldnas_jax.models.vgg16 import VGG16_PLAN


class SmallCNN(nn.Module):
    """Three 3×3 conv + ReLU + 2×2 max-pool stages (32, 64, 128) and a linear head.

    On 32×32×3 inputs and 10 classes it has 113,738 parameters (the "114k" CNN of DESIGN §5).
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for width in (32, 64, 128):
            x = nn.max_pool(
                nn.relu(nn.Conv(width, (3, 3), padding="SAME")(x)), (2, 2), strides=(2, 2)
            )
        return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


def torch_model(name: str, num_classes: int = 10):
    """The same architecture in PyTorch (NCHW), in eval mode. Imports torch lazily."""
    import torch
    from torch import nn as tnn

    if name == "small_cnn":
        layers, channels = [], 3
        for width in (32, 64, 128):
            layers += [tnn.Conv2d(channels, width, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2)]
            channels = width
        net = tnn.Sequential(*layers, tnn.Flatten(), tnn.Linear(128 * 4 * 4, num_classes))
    elif name == "vgg16":
        layers, channels = [], 3
        for item in VGG16_PLAN:
            if item == "M":
                layers.append(tnn.MaxPool2d(2))
                continue
            layers += [tnn.Conv2d(channels, item, 3, padding=1), tnn.BatchNorm2d(item), tnn.ReLU()]
            channels = item

        class _VGG(tnn.Module):
            def __init__(self):
                super().__init__()
                self.features = tnn.Sequential(*layers)
                self.head = tnn.Linear(512, num_classes)

            def forward(self, x):
                return self.head(self.features(x).mean(dim=(2, 3)))

        net = _VGG()
    else:
        raise ValueError(f"unknown benchmark model {name!r}")
    torch.manual_seed(0)
    return net.eval()
