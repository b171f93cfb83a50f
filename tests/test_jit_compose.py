"""The Fisher and the task distances compose under jax.jit and jax.vmap, equal to eager calls.

Eager calls check values (NaN, label ranges, signs) and return Python floats; under a
transformation the same functions trace, check shapes and dtypes, and return JAX values.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _small_models import MLP

import ldnas_jax as ld
from ldnas_jax.distances import (
    TASK_DISTANCES,
    distance_matrix,
    full_fisher_log_det,
    full_log_det_distance,
    mean_log_det,
    pair_reference,
)


@pytest.fixture(scope="module")
def mlp():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2, 3, 2)).astype(np.float32)
    model = MLP()  # 3 classes
    params = model.init(jax.random.key(0), x[:1])["params"]
    apply_fn = lambda p, v: model.apply({"params": p}, v)
    return apply_fn, params, x, rng.integers(0, 3, 10).astype(np.int32)


def _assert_trees_close(a, b, rtol=1e-5):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        np.testing.assert_allclose(u, v, rtol=rtol, atol=rtol * np.abs(v).max())


# ---- the Fisher ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["vmap", "layerwise"])
@pytest.mark.parametrize("estimator", ["empirical", "sampled", "exact"])
def test_fisher_under_jit_equals_the_eager_fisher(mlp, estimator, method):
    apply_fn, params, x, y = mlp
    # chunk_size 4: three chunks, the last ragged and padded, all inside the one trace
    fisher = functools.partial(
        ld.fisher_diagonal, apply_fn, estimator=estimator, method=method, chunk_size=4
    )
    key = jax.random.key(7)
    eager = fisher(params, (x, y), key=key)
    jitted = jax.jit(lambda p, xb, yb, k: fisher(p, (xb, yb), key=k))(params, x, y, key)
    _assert_trees_close(jitted, eager)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(jitted))


def test_fisher_under_jit_with_x_alone_and_one_hot_labels(mlp):
    apply_fn, params, x, y = mlp
    key = jax.random.key(1)
    sampled = jax.jit(
        lambda p, xb: ld.fisher_diagonal(apply_fn, p, xb, estimator="sampled", key=key)
    )
    _assert_trees_close(
        sampled(params, x),
        ld.fisher_diagonal(apply_fn, params, (x, None), estimator="sampled", key=key),
    )
    one_hot = jax.jit(lambda p, yb: ld.fisher_diagonal(apply_fn, p, (x, yb)))
    _assert_trees_close(
        one_hot(params, jnp.eye(3)[y]), ld.fisher_diagonal(apply_fn, params, (x, y))
    )


class DenseBN(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Dense(5)(x))
        return nn.Dense(4)(nn.relu(x))


def test_fisher_under_jit_of_a_model_whose_statistics_are_traced_too():
    # apply_fn closes over BatchNorm statistics that are themselves arguments of the jit:
    # the traced program's constants are tracers of the enclosing trace.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    model = DenseBN()
    variables = model.init(jax.random.key(0), x[:1])
    stats = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])

    def fisher(params, stats):
        apply_fn = lambda p, v: model.apply({"params": p, "batch_stats": stats}, v)
        return ld.fisher_diagonal(apply_fn, params, (x, y), estimator="exact")

    eager = fisher(variables["params"], stats)
    _assert_trees_close(jax.jit(fisher)(variables["params"], stats), eager)
    # A second trace, other statistics: the cached engine and step hold no tracer of the first.
    other = jax.tree.map(lambda s: s * 2.0, stats)
    expected = fisher(variables["params"], other)
    _assert_trees_close(jax.jit(fisher)(variables["params"], other), expected)
    assert not all(np.allclose(a, b) for a, b in zip(*map(jax.tree.leaves, (eager, expected))))


def test_fisher_under_vmap_over_a_stack_of_networks(mlp):
    apply_fn, params, x, y = mlp
    stack = jax.tree.map(lambda p: jnp.stack([p, 0.5 * p, 2.0 * p]), params)
    mapped = jax.vmap(lambda p: ld.fisher_diagonal(apply_fn, p, (x, y)))(stack)
    for i in range(3):
        one = jax.tree.map(lambda s, i=i: s[i], stack)
        _assert_trees_close(
            jax.tree.map(lambda m, i=i: m[i], mapped), ld.fisher_diagonal(apply_fn, one, (x, y))
        )


@pytest.mark.parametrize("method", ["vmap", "layerwise"])
def test_grad_through_the_fisher_equals_grad_through_a_vmap_grad_reference(method):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 4)).astype(np.float32), rng.integers(0, 3, 6)
    w = jnp.asarray(rng.normal(size=(4, 3)).astype(np.float32))
    apply_fn = lambda p, v: jnp.tanh(v @ p)

    def reference(p):  # the empirical Fisher's total, written out with vmap(grad)
        log_p = lambda q, xi, yi: jax.nn.log_softmax(apply_fn(q, xi[None])[0])[yi]
        g = jax.vmap(jax.grad(log_p), (None, 0, 0))(p, x, y)
        return jnp.sum(jnp.mean(jnp.square(g), axis=0))

    total = lambda p: jnp.sum(ld.fisher_diagonal(apply_fn, p, (x, y), method=method))
    np.testing.assert_allclose(
        np.asarray(jax.jit(jax.grad(total))(w)), np.asarray(jax.grad(reference)(w)), atol=1e-5
    )


def test_an_ewc_penalty_with_the_fisher_taken_inside_a_jitted_step(mlp):
    apply_fn, params, x, y = mlp
    optimizer = optax.sgd(0.1)

    def step(params, anchor, opt_state, xb, yb):
        # The Fisher at the anchor (the weights of the previous task), taken in the step.
        fisher = ld.fisher_diagonal(apply_fn, anchor, (xb, yb))

        def loss(p):
            logits = apply_fn(p, xb)
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            penalty = sum(
                jnp.sum(f * jnp.square(a - b))
                for f, a, b in zip(*map(jax.tree.leaves, (fisher, p, anchor)))
            )
            return nll + 50.0 * penalty

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, value

    anchor = params
    start = jax.tree.map(lambda p: p + 0.05, params)
    jitted = jax.jit(step)
    state_e = state_j = optimizer.init(start)
    p_e = p_j = start
    for _ in range(3):
        p_e, state_e, loss_e = step(p_e, anchor, state_e, x, y)
        p_j, state_j, loss_j = jitted(p_j, anchor, state_j, x, y)
        np.testing.assert_allclose(float(loss_j), float(loss_e), rtol=1e-5)
    _assert_trees_close(p_j, p_e)


def test_the_checks_of_values_still_fire_eagerly(mlp):
    apply_fn, params, x, y = mlp
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        ld.fisher_diagonal(apply_fn, params, (np.where(x > 1, np.nan, x), y))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ld.fisher_diagonal(apply_fn, params, (x, y + 3))
    bad = jax.tree.map(lambda p: p.at[0].set(jnp.inf), params)
    with pytest.raises(ld.NonFiniteError, match="params contains NaN or inf"):
        ld.fisher_diagonal(apply_fn, bad, (x, y))
    with pytest.raises(ValueError, match="negative entries"):
        ld.log_det_distance(np.array([1.0, -1.0]), np.ones(2))
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        ld.log_det_distance(np.ones(2), np.ones(2), sigma=-1.0)
    with pytest.raises(ValueError, match="all zero"):
        TASK_DISTANCES["cosine"](np.zeros(2), np.ones(2))


def test_the_checks_of_shapes_and_dtypes_fire_under_jit(mlp):
    apply_fn, params, x, y = mlp
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        jax.jit(lambda yb: ld.fisher_diagonal(apply_fn, params, (x, yb)))(y[:4])
    with pytest.raises(TypeError, match="labels must be integers"):
        jax.jit(lambda yb: ld.fisher_diagonal(apply_fn, params, (x, yb)))(y.astype(np.float32))
    with pytest.raises(ValueError, match="every batch must have example shape"):
        ld.fisher_diagonal(apply_fn, params, [(x, y), (x[:, :1], y)])
    with pytest.raises(TypeError, match="must hold real numbers"):
        jax.jit(ld.log_det_distance)(jnp.ones(2, jnp.complex64), jnp.ones(2))
    with pytest.raises(TypeError, match="sigma must be a real scalar"):
        jax.jit(lambda s: ld.log_det_distance(jnp.ones(2), jnp.ones(2), sigma=s))(jnp.ones(2))


# ---- the distances -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fishers():
    """A target's Fisher and a stack of four sources, pytrees whose heads differ in size."""
    rng = np.random.default_rng(3)
    target = {"w": rng.gamma(0.5, size=(5, 4)), "b": rng.gamma(0.5, size=(4,))}
    sources = {"w": rng.gamma(0.5, size=(4, 5, 4)), "b": rng.gamma(0.5, size=(4, 4))}
    sources["w"][:, 0, 0] = 0.0  # an entry zero in both Fishers: Task2Vec's 0/0
    target["w"][0, 0] = 0.0
    as32 = lambda t: jax.tree.map(lambda a: a.astype(np.float32), t)
    return as32(sources), as32(target)


