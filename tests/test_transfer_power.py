"""The transfer check over seeds: bootstrap intervals, per-distance statistics, resume."""

import json
import math

import jax
import numpy as np
import pytest
from _toy_tasks import stripes_task

from ldnas_jax.cli import main
from ldnas_jax.commands import transfer_check as command
from ldnas_jax.data import load_task
from ldnas_jax.distances import mean_log_det
from ldnas_jax.experiments import TargetTransfer, fine_tune, train_from_scratch
from ldnas_jax.experiments import _reproduce as reproduce_module
from ldnas_jax.experiments._ranks import bootstrap_interval
from ldnas_jax.experiments._transfer import (
    PAPER_LOG_DET,
    transfer_distances,
    transfer_from_json,
    transfer_statistics,
)
from ldnas_jax.models import make_model
from ldnas_jax.tasks import TaskNetwork, fisher_on_task, load_task_network

# --- bootstrap_interval ---------------------------------------------------------------------


def _quantile_by_hand(values, q):
    """numpy's default (linear) quantile: interpolate between the order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def _bootstrap_by_loop(values, seed, resamples, level):
    """One resample at a time, each mean a plain Python sum."""
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        picks = rng.integers(0, len(values), size=len(values))
        means.append(sum(values[i] for i in picks) / len(values))
    tail = (1 - level) / 2
    return _quantile_by_hand(means, tail), _quantile_by_hand(means, 1 - tail)


@pytest.mark.parametrize("n, resamples, level", [(24, 2000, 0.95), (7, 301, 0.9), (1, 50, 0.5)])
def test_bootstrap_interval_matches_a_plain_loop(n, resamples, level):
    values = list(np.random.default_rng(n).normal(size=n))
    low, high = bootstrap_interval(values, seed=5, resamples=resamples, level=level)
    ref_low, ref_high = _bootstrap_by_loop(values, 5, resamples, level)
    assert low == pytest.approx(ref_low, abs=1e-12)
    assert high == pytest.approx(ref_high, abs=1e-12)
    assert bootstrap_interval(values, seed=5, resamples=resamples, level=level) == (low, high)


def test_bootstrap_interval_known_answers():
    # two units: resampled means 0, 1/2, 1 with chances 1/4, 1/2, 1/4 -> the whole range
    assert bootstrap_interval([0.0, 1.0], resamples=4000) == (0.0, 1.0)
    # ... while a 40% interval sits inside the middle half, at 1/2
    assert bootstrap_interval([0.0, 1.0], resamples=4000, level=0.4) == (0.5, 0.5)
    assert bootstrap_interval([0.25] * 5) == (0.25, 0.25)
    assert bootstrap_interval([-0.7]) == (-0.7, -0.7)
    # many normal units: the interval is close to mean ± 1.96 s / sqrt(n)
    x = np.random.default_rng(0).normal(2.0, 3.0, size=400)
    low, high = bootstrap_interval(x, resamples=4000)
    half = 1.96 * x.std() / np.sqrt(x.size)
    assert low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.1 * half)
    # another seed moves the ends a little, not the centre
    other = bootstrap_interval(x, seed=1, resamples=4000)
    assert other != (low, high) and np.allclose(other, (low, high), atol=0.1 * half)


def test_bootstrap_interval_rejects_bad_input():
    for values, keywords, message in (
        ([], {}, "non-empty"),
        ([[1.0, 2.0]], {}, "1-D"),
        ([1.0, float("nan")], {}, "NaN"),
        ([1.0], {"resamples": 0}, "resamples"),
        ([1.0], {"resamples": True}, "resamples"),
        ([1.0], {"level": 1.0}, "level"),
    ):
        with pytest.raises(ValueError, match=message):
            bootstrap_interval(values, **keywords)


# --- transfer_statistics ----------------------------------------------------------------------


def _unit(target, accuracy, distances, closest, rho):
    """A TargetTransfer with what the statistics read; closest and rho per distance."""
    baselines = tuple(accuracy)
    best = max(accuracy.values())
    return TargetTransfer(
        target=target,
        baselines=baselines,
        accuracy=accuracy,
        loss={b: 1 - a for b, a in accuracy.items()},
        ranking=baselines,
        best_sources=tuple(b for b in baselines if accuracy[b] == best),
        scratch_accuracy=0.5,
        self_accuracy=1.0,
        distances=distances,
        spearman=rho,
        spearman_loss=rho,
        closest=closest,
        closest_is_best={n: accuracy[c] == best for n, c in closest.items()},
        closest_rank={n: 1.0 for n in closest},
        regret={n: best - accuracy[c] for n, c in closest.items()},
    )


def test_statistics_follow_hand_counted_units():
    domains = {"d0": "digits", "d1": "digits", "o0": "objects", "o1": "objects"}
    acc = lambda a, b, c: dict(zip(("d1", "o0", "o1"), (a, b, c)))
    runs = {
        0: {
            "d0": _unit("d0", acc(0.9, 0.5, 0.4), {}, {"x": "d1"}, {"x": 1.0}),
            "o0": _unit("o0", {"d0": 0.6, "d1": 0.6, "o1": 0.6}, {}, {"x": "d0"}, {"x": math.nan}),
        },
        1: {
            "d0": _unit("d0", acc(0.5, 0.9, 0.4), {}, {"x": "d1"}, {"x": -0.5}),
            "o0": _unit("o0", {"d0": 0.3, "d1": 0.6, "o1": 0.9}, {}, {"x": "o1"}, {"x": 0.5}),
        },
    }
    stats = transfer_statistics(runs, domains=domains, resamples=500, seed=3)
    s = stats["distances"]["x"]
    assert (stats["units"], stats["seeds"], stats["targets"]) == (4, 2, 2)
    # ρ: the undefined unit (all accuracies tie) is left out of the mean and the interval
    assert s["spearman_defined"] == 3 and s["spearman_undefined"] == 1
    assert s["mean_spearman"] == pytest.approx((1.0 - 0.5 + 0.5) / 3)
    assert s["spearman_interval"] == list(
        bootstrap_interval([1.0, -0.5, 0.5], seed=3, resamples=500)
    )
    assert s["mean_spearman_by_seed"] == {"0": 1.0, "1": 0.0}
    # closest = best: seed 0 d0 yes, seed 1 d0 no, seed 1 o0 yes; the tied unit is not ranked
    assert (s["closest_is_best"], s["ranked_units"]) == (2, 3)
    assert s["closest_is_best_rate"] == pytest.approx(2 / 3)
    assert s["mean_regret"] == pytest.approx((0.0 + 0.4 + 0.0) / 3)
    # same domain: d1 for d0 (twice yes), d0 for o0 (no), o1 for o0 (yes)
    assert (s["same_domain"], s["same_domain_rate"]) == (3, 0.75)
    # d0 picks d1 in both seeds; o0 changes its mind
    assert s["seed_agreement"] == 1
    # one domain: no same-domain rate
    one = transfer_statistics(runs, domains=dict.fromkeys(domains, "mnist"), resamples=10)
    assert one["distances"]["x"]["same_domain_rate"] is None
    assert transfer_statistics(runs, resamples=10)["distances"]["x"]["same_domain"] is None
    with pytest.raises(ValueError, match="no"):
        transfer_statistics({})


def test_each_distance_is_compared_with_log_det_unit_by_unit():
    acc = {"a": 0.9, "b": 0.5, "c": 0.4}
    rhos = [
        ({"log_det": 0.5, "f": 1.0}),
        ({"log_det": -0.5, "f": 0.0}),
        ({"log_det": math.nan, "f": 1.0}),
    ]
    runs = {
        s: {"t": _unit("t", acc, {}, {"log_det": "a", "f": "a"}, rho)} for s, rho in enumerate(rhos)
    }
    stats = transfer_statistics(runs, resamples=300, seed=1)
    assert stats["reference"] == "log_det"
    f, own = stats["distances"]["f"], stats["distances"]["log_det"]
    # the unit where log_det's ρ is undefined is left out of the pair: (1.0 − 0.5, 0.0 + 0.5)
    assert f["minus_reference_mean"] == pytest.approx(0.5)
    assert f["minus_reference_interval"] == list(
        bootstrap_interval([0.5, 0.5], seed=1, resamples=300)
    )
    assert own["minus_reference_mean"] == 0.0


def test_transfer_record_survives_json():
    unit = _unit(
        "d0", {"a": 0.5, "b": 0.75}, {"x": {"a": 0.1, "b": 0.3}}, {"x": "a"}, {"x": math.nan}
    )
    back = transfer_from_json(json.loads(json.dumps(command._jsonable(unit._asdict()))))
    assert back.baselines == unit.baselines and back.best_sources == unit.best_sources
    assert math.isnan(back.spearman["x"])
    assert back._replace(spearman={}, spearman_loss={}) == unit._replace(
        spearman={}, spearman_loss={}
    )
    with pytest.raises(ValueError, match="lacks"):
        transfer_from_json({"target": "d0"})


def test_paper_eq2_is_unnormalised_with_sigma_1e_2():
    f_b, f_t = np.array([1e-3, 2e-2, 0.0, 5.0]), np.array([3e-4, 1e-1, 1e-5, 0.5])
    by_hand = abs(np.mean(np.log(f_b + 1e-4)) - np.mean(np.log(f_t + 1e-4)))
    assert transfer_distances()[PAPER_LOG_DET](f_b, f_t) == pytest.approx(by_hand, rel=1e-6)


# --- fine-tuning keywords (one budget for both entries) ----------------------------------------


def test_fine_tune_and_scratch_take_the_budget_keywords_only():
    target = stripes_task("s", n=16)
    net = TaskNetwork(
        "src",
        "small_vgg",
        2,
        dict(make_model("small_vgg", 2).init(jax.random.key(0), target.train.x[:1])),
        1.0,
        0.1,
    )
    with pytest.raises(TypeError, match="unknown budget keyword"):
        fine_tune(net, target, key=jax.random.key(0), epoch=1)
    with pytest.raises(TypeError, match="TaskData"):
        train_from_scratch("small_vgg", target.train, key=jax.random.key(0))
    with pytest.raises(ValueError, match="learning_rate"):
        train_from_scratch("small_vgg", target, key=jax.random.key(0), learning_rate=0.0)


# --- the command over seeds, resumed -----------------------------------------------------------

_TASKS = ["E0", "E1", "E4"]
_ARGS = [
    "transfer-check", "--tasks", *_TASKS, "--seeds", "2", "--max-train", "32", "--max-test",
    "32", "--epochs", "1", "--finetune-examples", "16", "--finetune-epochs", "1",
    "--fisher-examples", "8", "--resamples", "200", "--no-progress",
]  # fmt: skip
_RECORD = ("config", "written", "versions", "devices")


def _without_record(payload):
    return {k: v for k, v in payload.items() if k not in _RECORD}


@pytest.mark.slow
def test_seeds_every_other_task_a_baseline_and_a_killed_run_resumed(tmp_path, monkeypatch):
    nets = tmp_path / "nets"
    whole = tmp_path / "whole"
    assert main([*_ARGS, "--networks", str(nets), "--out", str(whole)]) == 0
    result = json.loads((whole / "transfer_check.json").read_text())
    assert result["seeds"] == [0, 1] and list(result["per_seed"]) == ["0", "1"]
    assert result["domains"] == {
        "E0": "embedded_digits",
        "E1": "embedded_digits",
        "E4": "embedded_objects",
    }
    names = result["distance_names"]
    assert set(names) == {
        "log_det",
        "log_det_paper",
        "log_det_full",
        "frechet",
        "task2vec",
        "cosine",
    }
    for run in result["per_seed"].values():
        assert set(run["per_target"]) == set(_TASKS)
        for t, row in run["per_target"].items():
            assert row["baselines"] == [b for b in _TASKS if b != t]  # every other task
            assert all(set(row["distances"][n]) == set(row["baselines"]) for n in names)
    # seeds differ: their own ε-networks
    w0, w1 = (
        load_task_network(nets / f"seed_{s}" / "E4")[0].variables["params"]["Conv_0"]["kernel"]
        for s in (0, 1)
    )
    assert not np.allclose(w0, w1)
    _assert_the_paper_s_eq2_by_hand(result, nets)
    _assert_the_statistics_are_the_units(result, names)
    _assert_a_killed_run_resumes_to(result, nets, tmp_path / "broken", monkeypatch)


def _assert_the_paper_s_eq2_by_hand(result, nets):
    """The paper's eq. 2 by hand from seed 1's networks, on E4's first 8 training examples."""
    e4 = load_task("E4", max_train=32, max_test=32).train
    fishers = {
        t: fisher_on_task(load_task_network(nets / "seed_1" / t)[0], e4, 2, max_examples=8)
        for t in _TASKS
    }
    paper = {t: mean_log_det(f, sigma=1e-2, normalize=None) for t, f in fishers.items()}
    row = result["per_seed"]["1"]["per_target"]["E4"]
    for b in ("E0", "E1"):
        assert row["distances"]["log_det_paper"][b] == pytest.approx(
            abs(paper[b] - paper["E4"]), rel=1e-6
        )


