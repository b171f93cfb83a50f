"""Transfer ground truth: rank correlation, head replacement, fine-tuning and the command."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ldnas_jax.cli import main
from ldnas_jax.data import Split, TaskData, load_task
from ldnas_jax.distances import mean_log_det, pair_reference
from ldnas_jax.experiments import (
    TargetTransfer,
    average_ranks,
    fine_tune,
    head_paths,
    replace_head,
    spearman,
    summarize_transfer,
    train_from_scratch,
    transfer_check,
    transfer_ranking,
    transfer_targets,
)
from ldnas_jax.experiments._transfer import _score
from ldnas_jax.models import make_model
from ldnas_jax.tasks import TaskNetwork, fisher_on_task, load_task_network
from ldnas_jax.train import evaluate


def _ranks_by_counting(values):
    """Average ranks the slow way: 1 + (number smaller) + (number of equal others) / 2."""
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]


def _spearman_by_hand(a, b):
    ra, rb = _ranks_by_counting(list(a)), _ranks_by_counting(list(b))
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return float("nan") if va == 0 or vb == 0 else cov / (va * vb) ** 0.5


# --- rank correlation --------------------------------------------------------------------------


def test_spearman_matches_hand_computed_values():
    # no ties: rho = 1 - 6 Σd² / (n(n²-1)) with rank differences (0, 0, -1, 1): 1 - 12/60
    assert spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): cov 4.5, variances 4.5 and 5
    assert average_ranks([1, 2, 2, 3]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5))
    assert average_ranks([7.0, 7.0, 7.0]).tolist() == [2.0, 2.0, 2.0]
    # a constant side has no ranking: undefined, as in scipy
    assert np.isnan(spearman([0.5, 0.5, 0.5], [1, 2, 3]))


def test_spearman_matches_a_plain_loop_and_scipy_with_ties():
    rng = np.random.default_rng(0)
    stats = None
    try:
        from scipy import stats
    except ImportError:  # scipy is optional: the plain loop is the reference then
        pass
    for _ in range(20):
        n = int(rng.integers(3, 9))
        a = rng.integers(0, 4, n).astype(float)  # few values: many ties
        b = rng.normal(size=n).round(1)
        if len(set(a)) < 2 or len(set(b)) < 2:
            continue
        np.testing.assert_allclose(average_ranks(a), _ranks_by_counting(list(a)))
        assert spearman(a, b) == pytest.approx(_spearman_by_hand(a, b), abs=1e-12)
        if stats is not None:
            assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_and_ranking_reject_bad_input():
    with pytest.raises(ValueError, match="one length"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1.0], [2.0])
    with pytest.raises(ValueError, match="NaN"):
        spearman([1.0, np.nan, 2.0], [1, 2, 3])
    # best first; equal accuracies keep their given order
    assert transfer_ranking({"a": 0.5, "b": 0.9, "c": 0.5}) == ("b", "a", "c")


def _target(name, accuracy, distances):
    loss = {b: 1 - a for b, a in accuracy.items()}
    return TargetTransfer(
        target=name,
        baselines=tuple(accuracy),
        accuracy=accuracy,
        loss=loss,
        ranking=transfer_ranking(accuracy),
        best_sources=tuple(b for b, a in accuracy.items() if a == max(accuracy.values())),
        scratch_accuracy=0.55,
        self_accuracy=0.9,
        distances=distances,
        **_score(accuracy, loss, distances),
    )


def test_scores_and_summary_follow_hand_worked_rankings():
    # target A: closest b1 transfers best, and the orders of -d and accuracy agree: rho = +1;
    # "far" reverses it: rho = -1, its closest b2 is the worst (rank 3, regret 0.2)
    d = {"near": {"b1": 0.1, "b2": 0.3, "b3": 0.2}, "far": {"b1": 0.3, "b2": 0.1, "b3": 0.2}}
    a = _target("A", {"b1": 0.8, "b2": 0.6, "b3": 0.7}, d)
    assert a.spearman == {"near": pytest.approx(1.0), "far": pytest.approx(-1.0)}
    assert a.spearman_loss == a.spearman  # loss = 1 - accuracy here
    assert a.closest == {"near": "b1", "far": "b2"}
    assert a.closest_is_best == {"near": True, "far": False}
    assert a.closest_rank == {"near": 1.0, "far": 3.0}
    assert a.regret == {"near": 0.0, "far": pytest.approx(0.2)}
    # target B: every baseline ties, so there is nothing to rank
    b = _target("B", {"b1": 0.5, "b2": 0.5, "b3": 0.5}, d)
    assert np.isnan(b.spearman["near"]) and b.closest_is_best["far"]
    summary = summarize_transfer({"A": a, "B": b})
    assert summary["targets"] == 2 and summary["targets_ranked"] == 1
    near, far = summary["distances"]["near"], summary["distances"]["far"]
    assert near["mean_spearman"] == pytest.approx(1.0) and near["spearman_undefined"] == 1
    assert near["closest_is_best"] == 1 and far["closest_is_best"] == 0  # B is not counted
    assert far["mean_closest_rank"] == 3.0 and far["mean_regret"] == pytest.approx(0.2)
    assert summary["best_transfer_beats_scratch"] == 1  # A: 0.8 > 0.55; B: 0.5 < 0.55


def test_targets_need_three_tasks_and_known_names():
    assert transfer_targets(["E0", "E1", "E4"]) == ["E0", "E1", "E4"]
    with pytest.raises(ValueError, match="at least 3 tasks"):
        transfer_targets(["E0"])
    with pytest.raises(ValueError, match="at least 3 tasks"):
        transfer_targets(["E0", "E1"])
    with pytest.raises(ValueError, match="unknown target"):
        transfer_targets(["E0", "E1", "E4"], ["E9"])
    with pytest.raises(ValueError, match="repeat"):
        transfer_targets(["E0", "E0", "E1"])


# --- head replacement and fine-tuning ------------------------------------------------------------


def _toy_task(name, num_classes, n_train, n_test, seed):
    """Images whose class is the brightest of the first num_classes pixels: learnable, tiny."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, num_classes, n).astype(np.int32)
        x = rng.uniform(0, 0.3, (n, 8, 8, 3)).astype(np.float32)
        x[np.arange(n), 0, y, :] = 1.0
        return Split(x, y)

    return TaskData(name, num_classes, split(n_train), split(8), split(n_test))


