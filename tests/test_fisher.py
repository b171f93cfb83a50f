"""fisher_diagonal against a plain per-example Python loop of jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldnas_jax as ld
from _small_models import MLP, ConvBN


def _setup(model, shape, n=9, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    variables = ld.train.init_variables(model, jax.random.key(seed), x)
    if "batch_stats" in variables:  # non-trivial running statistics, so eval mode matters
        variables["batch_stats"] = jax.tree.map(
            lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32),
            variables["batch_stats"],
        )
    apply_fn = ld.eval_apply_fn(model, variables)
    classes = apply_fn(variables["params"], x[:1]).shape[-1]
    y = rng.integers(0, classes, size=n)
    return apply_fn, variables["params"], x, y, classes


def _loop_fisher(apply_fn, params, x, y, classes, estimator):
    """One jax.grad per example (and per class for 'exact'), summed in float64."""
    total = jax.tree.map(lambda p: np.zeros(p.shape, np.float64), params)
    for i in range(x.shape[0]):
        logp = lambda p, c: jax.nn.log_softmax(apply_fn(p, x[i : i + 1])[0])[c]
        if estimator == "empirical":
            terms = [(1.0, y[i])]
        else:
            probs = np.asarray(jax.nn.softmax(apply_fn(params, x[i : i + 1])[0]), np.float64)
            terms = list(zip(probs, range(classes)))
        for weight, c in terms:
            g = jax.grad(logp)(params, c)
            total = jax.tree.map(
                lambda t, gi: t + weight * np.asarray(gi, np.float64) ** 2, total, g
            )
    return jax.tree.map(lambda t: t / x.shape[0], total)


def _assert_close(actual, expected, rtol=1e-5):
    for (path, a), e in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        a = np.asarray(a, np.float64)
        rel = np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30)
        assert rel <= rtol, f"{jax.tree_util.keystr(path)}: relative error {rel:.2e}"
        np.testing.assert_allclose(a, e, rtol=1e-3, atol=1e-6 * np.abs(e).max())


MODELS = [(MLP(), (2, 3, 2)), (ConvBN(), (6, 6, 2))]


@pytest.mark.parametrize("model,shape", MODELS, ids=["mlp", "cnn_batchnorm"])
@pytest.mark.parametrize("estimator", ["empirical", "exact"])
@pytest.mark.parametrize("method", ["vmap", "auto"])
def test_matches_per_example_loop(model, shape, estimator, method):
    apply_fn, params, x, y, classes = _setup(model, shape)
    expected = _loop_fisher(apply_fn, params, x, y, classes, estimator)
    actual = ld.fisher_diagonal(apply_fn, params, (x, y), estimator=estimator, method=method)
    _assert_close(actual, expected)


def test_is_not_the_squared_batch_mean_gradient():
    apply_fn, params, x, y, _ = _setup(MLP(), (2, 3, 2))
    fisher = ld.fisher_diagonal(apply_fn, params, (x, y))
    mean_grad = jax.grad(
        lambda p: jnp.mean(
            jax.vmap(lambda xi, yi: jax.nn.log_softmax(apply_fn(p, xi[None])[0])[yi])(x, y)
        )
    )(params)
    ratio = sum(float(jnp.sum(f)) for f in jax.tree.leaves(fisher)) / sum(
        float(jnp.sum(g**2)) for g in jax.tree.leaves(mean_grad)
    )
    assert ratio > 1.5  # per-example squares exceed the square of the mean (Jensen)


def test_independent_of_batching_with_ragged_batches():
    apply_fn, params, x, y, _ = _setup(ConvBN(), (6, 6, 2), n=11)
    whole = ld.fisher_diagonal(apply_fn, params, (x, y))
    batches = [(x[:4], y[:4]), (x[4:9], y[4:9]), (x[9:], y[9:])]
    for chunk in (None, 3):
        streamed = ld.fisher_diagonal(apply_fn, params, iter(batches), chunk_size=chunk)
        _assert_close(streamed, jax.tree.map(lambda a: np.asarray(a, np.float64), whole), rtol=2e-6)


def test_sampled_approaches_exact_as_samples_grow():
    apply_fn, params, x, y, _ = _setup(MLP(), (2, 3, 2), n=6)
    exact = ld.distances.flatten_fisher(ld.fisher_diagonal(apply_fn, params, (x, None), estimator="exact"))
    errors = []
    for samples in (1, 16, 1024):
        sampled = ld.fisher_diagonal(
            apply_fn,
            params,
            (x, None),
            estimator="sampled",
            key=jax.random.key(3),
            num_samples=samples,
        )
        errors.append(np.linalg.norm(ld.distances.flatten_fisher(sampled) - exact) / np.linalg.norm(exact))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1


def test_sampled_is_independent_of_batching():
    apply_fn, params, x, y, _ = _setup(MLP(), (2, 3, 2), n=7)
    k = jax.random.key(5)
    whole = ld.fisher_diagonal(apply_fn, params, (x, y), estimator="sampled", key=k)
    split = ld.fisher_diagonal(
        apply_fn, params, [(x[:3], y[:3]), (x[3:], y[3:])], estimator="sampled", key=k, chunk_size=2
    )
    _assert_close(split, jax.tree.map(lambda a: np.asarray(a, np.float64), whole), rtol=2e-6)


# ---- bad input -------------------------------------------------------------------------------


@pytest.fixture
def mlp_setup():
    return _setup(MLP(), (2, 3, 2))


def test_mismatched_shapes_error(mlp_setup):
    apply_fn, params, x, y, _ = mlp_setup
    with pytest.raises(ValueError, match="labels must have shape"):
        ld.fisher_diagonal(apply_fn, params, (x, y[:-1]))
    with pytest.raises(ValueError, match="example shape"):
        ld.fisher_diagonal(apply_fn, params, [(x, y), (x[:, :1], y)])


def test_labels_out_of_range_error(mlp_setup):
    apply_fn, params, x, y, classes = mlp_setup
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ld.fisher_diagonal(apply_fn, params, (x, np.full_like(y, classes)))


def test_empty_data_error(mlp_setup):
    apply_fn, params, x, y, _ = mlp_setup
    with pytest.raises(ValueError, match="empty"):
        ld.fisher_diagonal(apply_fn, params, iter([]))
    with pytest.raises(ValueError, match="non-empty"):
        ld.fisher_diagonal(apply_fn, params, (x[:0], y[:0]))


def test_params_that_do_not_fit_the_model_error(mlp_setup):
    apply_fn, params, x, y, _ = mlp_setup
    wrong = jax.tree.map(lambda p: jnp.zeros((*p.shape[:-1], p.shape[-1] + 1)), params)
    with pytest.raises(ValueError, match="params do not fit"):
        ld.fisher_diagonal(apply_fn, wrong, (x, y))


def test_nan_inputs_and_bad_options_error(mlp_setup):
    apply_fn, params, x, y, _ = mlp_setup
    with pytest.raises(ValueError, match="NaN"):
        ld.fisher_diagonal(apply_fn, params, (np.full_like(x, np.nan), y))
    with pytest.raises(ValueError, match="unknown estimator"):
        ld.fisher_diagonal(apply_fn, params, (x, y), estimator="kfac")
    with pytest.raises(ValueError, match="needs a PRNG key"):
        ld.fisher_diagonal(apply_fn, params, (x, y), estimator="sampled")
    with pytest.raises(TypeError, match="integers"):
        ld.fisher_diagonal(apply_fn, params, (x, y.astype(np.float32)))
