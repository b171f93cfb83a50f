"""What fisher_diagonal accepts: batch forms, label routes for a smaller head, low precision."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _small_models import MLP

import ldnas_jax as ld
from ldnas_jax._checks import is_real_number_dtype
from ldnas_jax.fisher import pad_logits, predicted_labels


@pytest.fixture(scope="module")
def mlp():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 2, 3, 2)).astype(np.float32)
    model = MLP()  # 3 classes
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    apply_fn = ld.eval_apply_fn(model, variables)
    return apply_fn, variables["params"], x, rng.integers(0, 3, 7)


def _assert_same_trees(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-6)


# ---- batch forms -------------------------------------------------------------------------------


def test_a_list_pair_a_list_of_labels_and_a_dict_are_batches(mlp):
    apply_fn, params, x, y = mlp
    expected = ld.fisher_diagonal(apply_fn, params, (x, y))
    for data in (
        (x, list(y)),
        [x, y],
        [x, list(y)],
        {"x": x, "y": y},
        [{"x": x[:3], "y": y[:3]}, (x[3:], list(y[3:]))],
    ):
        _assert_same_trees(ld.fisher_diagonal(apply_fn, params, data, chunk_size=7), expected)


def test_a_dict_without_x_and_y_names_its_keys(mlp):
    apply_fn, params, x, y = mlp
    with pytest.raises(TypeError, match=r"keys 'x' and 'y'.*\['images', 'labels'\]"):
        ld.fisher_diagonal(apply_fn, params, {"images": x, "labels": y})


@pytest.mark.parametrize("data,words", [("batches", "got str"), (7, "got int")])
def test_data_that_is_no_batch_says_what_it_got(mlp, data, words):
    apply_fn, params, _, _ = mlp
    with pytest.raises(TypeError, match=words):
        ld.fisher_diagonal(apply_fn, params, data)


@pytest.mark.parametrize("estimator", ["sampled", "exact"])
def test_x_alone_serves_the_estimators_that_need_no_labels(mlp, estimator):
    apply_fn, params, x, _ = mlp
    key = jax.random.key(3)
    expected = ld.fisher_diagonal(apply_fn, params, (x, None), estimator=estimator, key=key)
    alone = ld.fisher_diagonal(apply_fn, params, x, estimator=estimator, key=key)
    _assert_same_trees(alone, expected)


def test_x_alone_for_the_empirical_estimator_asks_for_labels(mlp):
    apply_fn, params, x, _ = mlp
    with pytest.raises(ValueError, match=r"empirical estimator needs labels; pass \(x, y\)"):
        ld.fisher_diagonal(apply_fn, params, x)


def test_an_iterable_yielding_arrays_says_what_a_batch_is(mlp):
    apply_fn, params, x, _ = mlp
    with pytest.raises(TypeError, match=r"each batch must be an \(x, y\) pair.*got ndarray"):
        ld.fisher_diagonal(apply_fn, params, iter([x, x]))


# ---- labels and the routes for a smaller head --------------------------------------------------


def test_labels_out_of_range_name_the_routes_once(mlp):
    apply_fn, params, x, _ = mlp
    with pytest.raises(ValueError) as err:
        ld.fisher_diagonal(apply_fn, params, (x, np.arange(7) % 10))
    message = str(err.value)
    assert message.startswith(r"labels must lie in [0, 3)")
    assert "labels: labels" not in message
    assert "pad_logits" in message and "predicted_labels" in message


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32, np.bool_])
def test_one_hot_labels_give_the_fisher_of_their_classes(mlp, dtype):
    apply_fn, params, x, y = mlp
    expected = ld.fisher_diagonal(apply_fn, params, (x, y))
    one_hot = np.eye(3, dtype=dtype)[y]
    _assert_same_trees(ld.fisher_diagonal(apply_fn, params, (x, one_hot)), expected)


def test_labels_that_are_not_one_hot_rows_say_to_pass_classes(mlp):
    apply_fn, params, x, y = mlp
    soft = np.full((7, 3), 1 / 3)  # soft labels must not be read as their argmax silently
    with pytest.raises(ValueError, match=r"not one-hot.*y\.argmax\(-1\)"):
        ld.fisher_diagonal(apply_fn, params, (x, soft))
    with pytest.raises(ValueError, match=r"labels must have shape \(7,\)"):
        ld.fisher_diagonal(apply_fn, params, (x, y[:, None]))


def _padded_loop_fisher(apply_fn, params, x, y, classes):
    """One jax.grad per example of log_softmax(logits ‖ zeros)[y], in float64."""
    total = jax.tree.map(lambda p: np.zeros(p.shape), params)
    for i in range(len(x)):

        def log_p(p, x_i=x[i : i + 1], y_i=y[i]):
            logits = apply_fn(p, x_i)[0]
            padded = jnp.concatenate([logits, jnp.zeros(classes - logits.shape[0])])
            return jax.nn.log_softmax(padded)[y_i]

        g = jax.grad(log_p)(params)
        total = jax.tree.map(lambda t, gi: t + np.asarray(gi, np.float64) ** 2, total, g)
    return jax.tree.map(lambda t: t / len(x), total)


def test_pad_logits_lets_a_smaller_head_take_another_tasks_labels(mlp):
    apply_fn, params, x, _ = mlp
    y10 = np.array([0, 9, 4, 2, 7, 1, 5])
    fisher = ld.fisher_diagonal(pad_logits(apply_fn, 10), params, (x, y10))
    expected = _padded_loop_fisher(apply_fn, params, x, y10, 10)
    for a, e in zip(jax.tree.leaves(fisher), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), e, rtol=1e-5, atol=1e-7 * np.abs(e).max())


def test_pad_logits_refuses_a_larger_head_and_bad_counts(mlp):
    apply_fn, params, x, y = mlp
    with pytest.raises(ValueError, match="more than num_classes=2"):
        ld.fisher_diagonal(pad_logits(apply_fn, 2), params, (x, y % 2))
    with pytest.raises(TypeError, match="num_classes must be an int"):
        pad_logits(apply_fn, 2.0)
    with pytest.raises(TypeError, match="apply_fn must be callable"):
        pad_logits(None, 3)


def test_predicted_labels_are_the_networks_own_argmax(mlp):
    apply_fn, params, x, _ = mlp
    labels = predicted_labels(apply_fn, params, x, batch_size=3)  # a ragged last batch
    expected = np.argmax(np.asarray(apply_fn(params, x)), axis=-1)
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.int32
    fisher = ld.fisher_diagonal(apply_fn, params, (x, labels))  # a valid empirical route
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(fisher))
    with pytest.raises(ValueError, match="non-empty batch"):
        predicted_labels(apply_fn, params, x[:0])


# ---- low precision -----------------------------------------------------------------------------


def test_bfloat16_is_a_real_number_dtype():
    assert is_real_number_dtype(jnp.bfloat16) and is_real_number_dtype(np.float16)
    assert not is_real_number_dtype(np.complex64)


@pytest.mark.parametrize("dtype,rtol", [(jnp.bfloat16, 5e-2), (jnp.float16, 5e-3)])
def test_half_precision_models_accumulate_in_float32(mlp, dtype, rtol):
    apply_fn, params, x, y = mlp
    reference = ld.fisher_diagonal(apply_fn, params, (x, y), estimator="exact")
    low_params = jax.tree.map(lambda p: p.astype(dtype), params)
    low = lambda p, xb: apply_fn(p, xb)  # flax computes in the parameters' dtype
    for method in ("layerwise", "vmap"):
        fisher = ld.fisher_diagonal(
            low, low_params, (x.astype(dtype), y), estimator="exact", method=method
        )
        for a, e in zip(jax.tree.leaves(fisher), jax.tree.leaves(reference)):
            assert a.dtype == jnp.float32
            a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
            assert np.linalg.norm(a - e) <= rtol * np.linalg.norm(e), method
    assert np.isfinite(
        ld.log_det_distance(jax.tree.map(lambda f: f.astype(dtype), fisher), reference)
    )


def test_bfloat16_input_with_float32_params_is_named_an_input_dtype_problem():
    # lax.conv, as Equinox's Conv calls it, refuses mixed dtypes: the input's dtype is at fault.
    def apply_fn(w, x):
        h = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")
        return h.reshape(x.shape[0], -1)

    w = jnp.ones((3, 1, 1, 1), jnp.float32)
    x = np.ones((4, 1, 1, 1), jnp.bfloat16)
    with pytest.raises(TypeError, match=r"x has dtype bfloat16 but the params are float32.*astype"):
        ld.fisher_diagonal(apply_fn, w, (x, np.zeros(4, int)))
    fisher = ld.fisher_diagonal(apply_fn, w, (x.astype(np.float32), np.zeros(4, int)))
    assert fisher.shape == w.shape  # the fix the message names works


def test_params_that_do_not_fit_still_blame_the_params(mlp):
    apply_fn, params, x, y = mlp
    wrong = jax.tree.map(lambda p: p[..., :1], params)
    with pytest.raises(ValueError, match="params do not fit apply_fn"):
        ld.fisher_diagonal(apply_fn, wrong, (x, y))


# ---- Equinox modules passed whole --------------------------------------------------------------


def test_an_equinox_module_passed_whole_gives_its_partitions_fisher():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(4, 3, 8, 1, activation=jax.nn.gelu, key=jax.random.key(0))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 4)).astype(np.float32), rng.integers(0, 3, 9)
    whole = ld.fisher_diagonal(lambda m, v: jax.vmap(m)(v), model, (x, y))

    arrays, static = eqx.partition(model, eqx.is_inexact_array)  # the documented recipe
    expected = ld.fisher_diagonal(lambda p, v: jax.vmap(eqx.combine(p, static))(v), arrays, (x, y))
    assert jax.tree.structure(whole) == jax.tree.structure(expected)
    _assert_same_trees(whole, expected)


def test_params_without_any_float_array_say_so():
    with pytest.raises(TypeError, match="no floating-point array"):
        ld.fisher_diagonal(lambda p, x: x, {"act": jnp.tanh}, (np.ones((2, 3)), [0, 1]))