def _assert_the_statistics_are_the_units(result, names):
    """The statistics are those of the six (target, seed) units."""
    stats = result["statistics"]
    assert (stats["units"], stats["seeds"], stats["resamples"]) == (6, 2, 200)
    for name in names:
        rhos = [
            r["spearman"][name]
            for run in result["per_seed"].values()
            for r in run["per_target"].values()
            if r["spearman"][name] is not None
        ]
        s = stats["distances"][name]
        assert s["spearman_defined"] == len(rhos)
        if rhos:
            assert s["mean_spearman"] == pytest.approx(np.mean(rhos))
            assert s["spearman_interval"] == pytest.approx(
                list(bootstrap_interval(rhos, resamples=200))
            )


def _assert_a_killed_run_resumes_to(result, nets, broken, monkeypatch):
    """A run killed in seed 1 (after its first target), then resumed, writes the same JSON."""
    calls = []
    real = command.transfer_check

    def dies_on_the_fifth(*args, **kwargs):
        calls.append(kwargs["targets"])
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(command, "transfer_check", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        main([*_ARGS, "--networks", str(nets), "--out", str(broken)])
    assert not (broken / "transfer_check.json").exists()
    saved = sorted(p.name for p in (broken / "checkpoints" / "transfer").rglob("*.json"))
    assert saved == [
        "E0.json",
        "E0.json",
        "E1.json",
        "E4.json",
        "log_det_full.json",
        "log_det_full.json",
    ]
    calls.clear()
    assert main([*_ARGS, "--networks", str(nets), "--out", str(broken), "--resume"]) == 0
    assert calls == [["E1"], ["E4"]]  # only seed 1's missing targets ran again
    resumed = json.loads((broken / "transfer_check.json").read_text())
    assert _without_record(resumed) == _without_record(result)


def test_max_epochs_trains_the_networks_until_they_meet_epsilon(tmp_path, monkeypatch):
    seen = []

    def stop(data, **keywords):
        seen.append((data.name, keywords["max_epochs"], keywords["epochs"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce_module, "train_task_network", stop)
    argv = [*_ARGS, "--epochs", "1", "--max-epochs", "3", "--out", str(tmp_path / "run")]
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert seen == [("E0", 3, 1)]
