"""Property tests (hypothesis) of the public functions on random shapes, values and garbage.

The only failures allowed are the documented ``ValueError``/``TypeError``s. References are
computed independently: plain Python loops over ``math.log``, and the closed form of the
softmax-regression Fisher in numpy. JAX-backed properties draw from a few fixed shapes so
that compilations are reused across examples.
"""

import json
import math
import string

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ldnas_jax as ld
from ldnas_jax import data, nas
from ldnas_jax.distances._log_det import normalize_fisher

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- log-det distance

positive = st.floats(1e-6, 1e3, allow_nan=False, allow_infinity=False)
fishers = hnp.arrays(np.float64, st.integers(1, 24), elements=positive)
sigmas = st.floats(1e-4, 3.0)
normalizations = st.sampled_from([None, "sum"])


def reference_mean_log_det(values, sigma, normalize):
    """(1/n) Σ log(F_i + σ²) with a plain Python loop."""
    values = [float(v) for v in values]
    if normalize == "sum":
        total = math.fsum(values)
        values = [v / total for v in values]
    return math.fsum(math.log(v + sigma * sigma) for v in values) / len(values)


@FAST
@given(fishers, sigmas, normalizations)
def test_mean_log_det_matches_a_python_loop(f, sigma, normalize):
    expected = reference_mean_log_det(f, sigma, normalize)
    assert ld.mean_log_det(f, sigma=sigma, normalize=normalize) == pytest.approx(
        expected, rel=1e-10, abs=1e-12
    )


@FAST
@given(fishers, sigmas, normalizations)
def test_distance_to_itself_is_zero(f, sigma, normalize):
    assert ld.log_det_distance(f, f, sigma=sigma, normalize=normalize) == 0.0


@FAST
@given(fishers, fishers, sigmas, normalizations)
def test_distance_is_non_negative_and_symmetric(f, g, sigma, normalize):
    d = ld.log_det_distance(f, g, sigma=sigma, normalize=normalize)
    assert d >= 0.0
    assert d == ld.log_det_distance(g, f, sigma=sigma, normalize=normalize)
    expected = abs(
        reference_mean_log_det(f, sigma, normalize) - reference_mean_log_det(g, sigma, normalize)
    )
    assert d == pytest.approx(expected, rel=1e-9, abs=1e-10)


@FAST
@given(fishers, fishers, sigmas, st.floats(1e-3, 1e3))
def test_sum_normalisation_ignores_the_overall_scale(f, g, sigma, scale):
    # F / ΣF is unchanged by F -> cF, so the distance is too.
    scaled = ld.log_det_distance(scale * f, g, sigma=sigma, normalize="sum")
    assert scaled == pytest.approx(
        ld.log_det_distance(f, g, sigma=sigma, normalize="sum"), rel=1e-9, abs=1e-10
    )
    assert math.fsum(normalize_fisher(scale * f, "sum")) == pytest.approx(1.0, rel=1e-12)


@FAST
@given(fishers, sigmas, normalizations, st.data())
def test_pytree_layout_and_order_do_not_matter(f, sigma, normalize, draw):
    cut = draw.draw(st.integers(0, len(f)))
    tree = {"a": f[:cut].reshape(-1, 1), "b": [f[cut:]]}
    flat = ld.mean_log_det(f, sigma=sigma, normalize=normalize)
    assert ld.mean_log_det(tree, sigma=sigma, normalize=normalize) == flat  # same entries, order
    permuted = draw.draw(st.permutations(list(f)))
    assert ld.mean_log_det(np.array(permuted), sigma=sigma, normalize=normalize) == (
        pytest.approx(flat, rel=1e-10, abs=1e-12)
    )


@FAST
@given(fishers, st.data(), st.sampled_from([np.nan, np.inf, -np.inf]), st.booleans())
def test_nan_or_inf_anywhere_is_a_non_finite_error(f, draw, bad, as_source):
    f = f.copy()
    f[draw.draw(st.integers(0, len(f) - 1))] = bad
    good = np.ones(3)
    pair = (f, good) if as_source else (good, f)
    with pytest.raises(ld.NonFiniteError, match="NaN or inf"):
        ld.log_det_distance(*pair)
    with pytest.raises(ld.NonFiniteError):
        ld.distance_matrix([[good, f], [good, good]])


@FAST
@given(fishers, st.data())
def test_a_negative_entry_is_an_error(f, draw):
    f = f.copy()
    f[draw.draw(st.integers(0, len(f) - 1))] = -draw.draw(positive)
    with pytest.raises(ValueError, match="negative"):
        ld.mean_log_det(f)


@st.composite
def fisher_tables(draw):
    k = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 6)) for _ in range(k)]  # network b has sizes[b] parameters
    return [
        [draw(hnp.arrays(np.float64, sizes[b], elements=positive)) for _ in range(k)]
        for b in range(k)
    ]


