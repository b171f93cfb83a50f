"""A small VGG-style convolutional classifier that trains in seconds on a CPU."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class SmallVGG(nn.Module):
    """Stages of 3×3 conv → BatchNorm → ReLU → 2×2 max-pool, then a dense head.

    The layout follows VGG (stacked 3×3 convolutions, halving resolution per
    stage) at a width small enough for the embedded tasks on two CPU cores.

    Attributes:
      num_classes: number of output logits.
      features: output channels of each stage.
      hidden: width of the dense layer before the classifier (0 to skip it).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = SmallVGG(num_classes=10)
      >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
      >>> model.apply(variables, jnp.zeros((2, 32, 32, 3))).shape
      (2, 10)
    """

    num_classes: int
    features: Sequence[int] = (16, 32, 64)
    hidden: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for width in self.features:
            x = nn.Conv(width, (3, 3), padding="SAME", use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))  # global average pool: resolution-independent head
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)
