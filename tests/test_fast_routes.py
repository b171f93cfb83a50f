"""fast_routes: the same gradients and the same training as the plain trace, without the slow ops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _jaxpr import primitive_names

import ldnas_jax as ld
from ldnas_jax import train as train_module


class PooledBN(nn.Module):
    """Conv-BN-ReLU-pool on a 4×4 map, then a 2×2-output conv: both rewrites apply."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))  # 4x4 -> 2x2
        x = nn.relu(nn.Conv(5, (3, 3))(x))  # 2x2 output: routed through a matmul
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


def test_fast_routes_gives_the_plain_gradient_without_select_and_scatter_or_tiny_convs():
    model = PooledBN()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 4, 4, 2)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 3, size=6))
    variables = model.init(jax.random.key(0), x)

    def loss(params, stats, x, y):
        logits, updates = model.apply(
            {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    args = (variables["params"], variables["batch_stats"], x, y)
    routed = ld.fast_routes(loss, max_output_positions=4)
    plain_names = primitive_names(jax.grad(loss, has_aux=True), *args)
    routed_names = primitive_names(jax.grad(routed, has_aux=True), *args)
    assert "select_and_scatter_add" in plain_names
    assert "select_and_scatter_add" not in routed_names
    # Only the 4×4 convolution is still a convolution (forward, and its input gradient).
    assert "conv_general_dilated" in routed_names
    tiny_only = ld.fast_routes(loss, max_output_positions=16)
    assert "conv_general_dilated" not in primitive_names(jax.grad(tiny_only, has_aux=True), *args)

    (value, stats), grads = jax.value_and_grad(routed, has_aux=True)(*args)
    (value_ref, stats_ref), grads_ref = jax.value_and_grad(loss, has_aux=True)(*args)
    np.testing.assert_allclose(value, value_ref, rtol=1e-6)
    for a, b in zip(jax.tree.leaves((grads, stats)), jax.tree.leaves((grads_ref, stats_ref))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_off_the_cpu_fast_routes_traces_the_function_as_written(monkeypatch):
    """On a GPU the rewrites only cost: the pooling mask made an H200's step 1.37x slower."""
    model = PooledBN()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 4, 4, 2)).astype(np.float32))
    variables = model.init(jax.random.key(0), x)

    def loss(params, x):
        return jnp.sum(model.apply({**variables, "params": params}, x) ** 2)

    on_cpu = primitive_names(jax.grad(ld.fast_routes(loss)), variables["params"], x)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    on_gpu = primitive_names(jax.grad(ld.fast_routes(loss)), variables["params"], x)
    assert "select_and_scatter_add" not in on_cpu
    assert on_gpu == primitive_names(jax.grad(loss), variables["params"], x)
    assert "select_and_scatter_add" in on_gpu


def test_train_classifier_through_fast_routes_equals_plain_training(monkeypatch):
    model = ld.SmallVGG(num_classes=3, features=(4, 6), hidden=8)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=40)
    options = dict(key=jax.random.key(2), epochs=2, batch_size=16, progress=False)
    routed = train_module.train_classifier(model, (x, y), **options)
    # The same training with the rewrites switched off.
    monkeypatch.setattr(train_module, "fast_routes", lambda fn, **_: fn)
    train_module._cached_train_step.cache_clear()
    try:
        plain = train_module.train_classifier(model, (x, y), **options)
    finally:
        train_module._cached_train_step.cache_clear()
    np.testing.assert_allclose(
        [e["loss"] for e in routed.history], [e["loss"] for e in plain.history], rtol=1e-5
    )
    for a, b in zip(jax.tree.leaves(routed.variables), jax.tree.leaves(plain.variables)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