@FAST
@given(fisher_tables(), sigmas, normalizations)
def test_distance_matrix_is_the_pairwise_distance_with_zero_diagonal(table, sigma, normalize):
    matrix = ld.distance_matrix(table, sigma=sigma, normalize=normalize)
    k = len(table)
    assert matrix.shape == (k, k)
    assert np.all(np.diag(matrix) == 0) and np.all(matrix >= 0)
    for b in range(k):
        for t in range(k):
            expected = ld.log_det_distance(
                table[b][t], table[t][t], sigma=sigma, normalize=normalize
            )
            assert matrix[b, t] == pytest.approx(expected, rel=1e-12, abs=1e-14)


@FAST
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6)).map(lambda s: (s[0], s[0])),
        elements=st.floats(-50, 50),
    )
)
def test_distances_from_log_dets_is_the_absolute_difference_to_the_diagonal(log_dets):
    d = ld.distances.distances_from_log_dets(log_dets)
    k = len(log_dets)
    for b in range(k):
        for t in range(k):
            assert d[b, t] == abs(log_dets[b, t] - log_dets[t, t])


@FAST
@given(
    st.integers(2, 6).flatmap(
        lambda k: st.tuples(
            hnp.arrays(np.float64, (k, k), elements=st.floats(0, 10)), st.integers(0, k - 1)
        )
    )
)
def test_closest_task_is_the_first_column_minimum_other_than_the_target(case):
    distances, target = case
    best = None
    for b in range(len(distances)):
        if b != target and (best is None or distances[b, target] < distances[best, target]):
            best = b
    assert ld.closest_task(distances, target) == best
    names = [f"task{i}" for i in range(len(distances))]
    assert ld.closest_task(distances, names[target], names=names) == names[best]


# ---------------------------------------------------------------- fisher_diagonal, closed form

FEATURES, CLASSES = 3, 4
DENSE = nn.Dense(CLASSES)


def softmax_regression(params, x):
    return DENSE.apply({"params": params}, x)


def closed_form_fisher(params, x, y, estimator):
    """Σ_k w_ik (e_k − p_i)² ⊗ x_i², averaged: the per-example gradient of log p is (e_k − p) ⊗ x."""
    w = np.asarray(params["kernel"], np.float64)
    b = np.asarray(params["bias"], np.float64)
    logits = x.astype(np.float64) @ w + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    eye = np.eye(CLASSES)
    if estimator == "empirical":
        weights = eye[y]  # all weight on the label
    else:
        weights = p  # every class k, weight p_k
    # residual[i, k, c] = (e_k − p_i)_c
    residual_sq = (eye[None, :, :] - p[:, None, :]) ** 2
    bias = np.einsum("ik,ikc->ic", weights, residual_sq)  # (n, C)
    kernel = (x.astype(np.float64) ** 2)[:, :, None] * bias[:, None, :]  # (n, D, C)
    return {"bias": bias.mean(axis=0), "kernel": kernel.mean(axis=0)}


@SLOW
@given(
    st.integers(0, 2**31 - 1),
    st.lists(st.integers(1, 7), min_size=1, max_size=4),
    st.sampled_from([1, 4]),
    st.sampled_from(["vmap", "auto"]),
    st.sampled_from(["empirical", "exact"]),
)
def test_fisher_of_softmax_regression_equals_the_closed_form(
    seed, batch_sizes, chunk_size, method, estimator
):
    rng = np.random.default_rng(seed)
    params = {
        "kernel": jnp.asarray(rng.normal(size=(FEATURES, CLASSES)), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=CLASSES), jnp.float32),
    }
    n = sum(batch_sizes)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=n)
    ends = np.cumsum(batch_sizes)
    batches = [(x[e - s : e], y[e - s : e]) for s, e in zip(batch_sizes, ends)]
    fisher = ld.fisher_diagonal(
        softmax_regression,
        params,
        batches,
        estimator=estimator,
        chunk_size=chunk_size,
        method=method,
    )
    expected = closed_form_fisher(params, x, y, estimator)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(np.asarray(fisher[name]), expected[name], rtol=2e-5, atol=1e-7)


EMPTY_ITERABLES = {
    "list": list,
    "tuple": tuple,
    "iterator": lambda: iter([]),
    "generator": lambda: (pair for pair in []),
}


@pytest.mark.parametrize("name", EMPTY_ITERABLES)
def test_empty_iterables_are_a_documented_error(name):
    make = EMPTY_ITERABLES[name]
    params = {"kernel": jnp.zeros((FEATURES, CLASSES)), "bias": jnp.zeros(CLASSES)}
    with pytest.raises(ValueError, match="data is empty"):
        ld.fisher_diagonal(softmax_regression, params, make())
    with pytest.raises(ValueError, match="empty"):
        data.iterate_batches(np.zeros((0, 2)), np.zeros(0, int), 2)
    # Fishers and tables are pytrees and sequences: an empty one is a ValueError, a
    # one-shot iterator is not a pytree or a table at all.
    error = ValueError if name in ("list", "tuple") else TypeError
    with pytest.raises(error, match="empty|pytree of arrays"):
        ld.mean_log_det(make())
    with pytest.raises(error, match="empty|K×K table"):
        ld.distance_matrix(make())


# ---------------------------------------------------------------- genotypes and search spaces


