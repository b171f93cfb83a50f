"""Properties of eq. 2's normalisations: size, scale, order, and the pair reference.

The three modes (see :mod:`ldnas_jax.distances._log_det`) differ in what they keep:

============= ========== ============ ===================== =================
mode           size-free  common scale keeps relative scale   as in the paper
============= ========== ============ ===================== =================
None           yes        no           yes                   yes (absolute σ)
"sum"          no         yes          no                    the authors' code
"target_mean"  yes        yes          yes                   σ relative to F_tt
============= ========== ============ ===================== =================

Each claim of the table is a test here, including the "no"s, so a mode cannot quietly gain
or lose a property. References are independent of the library's route (which divides by the
reference): eq. 2 with σ_eff² = σ²·mean(F_tt) through dense diagonal matrices and slogdet,
through eigenvalues, and through plain Python loops over ``math.log``.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ldnas_jax.distances import (
    distance_matrix,
    distances_from_log_dets,
    flatten_fisher,
    full_log_det_distance,
    log_det_distance,
    log_det_pair,
    mean_log_det,
    pair_reference,
    task2vec_distance,
)

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

entries = st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)
# A target Fisher needs one entry > 0 for "target_mean" (there is nothing to measure σ by otherwise).
fishers = hnp.arrays(np.float64, st.integers(1, 30), elements=entries).filter(
    lambda f: f.max() > 1e-6
)
sigmas = st.floats(1e-3, 3.0)
scales = st.floats(1e-4, 1e4).filter(lambda c: abs(c - 1.0) > 1e-3)
ALL = st.sampled_from([None, "sum", "target_mean"])
SIZE_FREE = st.sampled_from([None, "target_mean"])


def loop_eq2_relative(source, target, sigma):
    """Eq. 2 with σ_eff² = σ² · (mean entry of the target), with Python loops."""
    source, target = [float(v) for v in source], [float(v) for v in target]
    s2 = sigma * sigma * math.fsum(target) / len(target)
    l_source = math.fsum(math.log(v + s2) for v in source) / len(source)
    l_target = math.fsum(math.log(v + s2) for v in target) / len(target)
    return abs(l_source - l_target)


def dense_eq2(source, target, sigma_squared):
    """(1/n) log det(diag(F_b) + σ²I) − (1/m) log det(diag(F_t) + σ²I) with dense slogdet."""
    out = []
    for f in (source, target):
        sign, value = np.linalg.slogdet(np.diag(f) + sigma_squared * np.eye(f.size))
        assert sign > 0
        out.append(value / f.size)
    return abs(out[0] - out[1])


def close(a, b):
    return a == pytest.approx(b, rel=1e-9, abs=1e-11)


# ---------------------------------------------------------------- against eq. 2 computed otherwise


@FAST
@given(fishers, fishers, sigmas)
def test_target_mean_is_eq2_with_sigma_relative_to_the_target(source, target, sigma):
    got = log_det_distance(source, target, sigma=sigma, normalize="target_mean")
    assert close(got, loop_eq2_relative(source, target, sigma))
    assert close(got, dense_eq2(source, target, sigma**2 * float(np.mean(target))))


@FAST
@given(fishers, fishers, sigmas)
def test_paper_mode_is_eq2_through_eigenvalues(source, target, sigma):
    # The eigenvalues of diag(F) + σ²I, whatever route eigvalsh takes, give log det as Σ log λ.
    l_b, l_t = (
        float(np.mean(np.log(np.linalg.eigvalsh(np.diag(f) + sigma**2 * np.eye(f.size)))))
        for f in (source, target)
    )
    assert close(log_det_distance(source, target, sigma=sigma, normalize=None), abs(l_b - l_t))


def test_target_mean_by_hand():
    # r = mean(1, 3) = 2; σ² r = 2: L_t = (log 3 + log 5)/2, L_b = log(4 + 2).
    got = log_det_distance(
        np.array([4.0]), np.array([1.0, 3.0]), sigma=1.0, normalize="target_mean"
    )
    assert got == pytest.approx(abs(math.log(6) - (math.log(3) + math.log(5)) / 2), rel=1e-14)


# ---------------------------------------------------------------- size, scale, order


@FAST
@given(fishers, fishers, sigmas, SIZE_FREE, st.integers(2, 4))
def test_duplicating_entries_changes_nothing(f, g, sigma, normalize, copies):
    bigger = np.tile(f, copies)  # the same statistics on a network `copies` times larger
    assert log_det_distance(bigger, f, sigma=sigma, normalize=normalize) == pytest.approx(
        0.0, abs=1e-12
    )
    assert close(
        log_det_distance(bigger, g, sigma=sigma, normalize=normalize),
        log_det_distance(f, g, sigma=sigma, normalize=normalize),
    )
    assert close(
        log_det_distance(g, bigger, sigma=sigma, normalize=normalize),
        log_det_distance(g, f, sigma=sigma, normalize=normalize),
    )


def test_sum_normalisation_is_not_size_free():
    f = np.random.default_rng(0).exponential(1.0, 50)
    # each entry of concat(f, f) / total is half of f's: about log 2 apart for small σ
    d = log_det_distance(np.concatenate([f, f]), f, sigma=1e-4, normalize="sum")
    assert d == pytest.approx(math.log(2), rel=1e-3)


@FAST
@given(fishers, fishers, sigmas, st.floats(1e-4, 1e4), st.sampled_from(["sum", "target_mean"]))
def test_one_scale_for_both_fishers_changes_nothing(f, g, sigma, c, normalize):
    assert close(
        log_det_distance(c * f, c * g, sigma=sigma, normalize=normalize),
        log_det_distance(f, g, sigma=sigma, normalize=normalize),
    )


def test_the_paper_mode_depends_on_the_common_scale():
    # Absolute σ: the same pair of networks at another gradient scale gets another distance.
    f, g = np.array([1.0, 2.0]), np.array([4.0, 1.0])
    small = log_det_distance(f, g, sigma=1.0, normalize=None)  # |log(2·3) − log(5·2)| / 2
    large = log_det_distance(100 * f, 100 * g, sigma=1.0, normalize=None)  # |log(201/401)| / 2
    assert small == pytest.approx(math.log(10 / 6) / 2, rel=1e-14)
    assert large == pytest.approx(math.log(401 / 201) / 2, rel=1e-14)
    assert large - small > 0.08


@FAST
@given(fishers, sigmas, scales, SIZE_FREE)
def test_relative_scale_is_kept(f, sigma, c, normalize):
    assert log_det_distance(c * f, f, sigma=sigma, normalize=normalize) > 0.0


@FAST
@given(fishers, sigmas, scales)
def test_sum_normalisation_drops_the_relative_scale(f, sigma, c):
    assert log_det_distance(c * f, f, sigma=sigma, normalize="sum") == pytest.approx(0.0, abs=1e-12)


@FAST
@given(fishers, fishers, sigmas, ALL, st.randoms(use_true_random=False))
def test_the_order_of_entries_does_not_matter(f, g, sigma, normalize, rnd):
    fp, gp = f.copy(), g.copy()
    rnd.shuffle(fp)
    rnd.shuffle(gp)
    tree = {"w": fp[: len(fp) // 2].reshape(-1, 1), "b": [fp[len(fp) // 2 :]]}
    expected = log_det_distance(f, g, sigma=sigma, normalize=normalize)
    assert close(log_det_distance(tree, gp, sigma=sigma, normalize=normalize), expected)


@FAST
@given(fishers, fishers, sigmas)
def test_unequal_sizes_and_the_reference_comes_from_the_target(source, target, sigma):
    # Only the target's mean entry sets σ: changing the source's scale moves only L_bt.
    l_b, l_t = log_det_pair(source, target, sigma=sigma, normalize="target_mean")
    l_b2, l_t2 = log_det_pair(3 * source, target, sigma=sigma, normalize="target_mean")
    assert l_t == l_t2 and l_b2 > l_b
    r = float(np.mean(target))
    assert pair_reference(target, normalize="target_mean") == pytest.approx(r, rel=1e-12)
    assert close(l_b, mean_log_det(source, sigma=sigma, normalize="target_mean", reference=r))
    assert close(l_t, math.fsum(math.log(v / r + sigma**2) for v in target) / target.size)


# ---------------------------------------------------------------- one answer through every route


@st.composite
def tables(draw):
    k = draw(st.integers(2, 4))
    sizes = [draw(st.integers(1, 12)) for _ in range(k)]
    return [
        [draw(hnp.arrays(np.float64, sizes[b], elements=st.floats(1e-6, 1e3))) for _ in range(k)]
        for b in range(k)
    ]


@FAST
@given(tables(), sigmas, ALL)
def test_matrix_pair_and_log_det_table_routes_agree(table, sigma, normalize):
    k = len(table)
    matrix = distance_matrix(table, sigma=sigma, normalize=normalize)
    refs = [pair_reference(table[t][t], normalize=normalize) for t in range(k)]
    log_dets = np.array(
        [
            [
                mean_log_det(table[b][t], sigma=sigma, normalize=normalize, reference=refs[t])
                for t in range(k)
            ]
            for b in range(k)
        ]
    )
    np.testing.assert_allclose(distances_from_log_dets(log_dets), matrix, rtol=1e-12, atol=1e-14)
    for b in range(k):
        for t in range(k):
            pair = log_det_distance(table[b][t], table[t][t], sigma=sigma, normalize=normalize)
            assert matrix[b, t] == pytest.approx(pair, rel=1e-12, abs=1e-14)


def test_full_fisher_target_mean_matches_the_diagonal_one_for_orthogonal_gradients():
    # Gradients on disjoint parameters: the full Fisher is diagonal, so the two routes agree.
    g_source = np.diag([1.0, 2.0, 3.0])
    g_target = np.diag([2.0, 0.5, 1.0])
    full = full_log_det_distance(g_source, g_target, sigma=0.3, normalize="target_mean")
    diagonal = log_det_distance(
        np.diag(g_source.T @ g_source) / 3,
        np.diag(g_target.T @ g_target) / 3,
        sigma=0.3,
        normalize="target_mean",
    )
    assert full == pytest.approx(diagonal, rel=1e-12)


def test_task2vec_target_mean_is_the_published_form():
    rng = np.random.default_rng(1)
    a, b = rng.exponential(1.0, 20), rng.exponential(5.0, 20)
    assert task2vec_distance(a, b, normalize="target_mean") == pytest.approx(
        task2vec_distance(a, b, normalize=None), rel=1e-12
    )


# ---------------------------------------------------------------- errors and dtypes


def test_the_pair_mode_needs_its_reference():
    with pytest.raises(ValueError, match="pair_reference"):
        mean_log_det(np.ones(3), normalize="target_mean")
    with pytest.raises(ValueError, match="takes no reference"):
        mean_log_det(np.ones(3), normalize="sum", reference=1.0)
    for bad in (0.0, -1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="reference"):
            mean_log_det(np.ones(3), normalize="target_mean", reference=bad)
    with pytest.raises(ValueError, match="all its entries are zero"):
        log_det_distance(np.ones(3), np.zeros(3), normalize="target_mean")
    with pytest.raises(ValueError, match="unknown normalize"):
        pair_reference(np.ones(3), normalize="mean")


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, np.float32])
def test_low_precision_fishers_are_read_in_float64(dtype):
    values = [0.5, 2.0, 0.0, 3.0]  # exact in bfloat16
    low = jnp.asarray(values, dtype)
    flat = flatten_fisher({"a": low, "b": np.asarray(low)})
    assert flat.dtype == np.float64 and flat.tolist() == values + values
    exact = np.asarray(values)
    for normalize in (None, "sum", "target_mean"):
        assert log_det_distance(low, exact[::-1], sigma=0.1, normalize=normalize) == pytest.approx(
            log_det_distance(exact, exact[::-1], sigma=0.1, normalize=normalize), rel=1e-14
        )
    assert distance_matrix([[low, low], [exact, low]], sigma=0.1).shape == (2, 2)
    assert distances_from_log_dets(jnp.zeros((2, 2), jnp.bfloat16)).dtype == np.float64


def test_complex_fishers_are_still_refused():
    with pytest.raises(TypeError, match="real numbers"):
        flatten_fisher(np.ones(2, np.complex64))
