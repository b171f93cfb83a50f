"""log_det_distance against eq. 2 computed independently with dense numpy matrices."""

import numpy as np
import pytest

import ldnas_jax as ld


def _eq2_dense(f_source, f_target, sigma):
    """Eq. 2 with dense diagonal matrices and slogdet, an independent route."""
    n, m = f_source.size, f_target.size
    sign_b, logdet_b = np.linalg.slogdet(np.diag(f_source) + sigma**2 * np.eye(n))
    sign_t, logdet_t = np.linalg.slogdet(np.diag(f_target) + sigma**2 * np.eye(m))
    assert sign_b > 0 and sign_t > 0
    return abs(logdet_b / n - logdet_t / m)


@pytest.mark.parametrize("n,m", [(50, 50), (37, 120), (200, 11)])
@pytest.mark.parametrize("sigma", [1e-3, 0.1, 2.0])
def test_matches_eq2_with_dense_slogdet(n, m, sigma):
    rng = np.random.default_rng(n * m)
    f_source = rng.exponential(0.01, n) ** 2
    f_target = rng.exponential(0.05, m) ** 2
    expected = _eq2_dense(f_source, f_target, sigma)
    got = ld.log_det_distance(f_source, f_target, sigma=sigma, normalize=None)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_eq3_eigenvalue_form_when_sizes_match():
    rng = np.random.default_rng(1)
    a, b = rng.random(64), rng.random(64)
    eq3 = abs(np.sum(np.log((a + 0.3**2) / (b + 0.3**2)))) / 64
    assert ld.log_det_distance(a, b, sigma=0.3, normalize=None) == pytest.approx(eq3, rel=1e-12)


def test_sum_normalisation_divides_by_the_total():
    rng = np.random.default_rng(2)
    a, b = rng.random(30), rng.random(40)
    expected = _eq2_dense(a / a.sum(), b / b.sum(), 0.05)
    assert ld.log_det_distance(a, b, sigma=0.05, normalize="sum") == pytest.approx(
        expected, rel=1e-10
    )
    # scale invariance is the point of the normalisation
    assert ld.log_det_distance(7 * a, b, sigma=0.05, normalize="sum") == pytest.approx(
        expected, rel=1e-10
    )


def test_pytrees_are_flattened():
    rng = np.random.default_rng(3)
    tree = {
        "conv": {"kernel": rng.random((3, 3, 2)), "bias": rng.random(2)},
        "dense": rng.random(5),
    }
    flat = np.concatenate([tree["conv"]["bias"], tree["conv"]["kernel"].ravel(), tree["dense"]])
    other = rng.random(9)
    assert ld.log_det_distance(tree, other, sigma=0.1, normalize=None) == pytest.approx(
        _eq2_dense(flat, other, 0.1), rel=1e-10
    )


def test_matrix_has_zero_diagonal_and_is_asymmetric():
    rng = np.random.default_rng(4)
    k = 4
    fishers = [[rng.exponential(10.0 ** -(b + t), 20 + 5 * b) for t in range(k)] for b in range(k)]
    d = ld.distance_matrix(fishers, sigma=0.01, normalize=None)
    assert d.shape == (k, k)
    np.testing.assert_array_equal(np.diag(d), 0.0)
    for b in range(k):
        for t in range(k):
            assert d[b, t] == pytest.approx(
                _eq2_dense(fishers[b][t], fishers[t][t], 0.01), rel=1e-10
            )
    assert not np.allclose(d, d.T)


def test_closest_task_is_the_column_argmin_excluding_the_target():
    d = np.array([[0.0, 0.5, 0.2], [0.1, 0.0, 0.6], [0.3, 0.4, 0.0]])
    names = ["T0", "T1", "T2"]
    assert ld.closest_task(d, "T0", names=names) == "T1"
    assert ld.closest_task(d, 1, names=None) == 2
    assert ld.closest_task(d, "T2", names=names, candidates=["T1"]) == "T1"


def test_sigma_must_be_positive():
    for sigma in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            ld.log_det_distance(np.ones(3), np.ones(3), sigma=sigma)


def test_nan_in_a_fisher_is_an_error():
    with pytest.raises(ValueError, match="NaN"):
        ld.log_det_distance(np.array([1.0, np.nan]), np.ones(2))


def test_other_bad_input_errors():
    with pytest.raises(ValueError, match="empty"):
        ld.log_det_distance({}, np.ones(2))
    with pytest.raises(ValueError, match="negative"):
        ld.log_det_distance(np.array([-1.0, 1.0]), np.ones(2))
    with pytest.raises(ValueError, match="normalize"):
        ld.log_det_distance(np.ones(2), np.ones(2), normalize="max")
    with pytest.raises(ValueError, match="square"):
        ld.distance_matrix([[np.ones(2)], [np.ones(2), np.ones(2)]])
    with pytest.raises(ValueError, match="unknown task"):
        ld.closest_task(np.zeros((2, 2)), "T9", names=["T0", "T1"])


def test_target_mean_matrix_is_eq2_with_sigma_scaled_by_each_targets_mean_entry():
    rng = np.random.default_rng(5)
    k = 3
    fishers = [
        [rng.exponential(10.0 ** -(b + 2 * t), 15 + 4 * b) for t in range(k)] for b in range(k)
    ]
    d = ld.distance_matrix(fishers, sigma=0.1, normalize="target_mean")
    for b in range(k):
        for t in range(k):
            sigma_t = 0.1 * np.sqrt(fishers[t][t].mean())  # σ² relative to the target's mean entry
            assert d[b, t] == pytest.approx(
                _eq2_dense(fishers[b][t], fishers[t][t], sigma_t), rel=1e-10
            )


def test_the_default_is_size_free_and_common_scale_but_sees_relative_scale():
    # The measurement: with the old default ("sum") d(f, concat(f, f)) was log 2.
    f = np.random.default_rng(6).exponential(1e-3, 200)
    assert ld.log_det_distance(f, np.concatenate([f, f])) == pytest.approx(0.0, abs=1e-12)
    g = np.random.default_rng(7).exponential(1e-3, 90)
    assert ld.log_det_distance(1e4 * f, 1e4 * g) == pytest.approx(
        ld.log_det_distance(f, g), rel=1e-9
    )
    assert ld.log_det_distance(2 * f, f) > 0.1