def _source(sources, i):
    return jax.tree.map(lambda s: s[i], sources)


@pytest.mark.parametrize("name", sorted(TASK_DISTANCES))
def test_each_distance_under_jit_and_vmap_equals_the_eager_one(fishers, name):
    sources, target = fishers
    fn = TASK_DISTANCES[name]
    eager = np.array([fn(_source(sources, i), target) for i in range(4)])
    assert all(isinstance(fn(_source(sources, i), target), float) for i in range(4))
    jitted = np.array([jax.jit(fn)(_source(sources, i), target) for i in range(4)])
    mapped = jax.jit(jax.vmap(fn, in_axes=(0, None)))(sources, target)
    assert mapped.shape == (4,)
    np.testing.assert_allclose(jitted, eager, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mapped), eager, rtol=2e-5, atol=1e-6)
    assert len(set(np.round(eager, 6))) == 4  # the sources differ: a real comparison


def test_padded_heads_under_jit(fishers):
    sources, target = fishers
    small = jax.tree.map(lambda t: t[..., :3], _source(sources, 0))  # a head of 3 classes
    for name, fn in TASK_DISTANCES.items():
        np.testing.assert_allclose(
            float(jax.jit(fn)(small, target)), fn(small, target), rtol=2e-5, err_msg=name
        )


