"""XLA's convolution, differentiated through patches a chunk of images at a time.

XLA:CPU runs a convolution's input gradient at about the speed of PyTorch's, but its
kernel gradient far below: on 256×16×16×32 → 64 (3×3) the kernel gradient took 136 ms
against 31 ms for the forward pass, and on VGG-16's first 64-channel layer 835 ms.
Written as patchesᵀ @ output-gradient the same sum is a matmul, but the patches of a
whole batch (75 MB there) do not fit in cache, and building them is bound by memory
bandwidth. :func:`conv_kernel_gradient` therefore scans over chunks of the batch whose
patches take a MiB or two and accumulates each chunk's matmul: 24–31 ms and 74–84 ms on
those two layers. The forward pass gains the same way (:func:`conv_by_patches`: 22 ms
against 31 ms on the first layer).

:func:`conv_with_patch_gradient` is XLA's op when evaluated, and these two under
differentiation, with XLA's own input gradient.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from ldnas_jax.xla_cpu._matmul_conv import ConvGeometry, conv_patches

__all__ = ["conv_by_patches", "conv_kernel_gradient", "conv_with_patch_gradient", "xla_conv"]

# Patch bytes per chunk. Timed on the small CNN's and VGG-16's layers (batch 256 and 64)
# with 0.5 to 8 MiB chunks: for the kernel gradient 0.5–2 MiB was within noise of the best
# everywhere, and 4 MiB and more lost up to 2× on 32×32 and 16×16 maps; for the forward
# pass 2 MiB was the best of 0.5, 1 and 2 MiB on 3 of 4 layers.
PATCH_CHUNK_BYTES = 2 * 2**20


def xla_conv(x: jax.Array, kernel: jax.Array, geom: ConvGeometry) -> jax.Array:
    """The convolution of ``geom`` through XLA's op, as flax's ``nn.Conv`` issues it.

    ``x`` is ``(N, *spatial, C)`` and ``kernel`` ``(*kernel_size, C, O)``.

    Example:
      >>> from ldnas_jax.xla_cpu import same_padding_geometry
      >>> geom = same_padding_geometry((1, 4, 4, 2), (3, 3), out_features=5)
      >>> xla_conv(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 5)), geom)[0, 0, 0, 0]
      Array(8., dtype=float32)
    """
    nd = len(geom.kernel_size)
    if geom.prepad_mode is not None:
        x = jnp.pad(x, ((0, 0), *geom.prepad, (0, 0)), mode=geom.prepad_mode)
    lhs = (0, nd + 1, *range(1, nd + 1))
    rhs = (nd + 1, nd, *range(nd))
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=geom.strides,
        padding=geom.padding,
        lhs_dilation=geom.input_dilation,
        rhs_dilation=geom.kernel_dilation,
        dimension_numbers=lax.ConvDimensionNumbers(lhs, rhs, lhs),
    )


def _batch_chunks(geom: ConvGeometry, x: jax.Array, chunk_bytes: int) -> tuple[int, int]:
    """``(images per chunk, number of chunks)`` so that a chunk's patches take ~chunk_bytes."""
    batch = x.shape[0]
    per_image = math.prod(geom.out_spatial) * geom.fan_in * x.dtype.itemsize
    chunk = max(1, min(batch, chunk_bytes // per_image))
    return chunk, -(-batch // chunk)


def split_batch(a: jax.Array, chunk: int, chunks: int) -> jax.Array:
    """``(N, ...) -> (chunks, chunk, ...)``, padding the batch with zero images."""
    missing = chunk * chunks - a.shape[0]
    if missing:
        a = jnp.pad(a, ((0, missing),) + ((0, 0),) * (a.ndim - 1))
    return a.reshape(chunks, chunk, *a.shape[1:])


def conv_by_patches(
    x: jax.Array, kernel: jax.Array, geom: ConvGeometry, chunk_bytes: int = PATCH_CHUNK_BYTES
) -> jax.Array:
    """The convolution ``geom`` as patches @ kernel, a chunk of images at a time.

    Equal to :func:`xla_conv` up to float rounding. Each chunk's patches take about
    ``chunk_bytes`` and stay in cache; XLA:CPU's own forward pass was slower on every
    3×3 layer of the small CNN timed (31 against 22 ms on 256×16×16×32 → 64).

    Example:
      >>> from ldnas_jax.xla_cpu import same_padding_geometry
      >>> geom = same_padding_geometry((5, 6, 6, 3), (3, 3), strides=(2, 2), out_features=4)
      >>> x = jax.random.normal(jax.random.key(0), (5, 6, 6, 3))
      >>> k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
      >>> y = conv_by_patches(x, k, geom, chunk_bytes=1)  # one image per chunk
      >>> bool(jnp.allclose(y, xla_conv(x, k, geom), atol=1e-5))
      True
    """
    chunk, chunks = _batch_chunks(geom, x, chunk_bytes)
    weights = kernel.reshape(-1, kernel.shape[-1])

    def convolve(x_chunk):
        patches = conv_patches(x_chunk, geom)
        return lax.dot_general(patches, weights, (((patches.ndim - 1,), (0,)), ((), ())))

    if chunks == 1:  # no loop to compile
        return convolve(x)
    y = lax.map(convolve, split_batch(x, chunk, chunks))
    return y.reshape(chunk * chunks, *y.shape[2:])[: x.shape[0]]


def conv_kernel_gradient(
    x: jax.Array, grad: jax.Array, geom: ConvGeometry, chunk_bytes: int = PATCH_CHUNK_BYTES
) -> jax.Array:
    """d loss / d kernel of the convolution ``geom``, from its input and output gradient.

    The sum over images and positions of patchesᵀ @ grad, reduced by a ``lax.scan`` over
    chunks of the batch whose patches take about ``chunk_bytes``. The batch is padded with
    zero images to a whole number of chunks; they add nothing. Accumulates in float32 at
    least.

    Args:
      x: ``(N, *spatial, C)`` input of the convolution.
      grad: ``(N, *out_spatial, O)`` gradient of the loss with respect to its output.
      geom: the convolution's geometry (its leading axes are ignored: ``N`` is the batch).
      chunk_bytes: patch bytes per chunk.

    Returns:
      ``(*kernel_size, C, O)``, in ``x``'s dtype.

    Example:
      >>> from ldnas_jax.xla_cpu import same_padding_geometry
      >>> geom = same_padding_geometry((3, 5, 5, 2), (3, 3), out_features=4)
      >>> x, k = jnp.ones((3, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
      >>> g = jnp.ones((3, 5, 5, 4))
      >>> autodiff = jax.vjp(lambda k: xla_conv(x, k, geom), k)[1](g)[0]
      >>> bool(jnp.allclose(conv_kernel_gradient(x, g, geom), autodiff))
      True
    """
    accumulate = x.dtype if jnp.finfo(x.dtype).bits >= 32 else jnp.float32
    chunk, chunks = _batch_chunks(geom, x, chunk_bytes)

    def add_chunk(total, pair):
        x_chunk, grad_chunk = pair
        patches = conv_patches(x_chunk, geom)
        patches = patches.reshape(-1, patches.shape[-1])
        outputs = grad_chunk.reshape(-1, grad_chunk.shape[-1])
        return total + lax.dot_general(
            patches, outputs, (((0,), (0,)), ((), ())), preferred_element_type=accumulate
        ), None

    total = jnp.zeros((geom.fan_in, grad.shape[-1]), accumulate)
    if chunks == 1:  # no loop to compile
        total, _ = add_chunk(total, (x, grad))
    else:
        pairs = (split_batch(x, chunk, chunks), split_batch(grad, chunk, chunks))
        total, _ = lax.scan(add_chunk, total, pairs)
    return total.reshape(*geom.kernel_size, geom.in_features, grad.shape[-1]).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_with_patch_gradient(x: jax.Array, kernel: jax.Array, geom: ConvGeometry) -> jax.Array:
    """:func:`xla_conv`, differentiated through patches a chunk of images at a time.

    Evaluated alone it is XLA's op. Under reverse-mode differentiation its forward pass is
    :func:`conv_by_patches`, its kernel gradient :func:`conv_kernel_gradient` and its input
    gradient XLA's own: on XLA:CPU the fastest of each, on the layers timed. Values and
    gradients equal XLA's up to float rounding. Reverse mode only.

    Example:
      >>> from ldnas_jax.xla_cpu import same_padding_geometry
      >>> geom = same_padding_geometry((2, 6, 6, 3), (3, 3), out_features=4)
      >>> x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
      >>> k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
      >>> loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k, geom)))
      >>> ours = jax.grad(loss(conv_with_patch_gradient), (0, 1))(x, k)
      >>> xla = jax.grad(loss(xla_conv), (0, 1))(x, k)
      >>> all(bool(jnp.allclose(a, b, atol=1e-5)) for a, b in zip(ours, xla))
      True
    """
    return xla_conv(x, kernel, geom)


def _forward(x, kernel, geom):
    return conv_by_patches(x, kernel, geom), (x, kernel)


def _backward(geom, residuals, grad):
    x, kernel = residuals
    (input_grad,) = jax.vjp(lambda x: xla_conv(x, kernel, geom), x)[1](grad)
    return input_grad, conv_kernel_gradient(x, grad, geom).astype(kernel.dtype)


conv_with_patch_gradient.defvjp(_forward, _backward)
# The Fisher's layer-wise plan may read the XLA convolution inside (ldnas_jax.fisher._program).
_backward.same_derivative_as_body = True
