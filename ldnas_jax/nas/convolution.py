"""Convolutions and max pooling built from strided slices and matrix products.

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
op outside loops and keep that speed inside them.

These rewrites, and ``max_pool``'s below, are for XLA:CPU: like
:func:`ldnas_jax.fast_routes`, they apply only when JAX's default backend is the CPU
(decided when a function is traced). On a GPU or TPU each function is XLA's own op
(``lax.conv_general_dilated``, ``nn.max_pool``), differentiated by JAX, with the same
values up to float rounding.

The dense convolution's backward pass (``jax.custom_vjp``; reverse mode only) keeps JAX's
input gradient and computes the kernel gradient from patches a few images at a time
(:func:`ldnas_jax.xla_cpu.conv_kernel_gradient`): as written, patchesᵀ @ gradient reads
the whole batch's patches from memory.

The depthwise convolution has its own backward pass (``jax.custom_vjp``; reverse mode
only). Differentiated as written, each slice transposes to a padded copy of the input
and each kernel entry to a reduction of its own materialised slice: on 64×32×32×8
that was 3–5× the forward for a 3×3 kernel and 40× for a 5×5. Here the input gradient is
the same tap sum as the forward (a correlation of the padded, stride-dilated output
gradient with the flipped kernel: one fused loop), and the kernel gradient reduces its
taps a few images at a time, so that each tap's slice is read from cache.

``max_pool`` ("SAME" padding, overlapping windows: the search space's ``max_pool_3x3``) is
the maximum of the same slices over a −inf padding. JAX differentiates ``nn.max_pool``
through XLA's ``select_and_scatter``, which XLA:CPU runs several times slower than the
pooling; here the gradient goes to each window's first maximum, as there, through one
more fused loop over the same transposed taps.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ldnas_jax.xla_cpu import (
    conv_kernel_gradient,
    conv_patches,
    conv_taps,
    same_padding_geometry,
    split_batch,
)

# Input elements per chunk of the depthwise kernel gradient: 4 images of 32×32×8. Chosen by
# timing 1 to 16 images per chunk on 32×32×8, 16×16×16 and 8×8×32 inputs (3×3 and 5×5
# kernels); this size was within noise of the best for each.
_KERNEL_GRADIENT_CHUNK = 4 * 32 * 32 * 8

__all__ = ["Conv2D", "DepthwiseConv2D", "conv2d", "depthwise_conv2d", "max_pool"]


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _cpu_rewrites() -> bool:
    """Whether the XLA:CPU forms apply: on the CPU backend only, as in ``fast_routes``."""
    return jax.default_backend() == "cpu"


def _xla_conv(x, kernel, strides, dilation, groups=1):
    """XLA's own "SAME" convolution: the form used off the CPU."""
    return lax.conv_general_dilated(
        x,
        kernel,
        strides,
        "SAME",
        rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _same_geometry(x, kernel_hw, strides, dilation):
    if x.ndim != 4:
        raise ValueError(f"expected NHWC input (B, H, W, C), got shape {x.shape}")
    return same_padding_geometry(x.shape, kernel_hw, _pair(strides), _pair(dilation))


def conv2d(x: jax.Array, kernel: jax.Array, strides=1, dilation=1) -> jax.Array:
    """Dense 2-D convolution of NHWC ``x`` with "SAME" padding, as im2col + matmul on CPU.

    Equal to ``lax.conv_general_dilated(x, kernel, strides, "SAME",
    rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))``, which is
    what runs on other backends.

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
    c_in = kernel.shape[2]
    if x.shape[-1] != c_in:
        raise ValueError(f"input has {x.shape[-1]} channels but the kernel expects {c_in}")
    if x.ndim != 4:
        raise ValueError(f"expected NHWC input (B, H, W, C), got shape {x.shape}")
    if not _cpu_rewrites():
        return _xla_conv(x, kernel, _pair(strides), _pair(dilation))
    return _dense(x, kernel, _pair(strides), _pair(dilation))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dense(x, kernel, strides, dilation):
    kh, kw, c_in, c_out = kernel.shape
    patches = conv_patches(x, _same_geometry(x, (kh, kw), strides, dilation))
    # Patch channels are ordered (tap, c_in), matching the kernel's row-major reshape.
    return lax.dot_general(patches, kernel.reshape(kh * kw * c_in, c_out), (((3,), (0,)), ((), ())))


def _dense_forward(x, kernel, strides, dilation):
    # The whole batch's patches at once: chunking them, as conv_by_patches does, was no
    # faster on the search space's 8-channel convolutions (conv_7x1_1x7: 26 against 32 ms).
    return _dense(x, kernel, strides, dilation), (x, kernel)


def _dense_backward(strides, dilation, residuals, grad):
    """JAX's input gradient of the im2col body; the kernel gradient a few images at a time."""
    x, kernel = residuals
    (input_grad,) = jax.vjp(lambda x: _dense.fun(x, kernel, strides, dilation), x)[1](grad)
    geometry = _same_geometry(x, kernel.shape[:2], strides, dilation)
    return input_grad, conv_kernel_gradient(x, grad, geometry).astype(kernel.dtype)


_dense.defvjp(_dense_forward, _dense_backward)
# The Fisher's layer-wise plan may read the patches @ kernel inside (ldnas_jax.fisher._program).
_dense_backward.same_derivative_as_body = True


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, strides=1, dilation=1) -> jax.Array:
    """Depthwise 2-D convolution (one filter per channel) with "SAME" padding.

    Slices times per-channel weights on CPU; off the CPU, and equal to it,
    ``lax.conv_general_dilated`` with ``feature_group_count=C``.

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
    if x.ndim != 4:
        raise ValueError(f"expected NHWC input (B, H, W, C), got shape {x.shape}")
    if not _cpu_rewrites():
        return _xla_conv(x, kernel, _pair(strides), _pair(dilation), groups=channels)
    return _depthwise(x, kernel, _pair(strides), _pair(dilation))


def _tap_sum(views, kernel):
    """sum_t views[t] * kernel[t]: one fused loop over the output."""
    kh, kw, _, channels = kernel.shape
    taps = kernel.reshape(kh * kw, 1, 1, 1, channels)  # explicit rank for broadcasting
    out = views[0] * taps[0]
    for view, tap in zip(views[1:], taps[1:]):
        out = out + view * tap
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise(x, kernel, strides, dilation):
    kh, kw = kernel.shape[:2]
    return _tap_sum(conv_taps(x, _same_geometry(x, (kh, kw), strides, dilation)), kernel)


def _depthwise_forward(x, kernel, strides, dilation):
    return _depthwise(x, kernel, strides, dilation), (x, kernel)


def _depthwise_backward(strides, dilation, residuals, grad):
    x, kernel = residuals
    return (
        _depthwise_input_gradient(grad, kernel, x.shape, strides, dilation).astype(x.dtype),
        _depthwise_kernel_gradient(x, grad, kernel.shape, strides, dilation).astype(kernel.dtype),
    )


_depthwise.defvjp(_depthwise_forward, _depthwise_backward)
# The Fisher's layer-wise plan may read the tap sum inside (ldnas_jax.fisher._program).
_depthwise_backward.same_derivative_as_body = True


def _transposed_taps(out_array, fill, x_shape, kernel_hw, strides, dilation) -> list:
    """The views through which a tap-wise op's input gradient gathers an output-shaped array.

    Output o of tap t reads input i = o·s + t·d − p (p: the low padding). So input i
    collects from every (o, t) with o·s = i + p − t·d. Spreading the output-shaped array
    out by s (s − 1 ``fill`` entries between entries) and padding it by (k − 1)·d − p in
    front makes view t' (tap k − 1 − t') hold, at input position i, the output of that
    tap that read i, or ``fill`` where none did. Returned in the forward's tap order
    reversed: view t' belongs to tap T − 1 − t'.
    """
    geometry = same_padding_geometry(x_shape, kernel_hw, strides, dilation)
    config = [(0, 0, 0)]
    for (low, _), k, s, d, size, out in zip(
        geometry.padding, kernel_hw, strides, dilation, x_shape[1:3], geometry.out_spatial
    ):
        front = (k - 1) * d - low
        back = size + (k - 1) * d - front - ((out - 1) * s + 1)
        config.append((front, back, s - 1))
    spread = lax.pad(out_array, jnp.asarray(fill, out_array.dtype), config + [(0, 0, 0)])
    return [
        spread[
            :,
            i * dilation[0] : i * dilation[0] + x_shape[1],
            j * dilation[1] : j * dilation[1] + x_shape[2],
        ]
        for i, j in itertools.product(range(kernel_hw[0]), range(kernel_hw[1]))
    ]


def _depthwise_input_gradient(grad, kernel, x_shape, strides, dilation):
    """The transpose of the tap sum, as a tap sum itself: the output gradient's transposed
    taps times the flipped kernel (one fused loop, like the forward)."""
    views = _transposed_taps(grad, 0, x_shape, kernel.shape[:2], strides, dilation)
    return _tap_sum(views, kernel[::-1, ::-1])


def _depthwise_kernel_gradient(x, grad, kernel_shape, strides, dilation):
    """dk[t, c] = sum over images and positions of taps[t] * grad, a few images at a time.

    Reduced at once, XLA:CPU materialises every tap's slice of the whole batch before
    reducing it, which leaves the cache for a 5×5 kernel; scanning over chunks of about
    ``_KERNEL_GRADIENT_CHUNK`` input elements keeps each chunk's slices in cache. The
    batch is padded with zero images to a whole number of chunks (they add nothing).
    """
    kh, kw, _, channels = kernel_shape
    batch = x.shape[0]
    per_image = max(1, _KERNEL_GRADIENT_CHUNK // (x.size // batch))
    chunk = min(batch, per_image)
    chunks = -(-batch // chunk)
    geometry = same_padding_geometry((chunk, *x.shape[1:]), (kh, kw), strides, dilation)

    def add_chunk(total, pair):
        x_chunk, grad_chunk = pair
        views = conv_taps(x_chunk, geometry)
        return total + jnp.stack([jnp.sum(v * grad_chunk, axis=(0, 1, 2)) for v in views]), None

    pairs = (split_batch(x, chunk, chunks), split_batch(grad, chunk, chunks))
    total, _ = lax.scan(add_chunk, jnp.zeros((kh * kw, channels), x.dtype), pairs)
    return total.reshape(kernel_shape)


def max_pool(x: jax.Array, window=3, strides=1) -> jax.Array:
    """Max pooling of NHWC ``x`` with "SAME" padding, from slices.

    Equal to ``nn.max_pool(x, (window, window), strides, padding="SAME")`` in value and
    in gradient (the gradient reaches each window's first maximum in row-major order),
    without XLA's ``select_and_scatter``. Reverse-mode differentiable (``jax.custom_vjp``).
    Off the CPU it is ``nn.max_pool`` itself.

    Args:
      x: (B, H, W, C) input.
      window: int or (wh, ww).
      strides: int or (sh, sw); the output has ceil(H / sh) rows.

    Example:
      >>> import jax.numpy as jnp
      >>> max_pool(jnp.arange(16.0).reshape(1, 4, 4, 1), strides=2)[0, :, :, 0]
      Array([[10., 11.],
             [14., 15.]], dtype=float32)
    """
    if x.ndim != 4:
        raise ValueError(f"expected NHWC input (B, H, W, C), got shape {x.shape}")
    if not _cpu_rewrites():
        return nn.max_pool(x, _pair(window), _pair(strides), padding="SAME")
    return _max_pool(x, _pair(window), _pair(strides))


def _pool_views(x, window, strides):
    return conv_taps(x, same_padding_geometry(x.shape, window, strides), fill=-jnp.inf)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, window, strides):
    views = _pool_views(x, window, strides)
    out = views[0]
    for view in views[1:]:
        out = jnp.maximum(out, view)
    return out


def _max_pool_forward(x, window, strides):
    out = _max_pool(x, window, strides)
    return out, (x, out)


def _max_pool_backward(window, strides, residuals, grad):
    x, out = residuals
    views = _pool_views(x, window, strides)
    # The first tap that holds each window's maximum (row-major, as select_and_scatter).
    first = jnp.full(out.shape, len(views), jnp.int32)
    for tap in reversed(range(len(views))):
        first = jnp.where(views[tap] == out, tap, first)
    no_dilation = (1, 1)
    grads = _transposed_taps(grad, 0, x.shape, window, strides, no_dilation)
    winners = _transposed_taps(first, -1, x.shape, window, strides, no_dilation)
    last = len(views) - 1
    dx = jnp.zeros(x.shape, grad.dtype)
    for flipped, (g, w) in enumerate(zip(grads, winners)):
        dx = dx + jnp.where(w == last - flipped, g, 0)
    return (dx.astype(x.dtype),)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)
_max_pool_backward.same_derivative_as_body = True


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