@pytest.mark.parametrize("normalize", [None, "sum", "target_mean"])
def test_log_det_pieces_under_jit_with_sigma_and_reference_traced(fishers, normalize):
    sources, target = fishers
    source = _source(sources, 1)
    reference = pair_reference(target, normalize=normalize)
    eager = mean_log_det(source, sigma=0.03, normalize=normalize, reference=reference)
    assert isinstance(eager, float)
    traced = jax.jit(lambda f, s, r: mean_log_det(f, sigma=s, normalize=normalize, reference=r))
    np.testing.assert_allclose(float(traced(source, 0.03, reference)), eager, rtol=1e-5)
    d = jax.jit(lambda a, b, s: ld.log_det_distance(a, b, sigma=s, normalize=normalize))
    value = d(source, target, 0.03)
    assert isinstance(value, jax.Array) and value.shape == ()
    expected = ld.log_det_distance(source, target, sigma=0.03, normalize=normalize)
    # d is a difference of two log-dets of a few units: float32 leaves ~1e-7 absolute
    np.testing.assert_allclose(float(value), expected, rtol=2e-5, atol=1e-6)
    # vmap over σ: one distance per σ
    sigmas = jnp.array([0.01, 0.1, 1.0])
    np.testing.assert_allclose(
        np.asarray(jax.vmap(lambda s: d(source, target, s))(sigmas)),
        [
            ld.log_det_distance(source, target, sigma=s, normalize=normalize)
            for s in (0.01, 0.1, 1.0)
        ],
        rtol=2e-5,
        atol=1e-6,
    )


def test_distance_matrix_under_jit(fishers):
    sources, _ = fishers
    scaled = lambda b, t: jax.tree.map(lambda s: s[(b + t) % 4] * (1 + b), sources)
    table = [[scaled(b, t) for t in range(3)] for b in range(3)]
    eager = distance_matrix(table, sigma=0.1)
    jitted = jax.jit(lambda tb: distance_matrix(tb, sigma=0.1))(table)
    np.testing.assert_allclose(np.asarray(jitted), eager, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("normalize", [None, "sum", "target_mean"])
def test_full_log_det_under_jit(normalize):
    rng = np.random.default_rng(4)
    g_source, g_target = rng.normal(size=(6, 9)), rng.normal(size=(6, 9)) * 0.5
    eager = full_log_det_distance(g_source, g_target, sigma=0.5, normalize=normalize)
    jitted = jax.jit(lambda a, b: full_log_det_distance(a, b, sigma=0.5, normalize=normalize))(
        jnp.asarray(g_source, jnp.float32), jnp.asarray(g_target, jnp.float32)
    )
    np.testing.assert_allclose(float(jitted), eager, rtol=1e-4)
    stack = jnp.asarray(np.stack([g_source, 2 * g_source]), jnp.float32)  # M > n side too
    mapped = jax.vmap(lambda g: full_fisher_log_det(g.T, sigma=0.5, normalize=None))(stack)
    expected = [full_fisher_log_det(g.T, sigma=0.5, normalize=None) for g in np.asarray(stack)]
    np.testing.assert_allclose(np.asarray(mapped), expected, rtol=1e-4)
