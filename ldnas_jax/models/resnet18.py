"""ResNet-18 for 32×32 inputs (CIFAR layout), a hand-designed baseline of the paper's Tables 1–2."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

# Explicit 1-pixel padding, as in the CIFAR ResNets: "SAME" would pad stride-2 convs on one side only.
_PAD1 = ((1, 1), (1, 1))


def _batch_norm(train: bool) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity shortcut, or a 1×1 conv-BN one when the shape changes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> block = BasicBlock(features=8, strides=2)
      >>> v = block.init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)))
      >>> block.apply(v, jnp.zeros((1, 8, 8, 4))).shape
      (1, 4, 4, 8)
    """

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        s = (self.strides, self.strides)
        y = nn.Conv(self.features, (3, 3), s, padding=_PAD1, use_bias=False)(x)
        y = nn.relu(_batch_norm(train)(y))
        y = nn.Conv(self.features, (3, 3), padding=_PAD1, use_bias=False)(y)
        y = _batch_norm(train)(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), s, use_bias=False)(x)
            x = _batch_norm(train)(x)
        return nn.relu(y + x)


class ResNet18(nn.Module):
    """ResNet-18 with a 3×3 stem and no initial pooling, for 32×32 inputs.

    Four stages of two :class:`BasicBlock` each (64, 128, 256, 512 channels; the
    last three halve the resolution), global average pooling, one linear layer.
    With 10 classes it has 11,173,962 parameters (BatchNorm scales and offsets
    included, running statistics not), the usual figure for the CIFAR ResNet-18.

    Attributes:
      num_classes: number of output logits.
      stage_features: channels of the four stages.
      blocks_per_stage: basic blocks in each stage.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> shapes = jax.eval_shape(ResNet18(10).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
      >>> sum(p.size for p in jax.tree.leaves(shapes["params"]))
      11173962
    """

    num_classes: int
    stage_features: Sequence[int] = (64, 128, 256, 512)
    blocks_per_stage: Sequence[int] = (2, 2, 2, 2)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.Conv(self.stage_features[0], (3, 3), padding=_PAD1, use_bias=False)(x)
        x = nn.relu(_batch_norm(train)(x))
        for stage, (features, blocks) in enumerate(zip(self.stage_features, self.blocks_per_stage)):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(features, strides)(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
