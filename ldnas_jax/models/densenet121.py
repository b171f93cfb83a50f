"""DenseNet-121 for 32×32 inputs (CIFAR layout), a hand-designed baseline of the paper's Tables 1–2."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


def _bn_relu(x: jnp.ndarray, train: bool) -> jnp.ndarray:
    return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))


class DenseLayer(nn.Module):
    """BN-ReLU-1×1 conv (4·growth) then BN-ReLU-3×3 conv (growth); the output is appended to the input.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = DenseLayer(growth_rate=4)
      >>> v = layer.init(jax.random.key(0), jnp.zeros((1, 4, 4, 6)))
      >>> layer.apply(v, jnp.zeros((1, 4, 4, 6))).shape
      (1, 4, 4, 10)
    """

    growth_rate: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        y = nn.Conv(4 * self.growth_rate, (1, 1), use_bias=False)(_bn_relu(x, train))
        y = nn.Conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(
            _bn_relu(y, train)
        )
        return jnp.concatenate([y, x], axis=-1)


class Transition(nn.Module):
    """BN-ReLU-1×1 conv to ``features`` channels, then 2×2 average pooling."""

    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.Conv(self.features, (1, 1), use_bias=False)(_bn_relu(x, train))
        return nn.avg_pool(x, (2, 2), strides=(2, 2), count_include_pad=False)  # same mean


class DenseNet121(nn.Module):
    """DenseNet-121 (growth 32, blocks 6-12-24-16, compression 0.5) with a 3×3 stem.

    The stem is one 3×3 convolution to 2·growth channels and no pooling, so 32×32
    inputs reach the last block at 4×4. With 10 classes it has 6,956,298
    parameters, the usual figure for the CIFAR DenseNet-121.

    Attributes:
      num_classes: number of output logits.
      growth_rate: channels each dense layer adds.
      block_sizes: dense layers per block.
      compression: a transition keeps ``floor(compression × channels)`` channels.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = DenseNet121(10)
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
      >>> sum(p.size for p in jax.tree.leaves(shapes["params"]))
      6956298
    """

    num_classes: int
    growth_rate: int = 32
    block_sizes: Sequence[int] = (6, 12, 24, 16)
    compression: float = 0.5

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        channels = 2 * self.growth_rate
        x = nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
        for index, size in enumerate(self.block_sizes):
            for _ in range(size):
                x = DenseLayer(self.growth_rate)(x, train=train)
            channels += size * self.growth_rate
            if index < len(self.block_sizes) - 1:
                channels = int(channels * self.compression)
                x = Transition(channels)(x, train=train)
        x = jnp.mean(_bn_relu(x, train), axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
