"""The scoring of ``benchmarks.distance_validation`` on hand-made tables (no training)."""

import numpy as np
import pytest

from benchmarks import distance_validation as dv
from ldnas_jax.distances import distance_matrix


@pytest.mark.parametrize("normalize", [None, "sum", "target_mean"])
def test_the_table_route_is_distance_matrix(normalize):
    rng = np.random.default_rng(0)
    table = [[rng.exponential(10.0**b, 5 + t) for t in range(3)] for b in range(3)]
    np.testing.assert_allclose(
        dv.distance_from_table(table, 0.1, normalize),
        distance_matrix(table, sigma=0.1, normalize=normalize),
        rtol=1e-12,
    )


def test_score_counts_same_domain_and_seed_agreement_by_hand():
    names = ["a0", "a1", "b0", "b1"]
    domains = {"a0": "A", "a1": "A", "b0": "B", "b1": "B"}
    # Seed 1: each target's closest is its domain partner (4/4).
    one = np.array([[0, 1, 5, 5], [1, 0, 5, 5], [5, 5, 0, 1], [5, 5, 1, 0]], float)
    # Seed 2: same, except target b1 picks a0 (3/4), so 3 of 4 targets agree.
    two = one.copy()
    two[0, 3] = 0.5
    got = dv.score([one, two], names, domains)
    assert got["same_domain_per_seed"] == [4, 3]
    assert got["same_domain"] == 3.5
    assert got["seed_agreement"] == 3
    assert got["domain_agreement"] == 3  # b1's closest is in A for one seed, B for the other
    assert got["closest_per_seed"][1] == ["a1", "a0", "b1", "a0"]
    # over the mean matrix b1 goes back to b0: (5 + 0.5) / 2 > 1
    assert got["closest_of_mean"] == ["a1", "a0", "b1", "b0"]
    assert got["same_domain_of_mean"] == 4


def test_choose_prefers_the_higher_score_then_the_plateau():
    def row(normalize, sigma, same, agree, route="pad"):
        return {
            "route": route,
            "normalize": normalize,
            "sigma": sigma,
            "same_domain": same,
            "seed_agreement": agree,
        }

    rows = [
        row(None, 1e-3, 8, 0),  # 8 at a spike
        row(None, 1e-2, 2, 0),
        row(None, 1e-1, 4, 4),  # 8 on a plateau: neighbours 2 and 7
        row(None, 1.0, 5, 2),
        row("sum", 1e-3, 1, 1, route="predicted"),
        row("target_mean", 1e-4, 3, 3, route="predicted"),  # a flat line: the larger σ wins
        row("target_mean", 1e-3, 3, 3, route="predicted"),
    ]
    chosen = dv.choose(rows)
    assert chosen["None"] == {"route": "pad", "normalize": None, "sigma": 1e-1}
    assert chosen["target_mean"]["sigma"] == 1e-3
    assert chosen["sum"]["route"] == "predicted"
    assert dv.lookup(rows, chosen["target_mean"])["same_domain"] == 3
