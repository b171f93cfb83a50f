"""Tiny linen models shared by the Fisher tests."""

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape((x.shape[0], -1))
        x = nn.tanh(nn.Dense(7)(x))
        return nn.Dense(3)(x)


class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x)
        x = nn.Conv(5, (3, 3), strides=(2, 2))(x)
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        return nn.Dense(4)(x)
