"""Compiled once per model: the Fisher's compiled steps are keyed on what apply_fn computes.

Compilations are counted with a ``jax.monitoring`` listener on XLA's backend compile event.
Each test uses a model of its own shapes, so that no other test has compiled it before.
"""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldnas_jax as ld

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counted_compiles():
    """Yields a list that receives one entry per XLA compilation inside the block."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


class ConvNorm(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Conv(3, (3, 3))(x))
        return nn.Dense(2)(jnp.mean(nn.relu(x), axis=(1, 2)))


def _assert_close(actual, expected, rtol=1e-5):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert np.linalg.norm(a - e) <= rtol * max(np.linalg.norm(e), 1e-30)


@pytest.fixture(scope="module")
def conv_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 5, 4, 3)).astype(np.float32)
    model = ConvNorm()
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    stats = jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), variables["batch_stats"]
    )
    return model, variables["params"], stats, x, rng.integers(0, 2, 5)


@pytest.mark.parametrize("estimator", ["empirical", "exact"])
def test_a_fresh_lambda_over_the_same_model_does_not_compile_again(conv_norm, estimator):
    model, params, stats, x, y = conv_norm
    fresh = lambda: lambda p, xb: model.apply({"params": p, "batch_stats": stats}, xb)
    with counted_compiles() as first:
        expected = ld.fisher_diagonal(fresh(), params, (x, y), estimator=estimator)
    with counted_compiles() as again:
        actual = ld.fisher_diagonal(fresh(), params, (x, y), estimator=estimator)
    assert len(first) >= 1 and len(again) == 0
    _assert_close(actual, expected)


def test_another_network_of_the_architecture_reuses_the_compiled_step(conv_norm):
    """Closed-over constants (BatchNorm statistics) are arguments of the step, not baked in."""
    model, params, stats, x, y = conv_norm
    apply_with = lambda s: lambda p, xb: model.apply({"params": p, "batch_stats": s}, xb)
    ld.fisher_diagonal(apply_with(stats), params, (x, y))
    other = jax.tree.map(lambda s: 2.0 * s + 0.5, stats)
    with counted_compiles() as compiles:
        actual = ld.fisher_diagonal(apply_with(other), params, (x, y))
    assert len(compiles) == 0
    expected = ld.fisher_diagonal(apply_with(other), params, (x, y), method="vmap")
    _assert_close(actual, expected)
    first = ld.fisher_diagonal(apply_with(stats), params, (x, y))
    assert not np.allclose(first["Dense_0"]["kernel"], actual["Dense_0"]["kernel"])


def test_a_fresh_plain_function_does_not_compile_again():
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(7, 3)), jnp.float32), "b": jnp.zeros(3)}
    x, y = rng.normal(size=(4, 7)).astype(np.float32), rng.integers(0, 3, 4)
    fresh = lambda: lambda p, xb: jnp.tanh(xb @ p["w"]) + p["b"][None]
    ld.fisher_diagonal(fresh(), params, (x, y))
    with counted_compiles() as compiles:
        ld.fisher_diagonal(fresh(), params, (x, y))
    assert len(compiles) == 0


def _scaled_gradient(factor):
    """The identity with a derivative scaled by ``factor``: same program text for every factor."""

    @jax.custom_jvp
    def scaled(v):
        return v

    scaled.defjvp(lambda primals, tangents: (primals[0], factor * tangents[0]))
    return scaled


def test_programs_differing_only_in_a_custom_derivative_are_not_confused():
    rng = np.random.default_rng(2)
    params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)}
    x, y = rng.normal(size=(4, 5)).astype(np.float32), rng.integers(0, 3, 4)
    fishers = []
    for factor in (1.0, 3.0):
        rule = _scaled_gradient(factor)
        apply_fn = lambda p, xb, rule=rule: rule(xb @ p["w"])
        fishers.append(ld.fisher_diagonal(apply_fn, params, (x, y))["w"])
    np.testing.assert_allclose(np.asarray(fishers[1]), 9.0 * np.asarray(fishers[0]), rtol=1e-5)


def test_the_estimators_share_the_trace_and_the_engine(conv_norm):
    from ldnas_jax.fisher._diagonal import compiled_step
    from ldnas_jax.fisher._program import trace_program

    model, params, stats, x, _ = conv_norm
    apply_fn = lambda p, xb: model.apply({"params": p, "batch_stats": stats}, xb)
    program = trace_program(apply_fn, params, x)
    assert trace_program(apply_fn, params, x) is program  # traced once per function and shapes
    steps = [compiled_step(program, "auto", e, 1, None, None) for e in ld.fisher.ESTIMATORS]
    assert steps[0].engine is steps[1].engine is steps[2].engine  # one plan, one engine
    assert len({id(s.fn) for s in steps}) == 3  # one compiled step per estimator
