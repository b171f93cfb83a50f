"""The kernel gradient from chunked patches, against a plain loop over images and positions."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldnas_jax.xla_cpu import same_padding_geometry
from ldnas_jax.xla_cpu._conv_gradient import (
    conv_by_patches,
    conv_kernel_gradient,
    conv_with_patch_gradient,
    xla_conv,
)


def _loop_kernel_gradient(x, grad, geom):
    """dK[t, c, o] = sum over images n, outputs p of x_padded[n, p·s + t·d, c] · grad[n, p, o]."""
    (low_h, _), (low_w, _) = geom.padding
    padded = np.pad(x, ((0, 0), geom.padding[0], geom.padding[1], (0, 0)))
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel_size, geom.strides, geom.kernel_dilation
    total = np.zeros((kh, kw, x.shape[-1], grad.shape[-1]))
    for n, i, j in itertools.product(*(range(s) for s in grad.shape[:3])):
        for a, b in itertools.product(range(kh), range(kw)):
            total[a, b] += np.outer(padded[n, i * sh + a * dh, j * sw + b * dw], grad[n, i, j])
    return total


@pytest.mark.parametrize("strides,dilation", [((1, 1), (1, 1)), ((2, 1), (1, 2)), ((2, 2), (2, 2))])
@pytest.mark.parametrize("chunk_bytes", [1, 2 * 9 * 4 * 49, 2**20])  # 1, ~2 and all 5 images
def test_kernel_gradient_matches_a_loop_over_images_and_positions(strides, dilation, chunk_bytes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7, 7, 4)).astype(np.float32)
    geom = same_padding_geometry(x.shape, (3, 3), strides, dilation, out_features=3)
    grad = rng.normal(size=(5, *geom.out_spatial, 3)).astype(np.float32)
    got = conv_kernel_gradient(jnp.asarray(x), jnp.asarray(grad), geom, chunk_bytes=chunk_bytes)
    np.testing.assert_allclose(got, _loop_kernel_gradient(x, grad, geom), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides,dilation", [((1, 1), (1, 1)), ((2, 1), (1, 2)), ((2, 2), (2, 2))])
@pytest.mark.parametrize("chunk_bytes", [1, 2 * 9 * 4 * 49, 2**20])
def test_forward_by_patches_matches_xla_and_the_differentiated_forward_uses_it(
    strides, dilation, chunk_bytes
):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(5, 7, 7, 4)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 3)).astype(np.float32))
    geom = same_padding_geometry(x.shape, (3, 3), strides, dilation, out_features=3)
    expected = xla_conv(x, kernel, geom)
    got = conv_by_patches(x, kernel, geom, chunk_bytes=chunk_bytes)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    primal, _ = jax.vjp(lambda x, k: conv_with_patch_gradient(x, k, geom), x, kernel)
    np.testing.assert_allclose(primal, expected, rtol=1e-5, atol=1e-5)


def test_low_precision_inputs_accumulate_in_float32():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6, 6, 8)).astype(np.float32)
    geom = same_padding_geometry(x.shape, (3, 3), out_features=8)
    grad = rng.normal(size=(64, 6, 6, 8)).astype(np.float32)
    got = conv_kernel_gradient(jnp.asarray(x, jnp.bfloat16), jnp.asarray(grad, jnp.bfloat16), geom)
    assert got.dtype == jnp.bfloat16
    reference = _loop_kernel_gradient(
        np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32),
        np.asarray(jnp.asarray(grad, jnp.bfloat16), np.float32),
        geom,
    )
    # One bf16 rounding of the float32 sum, not 64·36 roundings of a bf16 accumulator.
    np.testing.assert_allclose(np.asarray(got, np.float32), reference, rtol=1e-2, atol=0.1)


def test_per_example_gradients_under_vmap_equal_the_xla_convolutions():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(3, 6, 6, 2)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    geom = same_padding_geometry((1, 6, 6, 2), (3, 3), strides=(2, 2), out_features=4)

    def per_example(conv):
        def loss(k, xi):
            return jnp.sum(jnp.tanh(conv(xi[None], k, geom)))

        return jax.vmap(jax.grad(loss), in_axes=(None, 0))(kernel, x)

    np.testing.assert_allclose(
        per_example(conv_with_patch_gradient), per_example(xla_conv), rtol=1e-5, atol=1e-5
    )
