"""Tiled max pooling against lax.reduce_window: values, derivatives, ties, and what is left alone."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jaxpr import primitive_names
from jax import lax

from ldnas_jax.xla_cpu._pooling import tiled_max_pooling, window_max


def _reference_pool(x, window):
    return lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")


@pytest.mark.parametrize(
    "shape, window",
    [
        ((2, 6, 8, 3), (1, 2, 2, 1)),
        ((2, 7, 9, 3), (1, 2, 2, 1)),  # VALID drops the last row and column
        ((3, 12, 4), (1, 3, 1)),  # 1-D pooling, windows of 3
        ((2, 4, 6, 3), (1, 2, 3, 1)),  # non-square windows
        ((4, 6), (2, 3)),  # windows over what would be batch and channels
    ],
)
def test_window_max_equals_reduce_window_in_value_gradient_and_jvp(shape, window):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    expected = _reference_pool(x, window)
    np.testing.assert_array_equal(window_max(x, window), expected)
    cotangent = jnp.asarray(rng.normal(size=expected.shape).astype(np.float32))
    grad = jax.vjp(lambda v: window_max(v, window), x)[1](cotangent)[0]
    reference = jax.vjp(lambda v: _reference_pool(v, window), x)[1](cotangent)[0]
    np.testing.assert_array_equal(grad, reference)
    tangent = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    np.testing.assert_array_equal(
        jax.jvp(lambda v: window_max(v, window), (x,), (tangent,))[1],
        jax.jvp(lambda v: _reference_pool(v, window), (x,), (tangent,))[1],
    )


def test_ties_send_the_derivative_to_the_first_maximum_like_select_and_scatter():
    # After a ReLU whole windows are zero; both routes must pick the same element.
    x = jnp.asarray([[1.0, 1.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0]]).reshape(1, 2, 4, 1)
    pool_sum = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2)).sum()
    grad = jax.grad(tiled_max_pooling(pool_sum))(x)
    np.testing.assert_array_equal(grad, jax.grad(pool_sum)(x))
    # By hand: the first element of each window in row-major order gets the whole derivative.
    np.testing.assert_array_equal(grad[0, :, :, 0], [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_tiled_max_pooling_rewrites_a_small_cnn_and_keeps_its_gradient():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            for width in (4, 6):
                x = nn.max_pool(nn.relu(nn.Conv(width, (3, 3))(x)), (2, 2), strides=(2, 2))
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))

    model = Net()
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(5, 8, 8, 2)).astype(np.float32))
    params = model.init(jax.random.key(0), x)["params"]
    loss = lambda p, v: jnp.sum(jax.nn.log_softmax(model.apply({"params": p}, v))[:, 0])
    fast = tiled_max_pooling(loss)
    assert "select_and_scatter_add" in primitive_names(jax.grad(loss), params, x)
    assert "select_and_scatter_add" not in primitive_names(jax.grad(fast), params, x)
    assert "reduce_window_max" not in primitive_names(fast, params, x)
    np.testing.assert_array_equal(fast(params, x), loss(params, x))
    for g, r in zip(
        jax.tree.leaves(jax.grad(fast)(params, x)), jax.tree.leaves(jax.grad(loss)(params, x))
    ):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7)
    # Under jit and vmap too, with pytree outputs.
    per_example = jax.jit(jax.vmap(jax.grad(tiled_max_pooling(loss)), in_axes=(None, 0)))
    expected = jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, x[:, None])
    for g, r in zip(jax.tree.leaves(per_example(params, x[:, None])), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-7)


def test_pooling_inside_jit_is_rewritten_and_overlapping_pooling_is_left_alone():
    tiled = jax.jit(lambda v: nn.max_pool(v, (2, 2), strides=(2, 2)))
    overlapping = lambda v: nn.max_pool(v, (3, 3), strides=(1, 1), padding="SAME")
    padded = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2), padding="SAME")
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 5, 5, 2)).astype(np.float32))
    assert "reduce_window_max" not in primitive_names(tiled_max_pooling(tiled), x)
    for fn in (overlapping, padded):
        assert "reduce_window_max" in primitive_names(tiled_max_pooling(fn), x)
        np.testing.assert_array_equal(tiled_max_pooling(fn)(x), fn(x))
        g = jax.grad(lambda v: tiled_max_pooling(fn)(v).sum())(x)
        np.testing.assert_array_equal(g, jax.grad(lambda v: fn(v).sum())(x))


def test_higher_order_primitives_and_non_pooling_code_run_unchanged():
    def fn(v, w):
        h = jax.nn.relu(v @ w)  # custom_jvp
        h = lax.scan(lambda c, row: (c + row, c * row), jnp.zeros(h.shape[1:]), h)[1]
        h = lax.cond(jnp.sum(h) > 0, jnp.sin, jnp.cos, h)
        return {"out": h, "extra": (jnp.sum(w), None)}

    rng = np.random.default_rng(3)
    v = jnp.asarray(rng.normal(size=(4, 3)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 5)).astype(np.float32))
    got, expected = tiled_max_pooling(fn)(v, w), fn(v, w)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(g, r)
