"""``method="auto"`` off the CPU: both engines timed once per program, the faster one kept.

No GPU here, so the tests put "cpu" among the timed backends; the CPU default (no timing) is
checked as it is.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldnas_jax.fisher import _diagonal, _engine_choice, engine_timings, fisher_diagonal

MODEL = nn.Sequential([nn.Dense(6), nn.tanh, nn.Dense(3)])
X = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
PARAMS = MODEL.init(jax.random.key(0), X)["params"]


def apply_fn(p, x):
    return MODEL.apply({"params": p}, x)


@pytest.fixture(autouse=True)
def fresh_timings():
    _engine_choice.clear_engine_timings()
    yield
    _engine_choice.clear_engine_timings()


@pytest.fixture
def timed_cpu(monkeypatch):
    monkeypatch.setattr(_engine_choice, "TIMED_BACKENDS", frozenset({"cpu"}))


def reference():
    return fisher_diagonal(apply_fn, PARAMS, (X, Y), method="vmap")


def assert_same(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)


def test_on_the_cpu_auto_times_nothing():
    assert not _engine_choice.times_engines()
    assert_same(fisher_diagonal(apply_fn, PARAMS, (X, Y)), reference())
    assert engine_timings() == {}


def test_a_timed_backend_times_both_engines_once_per_program(timed_cpu):
    assert_same(fisher_diagonal(apply_fn, PARAMS, (X, Y), chunk_size=4), reference())
    timings = engine_timings()
    assert len(timings) == 1
    ((key, timing),) = timings.items()
    assert key[0] == "cpu" and key[-1] == 4  # backend ... chunk
    assert timing.vmap_seconds > 0 and timing.layerwise_seconds > 0
    # The same model again, through a fresh function: the choice is read, not timed again.
    again = fisher_diagonal(
        lambda p, x: MODEL.apply({"params": p}, x), PARAMS, (X, Y), chunk_size=4
    )
    assert_same(again, reference())
    assert engine_timings() == timings


def test_the_chosen_engine_runs_every_chunk(timed_cpu, monkeypatch):
    expected = reference()
    ran = []
    real_compiled_step = _diagonal.compiled_step

    def counting(program, method, *args):
        step = real_compiled_step(program, method, *args)
        if method != "vmap":
            return step

        def counted(*call):
            ran.append(call[2].shape[0])
            return step.fn(*call)

        return step._replace(fn=counted)

    monkeypatch.setattr(_diagonal, "compiled_step", counting)
    monkeypatch.setattr(_diagonal, "faster_engine", lambda key, steps, args: "vmap")
    assert_same(fisher_diagonal(apply_fn, PARAMS, (X, Y), chunk_size=4), expected)
    assert ran == [4, 4, 4]  # 10 rows in chunks of 4, the last padded: all on the vmap engine


def test_the_faster_engine_is_the_one_with_fewer_seconds():
    assert _engine_choice.EngineTiming(0.2, 0.1).method == "layerwise"
    assert _engine_choice.EngineTiming(0.1, 0.2).method == "vmap"
    assert _engine_choice.EngineTiming(0.1, 0.1).method == "layerwise"  # a tie: less memory


def test_under_jit_nothing_is_timed_and_the_plan_s_rule_stands(timed_cpu):
    jitted = jax.jit(lambda p: fisher_diagonal(apply_fn, p, (jnp.asarray(X), jnp.asarray(Y))))
    assert_same(jitted(PARAMS), reference())
    assert engine_timings() == {}
