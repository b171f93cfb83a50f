"""Convolutions built from strided slices and matrix products.

XLA:CPU executes its convolution op far more slowly inside a loop body than
outside one (jax-ml/jax#12868: ~30x for a 1x7 conv in ``lax.scan``), and runs
grouped (depthwise) convolutions slowly everywhere. FUSE scans its optimiser steps,
so every convolution of the search space is written here instead as:

* ``conv2d``: im2col (:func:`ldnas_jax.xla_cpu.conv_patches`: k*k strided
  slices of the padded input, concatenated on channels) followed by one
  ``dot_general``;
* ``depthwise_conv2d``: the sum of the same slices
  (:func:`ldnas_jax.xla_cpu.conv_taps`), each times its per-channel weight.

Both compute exactly the "SAME"-padded convolution, run at the speed of the native
op outside loops and keep that speed inside them, on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
from jax import lax

from ldnas_jax.xla_cpu._matmul_conv import conv_patches, conv_taps, same_padding_geometry

__all__ = ["Conv2D", "DepthwiseConv2D", "conv2d", "depthwise_conv2d"]


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _same_geometry(x, kernel_hw, strides, dilation):
    if x.ndim != 4:
        raise ValueError(f"expected NHWC input (B, H, W, C), got shape {x.shape}")
    return same_padding_geometry(x.shape, kernel_hw, _pair(strides), _pair(dilation))


def conv2d(x: jax.Array, kernel: jax.Array, strides=1, dilation=1) -> jax.Array:
    """Dense 2-D convolution of NHWC ``x`` with "SAME" padding, as im2col + matmul.

    Equal to ``lax.conv_general_dilated(x, kernel, strides, "SAME",
    rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))``.

    Args:
      x: (B, H, W, C_in) input.
      kernel: (KH, KW, C_in, C_out) weights (flax's HWIO layout).
      strides: int or (sh, sw); the output has ceil(H / sh) rows.
      dilation: int or (dh, dw) spacing between kernel taps.

    Returns:
      (B, ceil(H / sh), ceil(W / sw), C_out).

    Example:
      >>> import jax.numpy as jnp
      >>> conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 5)), strides=2).shape
      (1, 2, 2, 5)
    """
    kh, kw, c_in, c_out = kernel.shape
    if x.shape[-1] != c_in:
        raise ValueError(f"input has {x.shape[-1]} channels but the kernel expects {c_in}")
    patches = conv_patches(x, _same_geometry(x, (kh, kw), strides, dilation))
    # Patch channels are ordered (tap, c_in), matching the kernel's row-major reshape.
    return lax.dot_general(patches, kernel.reshape(kh * kw * c_in, c_out), (((3,), (0,)), ((), ())))


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, strides=1, dilation=1) -> jax.Array:
    """Depthwise 2-D convolution (one filter per channel) with "SAME" padding.

    Equal to ``lax.conv_general_dilated`` with ``feature_group_count=C``.

    Args:
      x: (B, H, W, C) input.
      kernel: (KH, KW, 1, C) weights, flax's layout for a depthwise ``nn.Conv``.
      strides, dilation: as in ``conv2d``.

    Example:
      >>> import jax.numpy as jnp
      >>> y = depthwise_conv2d(jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 1, 2)), strides=2)
      >>> y[0, :, :, 0]
      Array([[4., 6., 4.],
             [6., 9., 6.],
             [4., 6., 4.]], dtype=float32)
    """
    kh, kw, one, channels = kernel.shape
    if one != 1 or x.shape[-1] != channels:
        raise ValueError(
            f"expected a (KH, KW, 1, {x.shape[-1]}) depthwise kernel, got {kernel.shape}"
        )
    views = conv_taps(x, _same_geometry(x, (kh, kw), strides, dilation))
    taps = kernel.reshape(kh * kw, 1, 1, 1, channels)  # explicit rank for broadcasting
    out = views[0] * taps[0]
    for view, tap in zip(views[1:], taps[1:]):
        out = out + view * tap
    return out


class Conv2D(nn.Module):
    """Bias-free ``conv2d`` with ``nn.Conv``'s kernel layout and initialiser.

    Example:
      >>> import jax.numpy as jnp
      >>> conv = Conv2D(features=8, kernel_size=(1, 7), strides=(1, 2))
      >>> x = jnp.ones((1, 6, 6, 4))
      >>> conv.apply(conv.init(jax.random.key(0), x), x).shape
      (1, 6, 3, 8)
    """

    features: int
    kernel_size: int | Sequence[int] = 1
    strides: int | Sequence[int] = 1
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        shape = _pair(self.kernel_size) + (x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        return conv2d(x, kernel.astype(x.dtype), self.strides)


class DepthwiseConv2D(nn.Module):
    """Bias-free ``depthwise_conv2d`` with ``nn.Conv``'s kernel layout and initialiser.

    Example:
      >>> import jax.numpy as jnp
      >>> conv = DepthwiseConv2D(kernel_size=3, dilation=2)
      >>> x = jnp.ones((1, 8, 8, 4))
      >>> conv.apply(conv.init(jax.random.key(0), x), x).shape
      (1, 8, 8, 4)
    """

    kernel_size: int | Sequence[int] = 3
    strides: int | Sequence[int] = 1
    dilation: int | Sequence[int] = 1
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        shape = _pair(self.kernel_size) + (1, x.shape[-1])
        kernel = self.param("kernel", self.kernel_init, shape)
        return depthwise_conv2d(x, kernel.astype(x.dtype), self.strides, self.dilation)
