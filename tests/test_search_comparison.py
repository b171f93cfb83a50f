"""The search comparison benchmark in a tiny configuration: rows, paired statistics, resume."""

import json
from types import SimpleNamespace

import jax
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
# The fixture's run: LD-NAS (with the zoo's ε-networks and with them drawn per seed), one
# search baseline and the hand-designed network. Full-space FUSE
# would add a compiled round of every operation (about 45 s) and no bookkeeping of its own; its
# dispatch is checked alone below.
METHODS = ("ld-nas", "ld-nas_seeded_zoo", "random_search", "small_vgg")


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
    ld_nas = [row for row in saved["rows"] if row["method"].startswith("ld-nas")]
    assert {row["closest_task"] for row in ld_nas} == {"E1"}
    assert saved["command"].startswith("python -m benchmarks.search_comparison --target E6")
    assert (out / "accuracy_vs_params.png").exists()


def test_the_seeded_zoo_draws_new_networks_and_searches_as_ld_nas_does(run):
    """Its ε-networks are new (other distances); with one baseline it picks the same task,
    and with LD-NAS's keys and space it finds and trains the same network."""
    _, _, result, _, _ = run
    by = {(row["seed"], row["method"]): row for row in result["rows"]}
    for seed in (0, 1):
        seeded, fixed = by[(seed, "ld-nas_seeded_zoo")], by[(seed, "ld-nas")]
        assert set(seeded["distances"]) == {"E1"}
        assert seeded["distances"]["E1"] != pytest.approx(result["distances"]["E1"])
        for field in ("space", "genotype", "test_accuracy", "balanced_accuracy", "num_params"):
            assert seeded[field] == fixed[field], field
    assert by[(0, "ld-nas_seeded_zoo")]["distances"] != by[(1, "ld-nas_seeded_zoo")]["distances"]
    summary = result["seeded_zoo"]
    assert summary["seeds"] == [0, 1] and summary["closest_task"] == ["E1", "E1"]
    assert summary["closest_task_share"] == {"E1": 1.0}
    assert summary["paired_differences"]["ld-nas"]["test_accuracy"]["differences"] == [0.0, 0.0]


def test_the_seeded_zoo_summary_counts_picks_by_hand():
    rows = [
        {"seed": s, "method": m, "closest_task": c, "test_accuracy": a, "balanced_accuracy": a}
        | {"num_params": 10, "search_seconds": 1.0}
        for s, m, c, a in [
            (0, "ld-nas_seeded_zoo", "E4", 0.9),
            (1, "ld-nas_seeded_zoo", "E1", 0.7),
            (2, "ld-nas_seeded_zoo", "E4", 0.8),
            (0, "random_search", None, 0.85),
            (2, "random_search", None, 0.9),
        ]
    ]
    summary = search_comparison.seeded_zoo_summary(rows)
    assert summary["closest_task"] == ["E4", "E1", "E4"]
    assert summary["closest_task_share"] == pytest.approx({"E1": 1 / 3, "E4": 2 / 3})
    paired = summary["paired_differences"]["random_search"]["test_accuracy"]
    assert paired["seeds"] == [0, 2] and paired["differences"] == pytest.approx([0.05, -0.1])
    assert search_comparison.seeded_zoo_summary(rows[3:]) == {}


def test_reseeded_networks_train_every_network_from_the_zoo_command_s_key(monkeypatch):
    """Per task the key of ``zoo --seed SEED``; the spaces stay; the cap is passed on."""
    from ldnas_jax.zoo import ZooEntry, task_key

    trained = []
    monkeypatch.setattr(
        search_comparison,
        "train_task_network",
        lambda data, key, model_name, epochs, max_epochs, progress: trained.append(
            (data.name, jax.random.key_data(key).tolist(), model_name, epochs, max_epochs)
        )
        or f"N_{data.name}",
    )
    network = SimpleNamespace(model_name="small_vgg")
    zoo = {b: ZooEntry(network, f"genotype {b}", f"space {b}", 0.5) for b in ("E1", "E4")}
    load = lambda name: SimpleNamespace(name=name)
    seeded, target_net = search_comparison.reseeded_networks(
        zoo, load("E6"), "vgg16", 3, 2, 8, load
    )
    assert target_net == "N_E6"
    assert {b: (e.network, e.space, e.genotype) for b, e in seeded.items()} == {
        b: (f"N_{b}", f"space {b}", f"genotype {b}") for b in ("E1", "E4")
    }
    expected = lambda name: jax.random.key_data(
        jax.random.fold_in(task_key(jax.random.key(3), name), 0)
    ).tolist()
    assert trained == [
        ("E1", expected("E1"), "small_vgg", 2, 8),
        ("E4", expected("E4"), "small_vgg", 2, 8),
        ("E6", expected("E6"), "vgg16", 2, 8),
    ]


def test_paired_differences_are_the_per_seed_differences_of_the_rows(run):
    _, _, result, _, _ = run
    by = {(row["seed"], row["method"]): row for row in result["rows"]}
    assert sorted(result["paired_differences"]) == ["ld-nas_seeded_zoo", "random_search", "small_vgg"]
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
    methods, paired, paired_seeded = text.split("\n\n")[1:]
    assert paired_seeded.startswith("| LD-NAS, ε-networks per seed minus |")
    assert methods.count("\n") == 1 + len(METHODS)  # a header, its rule, a row per method
    assert "| LD-NAS, ε-networks per seed (closest: E1 ×2) | 2 |" in methods
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


@pytest.mark.parametrize("target", ["E6", "T3"])
def test_the_results_page_quotes_the_committed_json_s_tables_verbatim(target):
    """The page's Table 1 on the searched zoo is the committed JSON's, not a hand copy."""
    from pathlib import Path

    from benchmarks._comparison_markdown import comparison_markdown

    root = Path(__file__).resolve().parents[1]
    name = f"search_comparison_{target}_searched_zoo.json"
    result = json.loads((root / "docs" / name).read_text())
    page = (root / "docs" / "results" / "search_comparison.md").read_text()
    tables = comparison_markdown(result)
    assert tables["paired_seeded"], "the run has LD-NAS with ε-networks drawn per seed"
    for name, table in tables.items():
        assert table in page, name