@st.composite
def genotypes(draw):
    num_nodes = draw(st.integers(2, 5))
    edges = nas.num_cell_edges(num_nodes)
    cell = st.lists(st.sampled_from(nas.ALL_OPERATIONS), min_size=edges, max_size=edges)
    reduce = draw(st.none() | cell.map(tuple))
    return nas.Genotype(tuple(draw(cell)), reduce, num_nodes)


@FAST
@given(genotypes())
def test_genotype_json_round_trip(genotype):
    text = genotype.to_json()
    assert nas.Genotype.from_json(text) == genotype
    assert nas.Genotype.from_json(text.encode()) == genotype
    payload = json.loads(text)
    assert payload["num_nodes"] == genotype.num_nodes and len(payload["normal"]) == len(
        genotype.edges()
    )


def _parse_or_documented_error(text):
    try:
        result = nas.Genotype.from_json(text)
    except (ValueError, TypeError):
        return None
    assert isinstance(result, nas.Genotype)
    return result


@FAST
@given(st.text() | st.binary())
def test_garbage_text_gives_only_documented_errors(text):
    _parse_or_documented_error(text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(string.printable, max_size=8)
    | st.sampled_from(nas.ALL_OPERATIONS),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@FAST
@given(genotypes(), st.sampled_from(["num_nodes", "normal", "reduce", "extra"]), json_values)
def test_corrupted_genotype_json_gives_only_documented_errors(genotype, field, value):
    payload = json.loads(genotype.to_json())
    payload[field] = value
    parsed = _parse_or_documented_error(json.dumps(payload))
    if parsed is not None:  # the corruption happened to be a valid genotype
        assert parsed.num_nodes == payload["num_nodes"] and list(parsed.normal) == payload["normal"]


@SLOW
@given(
    st.lists(st.sampled_from(nas.ALL_OPERATIONS), min_size=1, max_size=5, unique=True),
    st.integers(2, 4),
    st.booleans(),
    st.integers(0, 2**31 - 1),
    st.sampled_from([1, 3]),
)
def test_search_space_samples_stay_in_the_space(operations, num_nodes, shared, seed, num):
    space = nas.SearchSpace(tuple(operations), num_nodes, shared_cells=shared)
    samples = space.sample(jax.random.key(seed, impl="rbg"), num)  # rbg: cheap to compile
    assert len(samples) == num
    for genotype in samples:
        assert genotype in space
        assert genotype.num_nodes == num_nodes
        assert set(genotype.normal) | set(genotype.reduce) <= set(operations)
        if shared:
            assert genotype.reduce == genotype.normal


# ---------------------------------------------------------------- data


@FAST
@given(st.integers(1, 50), st.integers(1, 20), st.none() | st.integers(0, 2**32 - 1), st.booleans())
def test_iterate_batches_covers_every_example_once_per_pass(n, batch_size, seed, drop):
    x, y = 10 * np.arange(n)[:, None], np.arange(n)
    batches = list(data.iterate_batches(x, y, batch_size, seed=seed, drop_remainder=drop))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], 10 * yb)  # rows stay paired
    seen = np.concatenate([yb for _, yb in batches]) if batches else np.zeros(0, int)
    assert len(set(seen.tolist())) == len(seen)  # nothing twice
    if drop:
        assert len(seen) == n - n % batch_size
        assert all(len(yb) == batch_size for _, yb in batches)
    else:
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))
        if seed is None:
            np.testing.assert_array_equal(seen, np.arange(n))


@st.composite
def classification_pairs(draw):
    """(x, y, num_classes) that are valid or broken in one drawn way."""
    n = draw(st.integers(0, 4))
    x_shape = draw(st.sampled_from([(n, 2, 2, 1), (n, 2, 2), (n, 3, 2, 2, 1)]))
    x = np.zeros(x_shape, draw(st.sampled_from([np.float32, np.float64, np.uint8])))
    if n and x.dtype != np.uint8 and draw(st.booleans()):
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
    num_classes = draw(st.integers(1, 4))
    y_len = draw(st.sampled_from([n, n + 1]))
    y = np.array(draw(st.lists(st.integers(-1, 4), min_size=y_len, max_size=y_len)), np.int64)
    y = y.astype(draw(st.sampled_from([np.int32, np.int64, np.float32])))
    return x, y, num_classes


@FAST
@given(classification_pairs())
def test_check_classification_data_accepts_exactly_the_valid_pairs(case):
    x, y, num_classes = case
    valid = (
        x.ndim == 4
        and len(y) == len(x) > 0
        and np.issubdtype(y.dtype, np.integer)
        and np.all((y >= 0) & (y < num_classes))
        and np.all(np.isfinite(x))
    )
    if not valid:
        with pytest.raises((ValueError, TypeError)):
            nas.check_classification_data((x, y), num_classes)
        return
    x_out, y_out = nas.check_classification_data((x, y), num_classes)
    assert x_out.dtype == np.float32 and y_out.dtype == np.int32
    np.testing.assert_array_equal(x_out, x.astype(np.float32))
    np.testing.assert_array_equal(y_out, y)
