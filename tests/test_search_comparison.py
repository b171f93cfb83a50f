"""The search comparison benchmark in a tiny configuration: rows, paired statistics, resume."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import search_comparison
from ldnas_jax.checkpoint import CheckpointError
from ldnas_jax.nas import Genotype
from ldnas_jax.pipeline import FinalTraining, SearchBudget

pytestmark = pytest.mark.slow  # the benchmark's searches end to end, and their resume

TINY = [
    "--target", "E6", "--baselines", "E1", "--max-train", "32", "--epochs", "1",
    "--zoo-samples", "1", "--candidates", "1", "--iterations", "1", "--rounds", "1", "--warmup-rounds", "0", "--zoo-steps", "2",
    "--channels", "4", "--cells", "1", "--final-epochs", "1", "--fisher-examples", "8",
]  # fmt: skip
# The fixture's run: LD-NAS, one search baseline and the hand-designed network. Full-space FUSE
# would add a compiled round of every operation (about 45 s) and no bookkeeping of its own; its
# dispatch is checked alone below.
METHODS = ("ld-nas", "random_search", "small_vgg")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Seed 0 first, then seeds 0-1 on the same --out: the second run adds only seed 1's rows."""
    out = tmp_path_factory.mktemp("comparison")
    calls = []
    real = search_comparison.run_method
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            search_comparison,
            "run_method",
            lambda method, setting, seed: (
                calls.append((seed, method)) or real(method, setting, seed)
            ),
        )
        args = [*TINY, "--methods", *METHODS, "--out", str(out)]
        first = search_comparison.main([*args, "--seeds", "0"])
        first_calls = list(calls)
        second = search_comparison.main([*args, "--seeds", "0-1"])
    return out, first, second, first_calls, calls[len(first_calls) :]