@pytest.fixture(scope="module")
def source():
    """A 2-class SmallVGG with random weights standing in for a baseline's ε-network."""
    model = make_model("small_vgg", 2)
    variables = dict(model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 3)), train=False))
    return TaskNetwork("src", "small_vgg", 2, variables, 0.0, 0.1)


@pytest.fixture(scope="module")
def target():
    return _toy_task("toy", 3, n_train=48, n_test=40, seed=0)


def _flat(variables):
    return {
        (c, *p): np.asarray(v)
        for c, tree in variables.items()
        for p, v in traverse_util.flatten_dict(dict(tree)).items()
    }


def test_replace_head_keeps_every_other_weight_and_sizes_the_head(source, target):
    x = target.train.x
    assert head_paths("small_vgg", x) == {("Dense_1",)}
    key = jax.random.key(7)
    new = replace_head(source, 3, key=key, example_x=x)
    before, after = _flat(source.variables), _flat(new)
    assert set(before) == set(after)
    fresh = _flat(dict(make_model("small_vgg", 3).init(key, x[:1], train=False)))
    for path, value in after.items():
        if path[:2] == ("params", "Dense_1"):  # the head: the fresh 3-class initialisation
            np.testing.assert_array_equal(value, fresh[path])
        else:  # everything else, BatchNorm statistics included, is the source's
            np.testing.assert_array_equal(value, before[path])
    assert after[("params", "Dense_1", "kernel")].shape == (64, 3)
    logits = make_model("small_vgg", 3).apply(new, x[:5], train=False)
    assert logits.shape == (5, 3)


def test_head_only_fine_tuning_trains_only_the_head(source, target):
    result = fine_tune(
        source, target, key=jax.random.key(0), max_examples=32, epochs=2, train_backbone=False
    )
    before, after = _flat(source.variables), _flat(result.variables)
    for path, value in after.items():
        if path[1] == "Dense_1":
            continue
        if path[0] == "params":  # frozen: bit-identical
            np.testing.assert_array_equal(value, before[path], err_msg=str(path))
    # the BatchNorm running statistics adapt to the target's data in train mode
    assert not np.allclose(
        after[("batch_stats", "BatchNorm_0", "mean")],
        before[("batch_stats", "BatchNorm_0", "mean")],
    )
    assert result.num_examples == 32 and len(result.history) == 2
    assert result.source == "src" and result.target == "toy"
    assert 0.0 <= result.test_accuracy <= 1.0
    # the accuracy and loss agree with the library's plain evaluation of the same variables
    reference = evaluate(make_model("small_vgg", 3), result.variables, target.test)
    assert result.test_accuracy == pytest.approx(reference["accuracy"])
    assert result.test_loss == pytest.approx(reference["loss"], rel=1e-5)
    # the padded ragged last batch (40 = 16 + 16 + 8) changes nothing
    padded = evaluate(make_model("small_vgg", 3), result.variables, target.test, batch_size=16)
    padded = (padded["accuracy"], padded["loss"])
    assert padded == pytest.approx((reference["accuracy"], reference["loss"]), rel=1e-5)


