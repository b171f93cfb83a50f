"""The task-distance family against independent references: dense slogdet and square root, loops."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
from _small_models import MLP

import ldnas_jax as ld
from ldnas_jax.data import Split
from ldnas_jax.distances import (
    TASK_DISTANCES,
    closest_tasks,
    family_distance_matrices,
    full_fisher_log_det,
    full_log_det_distance,
    gradient_reference,
    make_task_distances,
)
from ldnas_jax.distances._frechet import aligned_fishers, frechet_task_distance
from ldnas_jax.distances._task2vec import cosine_distance, task2vec_distance
from ldnas_jax.fisher import per_example_gradients
from ldnas_jax.models import registry
from ldnas_jax.tasks import (
    TaskNetwork,
    fisher_on_task,
    full_log_det_task_distances,
    gradients_on_task,
    pair_fishers,
    pair_key,
    task_family_distances,
)


@pytest.fixture(scope="module")
def mlp_problem():
    """A 241-parameter MLP and M = 20 labelled examples."""
    model = MLP()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 30)).astype(np.float32)
    y = rng.integers(0, 3, 20).astype(np.int32)
    params = model.init(jax.random.key(0), x[:1])["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    g = per_example_gradients(apply_fn, params, x, y, chunk_size=8)  # ragged last chunk
    return apply_fn, params, x, y, g


def _dense_mean_log_det(g, sigma, normalize):
    """(1/n) log det(σ²I_n + GᵀG/c) with the n×n matrix built explicitly."""
    g = np.asarray(g, np.float64)
    m, n = g.shape
    c = m if normalize is None else np.trace(g.T @ g)
    sign, value = np.linalg.slogdet(sigma**2 * np.eye(n) + g.T @ g / c)
    assert sign > 0
    return value / n


# ---------------------------------------------------------------- full Fisher


def test_per_example_gradients_match_a_loop_of_grad(mlp_problem):
    apply_fn, params, x, y, g = mlp_problem
    assert g.shape == (20, 241)

    def log_p(p, x_i, y_i):
        return jax.nn.log_softmax(apply_fn(p, x_i[None])[0])[y_i]

    grad = jax.jit(jax.grad(log_p))
    for i in range(len(x)):
        leaves = jax.tree.leaves(grad(params, x[i], y[i]))
        row = np.concatenate([np.ravel(leaf) for leaf in leaves])
        np.testing.assert_allclose(g[i], row, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("normalize", [None, "sum"])
@pytest.mark.parametrize("sigma", [1e-3, 0.05, 1.0])
def test_gram_route_equals_dense_slogdet(mlp_problem, sigma, normalize):
    g = mlp_problem[-1]
    expected = _dense_mean_log_det(g, sigma, normalize)
    got = full_fisher_log_det(g, sigma=sigma, normalize=normalize)
    assert got == pytest.approx(expected, rel=1e-8)


def test_more_examples_than_parameters_uses_the_parameter_side():
    model = nn.Dense(3)
    x = np.random.default_rng(3).normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40, dtype=np.int32) % 3
    params = model.init(jax.random.key(0), x[:1])["params"]
    g = per_example_gradients(lambda p, x: model.apply({"params": p}, x), params, x, y)
    assert g.shape == (40, 15)
    for sigma in (1e-2, 0.5):
        got = full_fisher_log_det(g, sigma=sigma, normalize=None)
        assert got == pytest.approx(_dense_mean_log_det(g, sigma, None), rel=1e-8)


def test_full_fisher_diagonal_is_the_diagonal_fisher(mlp_problem):
    apply_fn, params, x, y, g = mlp_problem
    diag = ld.fisher_diagonal(apply_fn, params, (x, y), estimator="empirical", method="vmap")
    flat = ld.distances.flatten_fisher(diag)  # fisher_diagonal is a mean over examples
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(np.diag(g64.T @ g64) / len(x), flat, rtol=1e-5, atol=1e-9)
    # Hadamard: the full log-det never exceeds the diagonal one (same normalisation)
    for normalize in (None, "sum"):
        full = full_fisher_log_det(g, sigma=1e-2, normalize=normalize)
        diagonal = ld.mean_log_det(diag, sigma=1e-2, normalize=normalize)
        assert full < diagonal


def test_full_distance_and_gradients_computed_in_place(mlp_problem):
    apply_fn, params, x, y, g = mlp_problem
    other = 3.0 * g[:12] + 0.1
    expected = abs(_dense_mean_log_det(g, 0.1, None) - _dense_mean_log_det(other, 0.1, None))
    got = full_log_det_distance(g, other, sigma=0.1, normalize=None)
    assert got == pytest.approx(expected, rel=1e-8)
    in_place = full_fisher_log_det(
        per_example_gradients(apply_fn, params, x, y), sigma=0.1, normalize=None
    )
    assert in_place == pytest.approx(full_fisher_log_det(g, sigma=0.1, normalize=None), rel=1e-6)
    with pytest.raises(TypeError, match="per_example_gradients"):
        full_fisher_log_det((apply_fn, params, x, y), sigma=0.1)


def test_full_fisher_bad_input(mlp_problem):
    apply_fn, params, x, y, g = mlp_problem
    with pytest.raises(ValueError, match="sigma"):
        full_fisher_log_det(g, sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        full_fisher_log_det(g, sigma=float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        full_fisher_log_det(np.where(np.eye(20, 241) > 0, np.nan, g))
    with pytest.raises(ValueError, match="matrix"):
        full_fisher_log_det(g[0])
    with pytest.raises(ValueError, match="empty"):
        full_fisher_log_det(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="all zero"):
        full_fisher_log_det(np.zeros((3, 5)), normalize="sum")
    with pytest.raises(ValueError, match="normalize"):
        full_fisher_log_det(g, normalize="max")
    with pytest.raises(ValueError, match="max_examples"):
        full_fisher_log_det(g, max_examples=10)
    with pytest.raises(ValueError, match="memory guard"):
        per_example_gradients(apply_fn, params, x, y, max_examples=10)
    with pytest.raises(ValueError, match="labels"):
        per_example_gradients(apply_fn, params, x, np.full(20, 3, np.int32))
    with pytest.raises(ValueError, match="empty"):
        per_example_gradients(apply_fn, params, x[:0], y[:0])
    with pytest.raises(ValueError, match="examples but y has"):
        per_example_gradients(apply_fn, params, x, y[:5])
    with pytest.raises(ValueError, match="do not fit"):
        per_example_gradients(apply_fn, params, x[:, :7], y)


# ---------------------------------------------------------------- Fréchet


def _psd_sqrt(matrix):
    """The square root of a symmetric PSD matrix from its eigendecomposition (scipy's eigh).

    Not ``scipy.linalg.sqrtm``: from scipy 1.18 it returns NaN for a singular matrix, and a
    padded head's Fisher has zero rows."""
    values, vectors = scipy.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _frechet_dense(fa, fb):
    """The definition with dense matrices: F^{1/2}/‖F^{1/2}‖_F."""
    ra = _psd_sqrt(np.diag(fa))
    rb = _psd_sqrt(np.diag(fb))
    diff = ra / np.linalg.norm(ra, "fro") - rb / np.linalg.norm(rb, "fro")
    return np.linalg.norm(diff, "fro") / np.sqrt(2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_matches_dense_definition(seed):
    rng = np.random.default_rng(seed)
    fa, fb = rng.exponential(1e-3, 40) ** 2, rng.exponential(1e-2, 40) ** 2
    fa[::7] = 0.0  # zero Fisher entries are allowed
    expected = _frechet_dense(fa, fb)
    assert frechet_task_distance(fa, fb) == pytest.approx(expected, rel=1e-10)
    # squared: the Hellinger form 1 − Σ √(p q), an independent identity
    p, q = fa / fa.sum(), fb / fb.sum()
    assert frechet_task_distance(fa, fb, squared=True) == pytest.approx(
        1 - np.sum(np.sqrt(p * q)), rel=1e-10
    )
    assert frechet_task_distance(17.0 * fa, fb) == pytest.approx(expected, rel=1e-10)
    assert frechet_task_distance(fa, fa) == 0.0


def test_frechet_pads_a_smaller_head():
    rng = np.random.default_rng(5)
    small = {
        "conv": rng.random((3, 4)),
        "head": {"kernel": rng.random((4, 2)), "bias": rng.random(2)},
    }
    big = {
        "conv": rng.random((3, 4)),
        "head": {"kernel": rng.random((4, 5)), "bias": rng.random(5)},
    }
    # leaves in jax order: conv, head/bias, head/kernel; zero Fisher for the missing classes
    pad_kernel = np.concatenate([small["head"]["kernel"], np.zeros((4, 3))], axis=1)
    flat_small = np.concatenate(
        [small["conv"].ravel(), np.r_[small["head"]["bias"], np.zeros(3)], pad_kernel.ravel()]
    )
    flat_big = np.concatenate(
        [big["conv"].ravel(), big["head"]["bias"], big["head"]["kernel"].ravel()]
    )
    a, b = aligned_fishers(small, big)
    np.testing.assert_array_equal(a, flat_small)
    np.testing.assert_array_equal(b, flat_big)
    assert frechet_task_distance(small, big) == pytest.approx(
        _frechet_dense(flat_small, flat_big), rel=1e-10
    )


def test_frechet_bad_input():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_task_distance(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="different structures"):
        frechet_task_distance({"a": np.ones(3)}, {"b": np.ones(3)})
    with pytest.raises(ValueError, match="NaN"):
        frechet_task_distance(np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(ValueError, match="negative"):
        frechet_task_distance(np.array([1.0, -1.0]), np.ones(2))
    with pytest.raises(ValueError, match="all zero"):
        frechet_task_distance(np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="empty"):
        frechet_task_distance({}, {})


# ---------------------------------------------------------------- Task2Vec


@pytest.mark.parametrize("normalize", [None, "sum"])
def test_task2vec_matches_scipy_on_loop_built_ratios(normalize):
    rng = np.random.default_rng(7)
    fa, fb = rng.exponential(1.0, 30), rng.exponential(5.0, 30)
    fa[3] = fb[3] = 0.0  # 0/0: left out
    fa[5] = 0.0
    sa = fa.sum() if normalize else 1.0
    sb = fb.sum() if normalize else 1.0
    u, v = [], []
    for i in range(30):
        a_i, b_i = fa[i] / sa, fb[i] / sb
        if a_i + b_i > 0:
            u.append(a_i / (a_i + b_i))
            v.append(b_i / (a_i + b_i))
    expected = scipy.spatial.distance.cosine(u, v)
    assert task2vec_distance(fa, fb, normalize=normalize) == pytest.approx(expected, rel=1e-10)
    assert task2vec_distance(fb, fa, normalize=normalize) == pytest.approx(expected, rel=1e-10)


def test_cosine_matches_scipy_and_is_scale_free():
    rng = np.random.default_rng(8)
    fa, fb = rng.random(25), rng.random(25)
    expected = scipy.spatial.distance.cosine(fa, fb)
    assert cosine_distance(fa, fb) == pytest.approx(expected, rel=1e-10)
    assert cosine_distance(9.0 * fa, fb) == pytest.approx(expected, rel=1e-10)


def test_task2vec_bad_input():
    with pytest.raises(ValueError, match="all zero"):
        task2vec_distance(np.zeros(3), np.zeros(3), normalize=None)
    with pytest.raises(ValueError, match="all zero"):
        cosine_distance(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="shape mismatch"):
        task2vec_distance(np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        cosine_distance(np.array([np.inf, 1.0]), np.ones(2))


# ---------------------------------------------------------------- K×K matrices


def _random_grid(k, seed=0):
    rng = np.random.default_rng(seed)
    return {(b, t): rng.exponential(10.0 ** -(b + t % 2), 12) for b in range(k) for t in range(k)}


@pytest.mark.parametrize("order", ["pair_fishers", "shuffled"])
def test_family_matrices_equal_a_direct_loop(order):
    k = 3
    grid = _random_grid(k)
    keys = [(b, t) for t in range(k) for b in range(k)]
    if order == "shuffled":
        keys = [keys[i] for i in np.random.default_rng(1).permutation(len(keys))]
    matrices = family_distance_matrices(((b, t, grid[b, t]) for b, t in keys), k)
    assert set(matrices) == set(TASK_DISTANCES)
    for name, fn in TASK_DISTANCES.items():
        for b, t in itertools.product(range(k), repeat=2):
            expected = 0.0 if b == t else fn(grid[b, t], grid[t, t])
            assert matrices[name][b, t] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # the log-det matrix is eq. 2's
    dense = ld.distance_matrix([[grid[b, t] for t in range(k)] for b in range(k)])
    np.testing.assert_allclose(matrices["log_det"], dense, rtol=1e-12)


def test_registry_options_reach_the_distances():
    grid = _random_grid(2, seed=3)
    custom = make_task_distances(sigma=0.2, normalize=None)
    matrices = family_distance_matrices(
        ((b, t, f) for (b, t), f in grid.items()), 2, distances=custom
    )
    assert matrices["log_det"][1, 0] == pytest.approx(
        ld.log_det_distance(grid[1, 0], grid[0, 0], sigma=0.2, normalize=None)
    )
    assert matrices["task2vec"][0, 1] == pytest.approx(
        task2vec_distance(grid[0, 1], grid[1, 1], normalize=None)
    )


def test_family_matrices_bad_input():
    grid = _random_grid(2)
    triples = [(b, t, f) for (b, t), f in grid.items()]
    with pytest.raises(ValueError, match="missing"):
        family_distance_matrices(triples[:-1], 2)
    with pytest.raises(ValueError, match="twice"):
        family_distance_matrices(triples + triples[:1], 2)
    with pytest.raises(ValueError, match="out of range"):
        family_distance_matrices([(2, 0, grid[0, 0])], 2)
    with pytest.raises(TypeError, match="triple"):
        family_distance_matrices([(0, 0)], 2)
    with pytest.raises(ValueError, match="num_tasks"):
        family_distance_matrices(triples, 0)
    with pytest.raises(ValueError, match="no distances"):
        family_distance_matrices(triples, 2, distances={})


def test_closest_tasks_is_the_column_argmin():
    rng = np.random.default_rng(4)
    names = ["a", "b", "c", "d"]
    matrices = {"x": rng.random((4, 4)), "y": rng.random((4, 4))}
    picks = closest_tasks(matrices, names)
    for name, m in matrices.items():
        for t in range(4):
            best = min((b for b in range(4) if b != t), key=lambda b: m[b, t])
            assert picks[name][names[t]] == names[best]


# ---------------------------------------------------------------- task level


class TinyBN(nn.Module):
    """Conv → BatchNorm → ReLU → mean → Dense: BatchNorm state without SmallVGG's compile time."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(2, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(self.num_classes)(jnp.mean(nn.relu(x), axis=(1, 2)))


@pytest.fixture(scope="module")
def tiny_tasks():
    """Two ε-networks of a registered tiny model (2 and 3 classes) and 6×6 target splits."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._BUILDERS, "tiny_bn", TinyBN)
        networks, splits = [], []
        for i, classes in enumerate((2, 3)):
            variables = TinyBN(classes).init(jax.random.key(i), jnp.zeros((1, 6, 6, 3)))
            stats = jax.tree.map(lambda v: v + 0.5, variables["batch_stats"])  # not the identity
            variables = {"params": variables["params"], "batch_stats": stats}
            networks.append(TaskNetwork(f"T{i}", "tiny_bn", classes, variables, 1.0, 0.1))
            x = np.random.default_rng(10 + i).random((12, 6, 6, 3), np.float32)
            splits.append(Split(x, np.arange(12, dtype=np.int32) % classes))
        yield networks, splits, [2, 3]


def test_task_gradients_agree_with_the_diagonal_fisher_on_task(tiny_tasks):
    networks, splits, classes = tiny_tasks
    # the 2-class network on the 3-class task: its head is padded, as fisher_on_task does
    g = gradients_on_task(networks[0], splits[1], classes[1], max_examples=10)
    params = networks[0].variables["params"]
    assert g.shape == (10, sum(np.size(p) for p in jax.tree.leaves(params)))
    diag = fisher_on_task(networks[0], splits[1], classes[1], max_examples=10)
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(
        np.diag(g64.T @ g64) / 10, ld.distances.flatten_fisher(diag), rtol=1e-4, atol=1e-10
    )
    # label_mode="predicted": N_b's own labels on X_t, in both routes
    g = gradients_on_task(networks[1], splits[0], classes[0], label_mode="predicted").astype(float)
    diag = fisher_on_task(networks[1], splits[0], classes[0], label_mode="predicted")
    np.testing.assert_allclose(
        np.diag(g.T @ g) / 12, ld.distances.flatten_fisher(diag), rtol=1e-4, atol=1e-10
    )


def test_pair_fishers_yields_each_columns_own_fisher_first_with_per_pair_keys(tiny_tasks):
    networks, splits, classes = tiny_tasks
    key = jax.random.key(5)
    options = dict(estimator="sampled", max_examples=6)
    stream = list(pair_fishers(networks, splits, classes, key=key, progress=False, **options))
    assert [(b, t) for b, t, _ in stream] == [(0, 0), (1, 0), (1, 1), (0, 1)]
    for b, t, fisher in stream:  # each pair draws with the key of its two task names
        pair = pair_key(key, networks[b].task, networks[t].task)
        expected = fisher_on_task(networks[b], splits[t], classes[t], key=pair, **options)
        for got, want in zip(jax.tree.leaves(fisher), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(got, want)


def test_task_family_distances_end_to_end(tiny_tasks):
    networks, splits, classes = tiny_tasks
    family = task_family_distances(
        networks,
        splits,
        classes,
        full_fisher=True,
        full_max_examples=6,
        max_examples=6,
        progress=False,
    )
    assert family.names == ("T0", "T1")
    assert set(family.matrices) == {*TASK_DISTANCES, "log_det_full"}
    grid = {
        (b, t): f
        for b, t, f in pair_fishers(networks, splits, classes, max_examples=6, progress=False)
    }
    eq2 = ld.distance_matrix([[grid[b, t] for t in range(2)] for b in range(2)])
    np.testing.assert_allclose(family.matrices["log_det"], eq2, rtol=1e-10)
    for name, fn in TASK_DISTANCES.items():
        for b, t in ((0, 1), (1, 0)):
            assert family.matrices[name][b, t] == pytest.approx(fn(grid[b, t], grid[t, t]))
    gradients = {
        (b, t): gradients_on_task(networks[b], splits[t], classes[t], max_examples=6)
        for b in range(2)
        for t in range(2)
    }
    # The default normalisation measures σ against each column's own G_tt.
    references = [gradient_reference(gradients[t, t]) for t in range(2)]
    log_dets = np.array(
        [
            [full_fisher_log_det(gradients[b, t], reference=references[t]) for t in range(2)]
            for b in range(2)
        ]
    )
    np.testing.assert_allclose(
        family.matrices["log_det_full"], np.abs(log_dets - np.diag(log_dets)), rtol=1e-10
    )
    for matrix in family.matrices.values():
        np.testing.assert_array_equal(np.diag(matrix), 0.0)
    assert family.closest()["frechet"] == {"T0": "T1", "T1": "T0"}


def test_task_level_bad_input(tiny_tasks):
    networks, splits, classes = tiny_tasks
    with pytest.raises(ValueError, match="label_mode"):
        gradients_on_task(networks[0], splits[0], 2, label_mode="guess")
    with pytest.raises(ValueError, match="empty"):
        gradients_on_task(networks[0], Split(splits[0].x[:0], splits[0].y[:0]), 2)
    with pytest.raises(ValueError, match="max_examples"):
        gradients_on_task(networks[0], splits[0], 2, max_examples=0)
    with pytest.raises(ValueError, match="one target split"):
        full_log_det_task_distances(networks, splits[:1], classes, progress=False)


def test_full_log_det_task_distances_take_each_column_s_reference(tiny_tasks):
    networks, splits, classes = tiny_tasks
    full = full_log_det_task_distances(
        networks, splits, classes, normalize="target_mean", max_examples=6, progress=False
    )
    grads = {
        (b, t): gradients_on_task(networks[b], splits[t], classes[t], max_examples=6)
        for b in range(2)
        for t in range(2)
    }
    for b, t in ((0, 1), (1, 0)):
        expected = full_log_det_distance(grads[b, t], grads[t, t], normalize="target_mean")
        assert full.matrix[b, t] == pytest.approx(expected, rel=1e-10)


def test_closest_task_by_name_without_names_says_to_pass_them():
    d = np.array([[0.0, 0.3], [0.2, 0.0]])
    with pytest.raises(ValueError, match=r"no names were given: pass names=\[\.\.\.\]"):
        ld.closest_task(d, "A")
    assert ld.closest_task(d, "A", names=["A", "B"]) == "B" and ld.closest_task(d, 0) == 1