def test_the_json_holds_one_row_per_seed_and_method(run):
    out, *_ = run
    saved = json.loads((out / "comparison.json").read_text())
    pairs = sorted((row["seed"], row["method"]) for row in saved["rows"])
    assert pairs == sorted((s, m) for s in (0, 1) for m in METHODS)
    for row in saved["rows"]:
        assert 0 <= row["balanced_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
        assert row["num_params"] > 0
        assert (row["search_seconds"] == 0) == (row["method"] == "small_vgg")
    assert saved["closest_task"] == "E1"  # the only baseline
    assert {row["closest_task"] for row in saved["rows"] if row["method"] == "ld-nas"} == {"E1"}
    assert saved["command"].startswith("python -m benchmarks.search_comparison --target E6")
    assert (out / "accuracy_vs_params.png").exists()


def test_paired_differences_are_the_per_seed_differences_of_the_rows(run):
    _, _, result, _, _ = run
    by = {(row["seed"], row["method"]): row for row in result["rows"]}
    assert sorted(result["paired_differences"]) == ["random_search", "small_vgg"]
    for other in ("random_search", "small_vgg"):
        for metric in ("test_accuracy", "balanced_accuracy", "num_params"):
            paired = result["paired_differences"][other][metric]
            by_hand = [by[(s, "ld-nas")][metric] - by[(s, other)][metric] for s in (0, 1)]
            assert paired["seeds"] == [0, 1]
            assert paired["differences"] == pytest.approx(by_hand)
            assert paired["mean"] == pytest.approx(np.mean(by_hand))
            low, high = paired["interval_95"]
            assert low <= paired["mean"] <= high
            assert min(by_hand) <= low and high <= max(by_hand)


def test_the_summary_is_mean_and_std_over_seeds(run):
    _, _, result, _, _ = run
    for method in METHODS:
        values = [r["test_accuracy"] for r in result["rows"] if r["method"] == method]
        stats = result["summary"][method]["test_accuracy"]
        assert stats["n"] == 2
        assert stats["mean"] == pytest.approx(np.mean(values))
        assert stats["std"] == pytest.approx(np.std(values, ddof=1))


def test_the_markdown_report_holds_the_json_s_tables(run):
    out, _, result, _, _ = run
    text = (out / "comparison.md").read_text()
    assert text.startswith(f"`{result['command']}`")
    methods, paired = text.split("\n\n")[1:]
    assert methods.count("\n") == 1 + len(METHODS)  # a header, its rule, a row per method
    acc = result["summary"]["ld-nas"]["test_accuracy"]
    assert f"| LD-NAS (closest: E1) | 2 | {acc['mean']:.3f} ± {acc['std']:.3f} |" in methods
    vgg = result["paired_differences"]["small_vgg"]["balanced_accuracy"]
    low, high = vgg["interval_95"]
    assert f"{vgg['mean']:+.3f} [{low:+.3f}, {high:+.3f}]" in paired.splitlines()[-1]


def test_the_markdown_counts_seeds_ahead_level_and_behind_by_hand():
    from benchmarks._comparison_markdown import comparison_markdown

    differences = {"seeds": [0, 1, 2, 3], "differences": [0.1, 0.0, -0.2, 0.3]}
    result = {
        "summary": {},
        "paired_differences": {
            "full_space_fuse": {
                "test_accuracy": {**differences, "mean": 0.05, "interval_95": [-0.1, 0.2]},
                "balanced_accuracy": {**differences, "mean": -0.5, "interval_95": [-1, 0]},
            }
        },
    }
    row = comparison_markdown(result)["paired"].splitlines()[-1]
    assert row == (
        "| full-space FUSE | 4 | +0.050 [-0.100, +0.200] | -0.500 [-1.000, +0.000] | 2 / 1 / 1 |"
    )


def test_the_markdown_module_s_docstring_example_holds():
    """The benchmarks are outside the doctest paths of the suite: run this one here."""
    import doctest

    from benchmarks import _comparison_markdown

    outcome = doctest.testmod(_comparison_markdown, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert outcome.attempted > 0 and outcome.failed == 0


def test_a_rerun_skips_the_rows_already_written(run):
    _, first, _, first_calls, second_calls = run
    assert first_calls == [(0, m) for m in METHODS]
    assert second_calls == [(1, m) for m in METHODS]
    kept = [r for r in run[2]["rows"] if r["seed"] == 0]
    assert kept == first["rows"]


def test_resnet18_is_trained_as_the_hand_designed_small_vgg_is(monkeypatch):
    """Named only: by default the comparison leaves the costly ResNet-18 out."""
    assert "resnet18" in search_comparison.METHODS
    assert "resnet18" not in search_comparison.parse_args(TINY).methods
    assert search_comparison.parse_args([*TINY, "--methods", "resnet18"]).methods == ["resnet18"]
    trained = []
    monkeypatch.setattr(
        search_comparison,
        "train_hand_designed",
        lambda name, target, budget, key: trained.append((name, target, budget)) or {"row": name},
    )
    setting = search_comparison.Setting("target", None, None, {}, "budget")
    assert search_comparison.run_method("resnet18", setting, seed=0) == {"row": "resnet18"}
    assert trained == [("resnet18", "target", "budget")]


def test_full_space_fuse_rows_come_from_its_one_epoch_search_and_retrained_winner(monkeypatch):
    """A default method: the pipeline's full-space baseline searches, `train_final` retrains."""
    assert "full_space_fuse" in search_comparison.DEFAULT_METHODS
    searched, trained = [], []
    genotype = Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
    found = SimpleNamespace(final=SimpleNamespace(genotype=genotype), search_seconds=2.5)
    final = SimpleNamespace(genotype=genotype, model="model", variables="variables", num_params=7)
    monkeypatch.setattr(
        search_comparison,
        "full_space_fuse_baseline",
        lambda target, key, budget, progress: searched.append((target, budget)) or found,
    )
    monkeypatch.setattr(
        search_comparison,
        "train_final",
        lambda g, target, key, budget, progress: trained.append((g, budget)) or final,
    )
    monkeypatch.setattr(
        search_comparison, "scores_on_test", lambda model, variables, target: {"acc": 0.5}
    )
    budget = SearchBudget(final=FinalTraining(epochs=4))
    setting = search_comparison.Setting("target", None, None, {}, budget)
    row = search_comparison.run_method("full_space_fuse", setting, seed=0)
    # One epoch of the search's own final training, the rest of the budget unchanged.
    assert searched == [("target", budget._replace(final=FinalTraining(epochs=1)))]
    assert trained == [(genotype, budget)]  # the winner, with the whole final budget
    assert row == {
        "space": "all",
        "closest_task": None,
        "genotype": json.loads(genotype.to_json()),
        "acc": 0.5,
        "num_params": 7,
        "search_seconds": 2.5,
    }


def test_a_rerun_with_other_arguments_is_refused(run):
    out = run[0]
    before = (out / "comparison.json").read_text()
    args = [*TINY, "--methods", *METHODS, "--channels", "8", "--seeds", "0", "--out", str(out)]
    with pytest.raises(CheckpointError, match="channels: checkpoint 4, now 8"):
        search_comparison.main(args)
    assert (out / "comparison.json").read_text() == before


def test_seeds_take_numbers_and_ranges():
    args = search_comparison.parse_args(["--seeds", "3", "0-2", "--target", "T3"])
    assert args.seeds == [0, 1, 2, 3]
    assert args.baselines == ["T0", "T1", "T2", "E4", "E5", "E6", "E7"]
    with pytest.raises(SystemExit):
        search_comparison.parse_args(["--seeds", "x"])
