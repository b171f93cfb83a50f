"""Win shares of the closest task, against a plain count over repetitions."""

import numpy as np
import pytest

import ldnas_jax as ld
from ldnas_jax.distances import closest_shares, win_shares


def counted_shares(tables):
    """share[b, t] by looping over tables and columns, ties split by hand."""
    tables = np.asarray(tables)
    r, k, _ = tables.shape
    shares = np.zeros((k, k))
    for table in tables:
        for t in range(k):
            column = {b: table[b, t] for b in range(k) if b != t}
            best = min(column.values())
            tied = [b for b, value in column.items() if value == best]
            for b in tied:
                shares[b, t] += 1 / (len(tied) * r)
    return shares


def test_closest_shares_match_a_plain_count_with_ties():
    rng = np.random.default_rng(0)
    tables = rng.integers(0, 4, size=(7, 5, 5)).astype(float)  # small integers: many ties
    shares = closest_shares(tables)
    np.testing.assert_allclose(shares, counted_shares(tables), atol=1e-12)
    np.testing.assert_allclose(shares.sum(axis=0), np.ones(5))
    assert np.all(np.diag(shares) == 0)


def test_one_table_gives_the_closest_task_all_of_the_share():
    table = np.random.default_rng(1).uniform(size=(4, 4))
    shares = ld.closest_shares(table[None])
    for t in range(4):
        assert shares[ld.closest_task(table, t), t] == 1.0


@pytest.mark.parametrize(
    "bad, message",
    [(np.zeros((0, 3)), "non-empty"), (np.zeros(3), "non-empty"), ([[0.1, np.nan]], "NaN")],
)
def test_win_shares_refuses_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        win_shares(bad)


def test_closest_shares_refuses_a_table_that_is_not_square():
    with pytest.raises(ValueError, match=r"\(repetitions, K, K\)"):
        closest_shares(np.zeros((2, 3, 4)))
