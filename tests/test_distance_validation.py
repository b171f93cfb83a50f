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


def test_decision_margins_match_a_plain_loop():
    rng = np.random.default_rng(1)
    names = ["a", "b", "c", "d"]
    stack = rng.uniform(0.0, 1.0, (3, 4, 4))
    got = dv.decision_margins(list(stack), names)
    for t, target in enumerate(names):
        means = {b: sum(stack[r, b, t] for r in range(3)) / 3 for b in range(4) if b != t}
        best, second = sorted(means, key=means.get)[:2]
        diffs = [stack[r, second, t] - stack[r, best, t] for r in range(3)]
        centre = sum(diffs) / 3
        spread = (sum((x - centre) ** 2 for x in diffs) / 2) ** 0.5
        row = got[target]
        assert (row["best"], row["second"]) == (names[best], names[second])
        np.testing.assert_allclose(row["gap"], means[second] - means[best], rtol=1e-12)
        np.testing.assert_allclose(row["gap_over_seed_std"], centre / spread, rtol=1e-12)
        wins = [
            min((b for b in range(4) if b != t), key=lambda b: stack[r, b, t]) for r in range(3)
        ]
        assert row["win_shares"] == {names[b]: round(wins.count(b) / 3, 3) for b in set(wins)}


def test_decision_margins_of_one_seed_give_the_gap_but_no_spread():
    table = np.array([[0.0, 2.0, 1.0], [1.0, 0.0, 3.0], [4.0, 1.5, 0.0]])
    got = dv.decision_margins([table], ["a", "b", "c"])
    assert (got["a"]["best"], got["a"]["second"], got["a"]["gap"]) == ("b", "c", 3.0)
    assert got["a"]["gap_over_seed_std"] is None
    assert got["b"]["best"] == "c" and got["b"]["gap"] == 0.5


def test_a_cap_trains_into_its_own_cache_folder(tmp_path, monkeypatch):
    calls = []

    def fake_train(data, **kwargs):
        calls.append(kwargs["max_epochs"])
        return "net"

    monkeypatch.setattr(dv, "train_task_network", fake_train)
    saved = []
    monkeypatch.setattr(dv, "save_task_network", lambda net, d, input_shape: saved.append(d))
    monkeypatch.setattr(dv, "load_task_network", lambda d: ("cached",))
    # The train split's shape is read for saving; give the fake data one.
    monkeypatch.setattr(
        dv,
        "load_task",
        lambda name, max_train: type("D", (), {"train": type("S", (), {"x": np.zeros((1, 2))})})(),
    )
    args = type("A", (), {"cache": str(tmp_path)})()
    dv.trained_network("E0", 0, args, "small_vgg", 8, 100)
    dv.trained_network("E0", 0, args, "small_vgg", 8, 100, max_epochs=16)
    assert calls == [None, 16]
    assert [p.parent.parent.name for p in saved] == ["small_vgg_e8_n100", "small_vgg_e8_n100_cap16"]
    # an uncapped network on disk is not what a capped run loads
    (saved[0] / "meta.json").parent.mkdir(parents=True)
    (saved[0] / "meta.json").write_text("{}")
    assert dv.trained_network("E0", 0, args, "small_vgg", 8, 100) == "cached"
    dv.trained_network("E0", 0, args, "small_vgg", 8, 100, max_epochs=16)
    assert calls == [None, 16, 16]


def test_a_cap_below_epochs_is_refused_before_any_training(capsys):
    with pytest.raises(SystemExit):
        dv.main(["--only", "embedded", "--epochs", "8", "--max-epochs", "4"])
    assert "--max-epochs (4) must be at least --epochs (8)" in capsys.readouterr().err


def test_log_det_terms_give_the_distances_and_are_stored_per_seed():
    rng = np.random.default_rng(2)
    tables = [[[rng.exponential(1.0, 6) for _ in range(3)] for _ in range(3)] for _ in range(2)]
    terms = [dv.log_det_table(t, 0.1, "target_mean") for t in tables]
    for table, term in zip(tables, terms):
        by_hand = np.abs(term - np.diag(term)[None, :])
        np.testing.assert_allclose(dv.distance_from_table(table, 0.1, "target_mean"), by_hand)
    result = {"tasks": ["a", "b", "c"]}
    setting = {"route": "predicted", "normalize": "target_mean", "sigma": 0.1}
    dv.add_margins(result, {"predicted": tables}, {"proposed default": setting})
    np.testing.assert_allclose(result["log_det_terms"]["mean"], np.mean(terms, axis=0), atol=1e-4)
    np.testing.assert_allclose(
        result["log_det_terms"]["seed_std"], np.std(terms, axis=0, ddof=1), atol=1e-4
    )
    assert set(result["margins"]) == {"proposed default"}