def test_full_fine_tuning_changes_the_backbone_and_is_reproducible(source, target):
    run = lambda: fine_tune(source, target, key=jax.random.key(3), max_examples=48, epochs=3)
    result, again = run(), run()
    before, after = _flat(source.variables), _flat(result.variables)
    assert not np.allclose(
        after[("params", "Conv_0", "kernel")], before[("params", "Conv_0", "kernel")]
    )
    assert after[("params", "Dense_1", "bias")].shape == (3,)
    assert result.test_accuracy == again.test_accuracy
    for path, value in _flat(again.variables).items():
        np.testing.assert_array_equal(value, after[path])
    # the loss went down while training on a learnable task
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    scratch = train_from_scratch(
        "small_vgg", target, key=jax.random.key(3), max_examples=48, epochs=1
    )
    assert scratch.source is None and 0.0 <= scratch.test_accuracy <= 1.0


def test_fine_tune_rejects_bad_input(source, target):
    with pytest.raises(TypeError, match="TaskNetwork"):
        fine_tune(source.variables, target, key=jax.random.key(0))
    with pytest.raises(TypeError, match="TaskData"):
        fine_tune(source, target.train, key=jax.random.key(0))
    with pytest.raises(ValueError, match="max_examples"):
        fine_tune(source, target, key=jax.random.key(0), max_examples=0)
    with pytest.raises(ValueError, match="networks and tasks are out of order"):
        transfer_check([source] * 3, [target] * 3, key=jax.random.key(0))


# --- the command ------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_writes_rankings_consistent_with_its_numbers(tmp_path):
    out, nets = tmp_path / "tc", tmp_path / "nets"
    tasks = ["E0", "E1", "E4", "E5"]
    status = main(
        ["transfer-check", "--tasks", *tasks, "--targets", "E4", "--max-train", "64",
         "--max-test", "48", "--epochs", "1", "--finetune-examples", "32",
         "--finetune-epochs", "1", "--fisher-examples", "16", "--networks", str(nets),
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert status == 0
    result = json.loads((out / "transfer_check.json").read_text())
    for key in ("config", "versions", "tasks", "targets", "distance_names",
                "sign_convention", "budget", "per_seed", "statistics"):  # fmt: skip
        assert key in result, key
    # one seed by default: its networks, rankings and summary sit under per_seed["0"]
    assert list(result["per_seed"]) == ["0"]
    seed_0 = result["per_seed"]["0"]
    assert set(seed_0) == {"epsilon_networks", "per_target", "summary"}
    assert result["targets"] == ["E4"] and set(seed_0["per_target"]) == {"E4"}
    names = result["distance_names"]
    assert "log_det" in names
    # eq. 2 by hand from the saved ε-networks' Fishers on E4's first 16 training examples,
    # σ relative to E4's own network's mean Fisher entry (the default normalisation)
    e4 = load_task("E4", max_train=64, max_test=48).train
    fishers = {
        t: fisher_on_task(load_task_network(nets / "seed_0" / t)[0], e4, 2, max_examples=16)
        for t in tasks
    }
    r_t = pair_reference(fishers["E4"])
    log_det = {t: mean_log_det(fishers[t], reference=r_t) for t in tasks}
    for t, row in seed_0["per_target"].items():
        baselines = [b for b in tasks if b != t]
        assert row["baselines"] == baselines  # the target is never its own baseline
        assert set(row["accuracy"]) == set(baselines) and t not in row["ranking"]
        acc = [row["accuracy"][b] for b in baselines]
        assert all(0 <= a <= 1 for a in acc + [row["scratch_accuracy"], row["self_accuracy"]])
        assert row["ranking"] == sorted(baselines, key=lambda b: -row["accuracy"][b])
        for name in names:
            d = [row["distances"][name][b] for b in baselines]
            rho = _spearman_by_hand([-x for x in d], acc)
            assert (row["spearman"][name] is None) == np.isnan(rho)
            if row["spearman"][name] is not None:
                assert row["spearman"][name] == pytest.approx(rho, abs=1e-9)
            closest = baselines[int(np.argmin(d))]
            assert row["closest"][name] == closest
            assert row["closest_is_best"][name] == (row["accuracy"][closest] == max(acc))
        for b in baselines:
            expected = abs(log_det[b] - log_det[t])
            assert row["distances"]["log_det"][b] == pytest.approx(expected, rel=1e-6)
    ranked = [r for r in seed_0["per_target"].values() if len(set(r["accuracy"].values())) > 1]
    hits = sum(r["closest_is_best"]["log_det"] for r in ranked)
    assert seed_0["summary"]["targets_ranked"] == len(ranked)
    assert seed_0["summary"]["distances"]["log_det"]["closest_is_best"] == hits


def test_command_refuses_too_few_or_unknown_tasks_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "run")
    for argv, message in (
        (["--tasks", "E0", "--no-progress"], "at least 3 tasks"),
        (["--tasks", "E0", "E1", "NOPE"], "unknown task"),
        (["--tasks", "E0", "E1", "E4", "--targets", "E7"], "unknown target"),
    ):
        assert main(["transfer-check", *argv, "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
