"""The space check's statistics against hand arithmetic, its controls and its resume."""

import json

import jax
import numpy as np
import pytest

from ldnas_jax import CheckpointError, JsonCheckpoint, nas
from ldnas_jax.experiments._space_check import (
    control_contrasts,
    control_spaces,
    space_check_report,
    distance_contrasts,
    distance_verdicts,
    space_check_rows,
    space_summary,
)


def _rows(table: dict[str, list[float]]) -> list[dict]:
    return [
        {"space": name, "seed": seed, "test_accuracy": a, "balanced_accuracy": a / 2}
        for name, values in table.items()
        for seed, a in enumerate(values)
    ]


def test_controls_match_the_baseline_sizes_and_never_hold_zero():
    spaces = {
        "A": nas.SearchSpace(("identity", "sep_conv_3x3"), shared_cells=True),
        "B": nas.SearchSpace(("identity", "sep_conv_3x3", "max_pool_3x3", "avg_pool_3x3")),
    }
    controls = control_spaces(spaces, count=4, seed=1)
    assert [len(s.operations) for s in controls.values()] == [2, 4, 2, 4]
    assert all("zero" not in s.operations for s in controls.values())
    assert all(s.shared_cells for s in controls.values())
    assert controls == control_spaces(spaces, count=4, seed=1)  # seeded
    with pytest.raises(ValueError, match="count >= 1"):
        control_spaces(spaces, count=0, seed=0)


def test_a_resumed_check_runs_only_the_missing_rows(tmp_path):
    spaces = {"A": nas.SearchSpace(("identity",)), "B": nas.SearchSpace(("max_pool_3x3",))}
    calls = []

    def fake(space, key):
        calls.append((space.operations, tuple(np.asarray(jax.random.key_data(key)).ravel())))
        if len(calls) == kill_after + 1:
            raise KeyboardInterrupt  # stands for a kill during the fourth row
        return {"test_accuracy": 0.1 * len(calls), "balanced_accuracy": 0.5}

    kill_after = 99
    full = space_check_rows(spaces, fake, key=jax.random.key(0), seeds=[0, 1])
    assert len(full) == 4 and len(calls) == 4
    # Every space of one seed gets the same key.
    assert calls[0][1] == calls[1][1] != calls[2][1]
    store = JsonCheckpoint(tmp_path / "rows.json", resume=True)
    calls.clear()
    kill_after = 3
    with pytest.raises(KeyboardInterrupt):
        space_check_rows(spaces, fake, key=jax.random.key(0), seeds=[0, 1], store=store)
    assert len(json.loads(store.directory.read_text())["history"]) == 3
    calls.clear()
    kill_after = 9
    resumed = space_check_rows(spaces, fake, key=jax.random.key(0), seeds=[0, 1], store=store)
    # Only the fourth row ran again, with the fourth row's key; the first three were kept.
    assert len(calls) == 1 and resumed[:3] == full[:3]
    assert [(r["space"], r["seed"]) for r in resumed] == [(r["space"], r["seed"]) for r in full]
    with pytest.raises(CheckpointError, match="different run.*seeds"):
        space_check_rows(spaces, fake, key=jax.random.key(0), seeds=[0, 2], store=store)


def test_rho_regret_and_rank_by_hand():
    # Mean accuracies over two seeds: A 0.80, B 0.70, C 0.90.
    rows = _rows({"A": [0.78, 0.82], "B": [0.70, 0.70], "C": [0.88, 0.92]})
    # d ranks B closest, then A, then C: −d orders B > A > C, accuracy orders C > A > B.
    verdict = distance_verdicts(rows, {"d": {"A": 0.2, "B": 0.1, "C": 0.3}})["d"]
    assert verdict["chosen"] == "B"
    # Ranks of −d (B 3, A 2, C 1) against accuracy (B 1, A 2, C 3): Spearman −1.
    assert verdict["rho"] == pytest.approx(-1.0)
    assert verdict["regret"] == pytest.approx(0.90 - 0.70)
    assert verdict["chosen_rank"] == 3 and verdict["baselines"] == 3
    low, high = verdict["regret_interval_95"]
    assert low <= verdict["regret"] <= high
    # A distance that picks C has no regret.
    best = distance_verdicts(rows, {"e": {"A": 0.2, "B": 0.3, "C": 0.1}})["e"]
    assert best["chosen"] == "C" and best["regret"] == 0.0 and best["chosen_rank"] == 1
    assert best["regret_interval_95"] == [0.0, 0.0]


def test_contrasts_are_the_paired_differences_of_a_plain_resampling_loop():
    from scipy.stats import spearmanr

    accuracy = {"A": [0.78, 0.82, 0.80], "B": [0.70, 0.75, 0.72], "C": [0.88, 0.91, 0.79]}
    columns = {"ref": {"A": 0.2, "B": 0.1, "C": 0.3}, "d": {"A": 0.3, "B": 0.2, "C": 0.1}}
    contrast = distance_contrasts(_rows(accuracy), columns, reference="ref", resamples=300)["d"]
    verdicts = distance_verdicts(_rows(accuracy), columns)
    assert contrast["rho_minus_reference"] == pytest.approx(
        verdicts["d"]["rho"] - verdicts["ref"]["rho"]
    )
    assert contrast["regret_minus_reference"] == pytest.approx(
        verdicts["d"]["regret"] - verdicts["ref"]["regret"]
    )
    # The same resamples by hand: seeds drawn with replacement, both distances on each.
    names = ["A", "B", "C"]
    draws = np.random.default_rng(0).integers(0, 3, (300, 3))
    rho_diffs, regret_diffs = [], []
    for draw in draws:
        means = [np.mean([accuracy[n][i] for i in draw]) for n in names]
        rho, regret = {}, {}
        for label, column in columns.items():
            d = [column[n] for n in names]
            rho[label] = spearmanr([-x for x in d], means).statistic
            regret[label] = max(means) - means[int(np.argmin(d))]
        rho_diffs.append(rho["d"] - rho["ref"])
        regret_diffs.append(regret["d"] - regret["ref"])
    rho_diffs = [x for x in rho_diffs if np.isfinite(x)]
    assert contrast["rho_interval_95"] == pytest.approx(np.quantile(rho_diffs, [0.025, 0.975]))
    assert contrast["regret_interval_95"] == pytest.approx(
        np.quantile(regret_diffs, [0.025, 0.975])
    )
    assert "ref" not in distance_contrasts(_rows(accuracy), columns, reference="ref")
    with pytest.raises(ValueError, match="reference 'log_det' is not one of"):
        distance_contrasts(_rows(accuracy), columns)


def test_control_contrasts_pair_the_default_s_pick_with_each_control_by_seed():
    rows = _rows({"A": [0.80, 0.90, 0.70], "B": [0.6, 0.6, 0.6], "full": [0.75, 0.85, 0.95]})
    rows.append({"space": "random_0", "seed": 1, "test_accuracy": 0.5, "balanced_accuracy": 0.1})
    contrast = control_contrasts(rows, {"log_det": {"A": 0.1, "B": 0.2}})
    assert contrast["chosen"] == "A" and set(contrast["minus"]) == {"full", "random_0"}
    full = contrast["minus"]["full"]
    assert full["seeds"] == [0, 1, 2]
    assert full["differences"] == pytest.approx([0.05, 0.05, -0.25])
    assert full["mean"] == pytest.approx(-0.05)
    # The interval by hand: means of the differences over seeds drawn with replacement.
    draws = np.random.default_rng(0).integers(0, 3, (2000, 3))
    means = [np.mean([[0.05, 0.05, -0.25][i] for i in draw]) for draw in draws]
    assert full["interval_95"] == pytest.approx(np.quantile(means, [0.025, 0.975]))
    assert contrast["minus"]["random_0"]["seeds"] == [1]  # only the seed both spaces have
    balanced = control_contrasts(
        rows, {"log_det": {"A": 0.1, "B": 0.2}}, metric="balanced_accuracy"
    )
    assert balanced["minus"]["random_0"]["differences"] == pytest.approx([0.45 - 0.1])
    with pytest.raises(ValueError, match="reference 'log_det' is not one of"):
        control_contrasts(rows, {"d": {"A": 0.1}})


def test_the_summary_means_and_intervals():
    summary = space_summary(_rows({"A": [0.6, 0.8, 1.0]}))
    assert summary["A"]["test_accuracy"]["mean"] == pytest.approx(0.8)
    assert summary["A"]["balanced_accuracy"]["mean"] == pytest.approx(0.4)
    low, high = summary["A"]["test_accuracy"]["interval_95"]
    assert 0.6 <= low <= 0.8 <= high <= 1.0


def test_spaces_without_a_common_seed_are_refused():
    rows = [
        {"space": "A", "seed": 0, "test_accuracy": 0.5},
        {"space": "B", "seed": 1, "test_accuracy": 0.5},
    ]
    with pytest.raises(ValueError, match="no seed has a row for every space"):
        distance_verdicts(rows, {"d": {"A": 0.1, "B": 0.2}})


def _fake_zoo(names):
    from ldnas_jax.zoo import ZooEntry

    spaces = {
        "A": nas.SearchSpace(("identity", "sep_conv_3x3"), shared_cells=True),
        "B": nas.SearchSpace(("max_pool_3x3", "sep_conv_5x5"), shared_cells=True),
        "C": nas.SearchSpace(("identity", "dil_conv_3x3"), shared_cells=True),
        "T": nas.SearchSpace(("identity",), shared_cells=True),
    }
    return {
        n: ZooEntry(f"net-{n}", spaces[n].sample(jax.random.key(0), 1)[0], spaces[n], 0.5)
        for n in names
    }


def test_space_check_wires_distances_spaces_rows_and_resume(tmp_path, monkeypatch):
    from ldnas_jax.checkpoint import CheckpointError
    from ldnas_jax.commands.space_check import verdict_table
    from ldnas_jax.data import Split, TaskData
    from ldnas_jax.experiments import _space_check
    from ldnas_jax.plots import plot_space_check

    accuracy = {"A": 0.9, "B": 0.6, "C": 0.8}  # by the space's first operation below

    def fake_distances(target, baselines, network, *, options, distance, key):
        assert network == "net-T" and set(baselines) == {"A", "B", "C"}
        return {"A": 0.1, "B": 0.3, "C": 0.2}

    def fake_search(target, budget, progress=False):
        def run(space, key):
            first = {"identity": 0.85, "max_pool_3x3": 0.6}.get(space.operations[0], 0.7)
            hit = [n for n, e in zoo.items() if e.space == space]
            value = accuracy[hit[0]] if hit and hit[0] in accuracy else first
            return {"test_accuracy": value, "balanced_accuracy": value / 2}

        return run

    monkeypatch.setattr(_space_check, "distances_to_target", fake_distances)
    monkeypatch.setattr(_space_check, "fuse_then_train", fake_search)
    zoo = _fake_zoo("ABCT")
    split = Split(np.zeros((4, 8, 8, 3), np.float32), np.array([0, 1, 0, 1], np.int32))
    target = TaskData("T", 2, split, split, split)
    path = tmp_path / "rows.json"
    result = _space_check.space_check(
        target, zoo, key=jax.random.key(0), seeds=[0, 1], controls=3, path=path, progress=False
    )
    assert set(result["summary"]) == {"A", "B", "C", "full", "random_0", "random_1", "random_2"}
    assert len(result["rows"]) == 14
    verdict = result["verdicts"]["test_accuracy"]["log_det"]
    assert verdict["chosen"] == "A" and verdict["regret"] == 0.0 and verdict["rho"] == 1.0
    assert set(result["verdicts"]["test_accuracy"]) == set(_space_check.SPACE_CHECK_DISTANCES)
    contrasts = result["contrasts"]["balanced_accuracy"]
    assert set(contrasts) == set(_space_check.SPACE_CHECK_DISTANCES) - {"log_det"}
    assert (
        contrasts["frechet"]
        == distance_contrasts(result["rows"], result["distances"], metric="balanced_accuracy")[
            "frechet"
        ]
    )
    assert "minus log_det" in verdict_table(result)
    assert result["controls"]["test_accuracy"] == control_contrasts(
        result["rows"], result["distances"]
    )
    assert "A minus full" in verdict_table(result)
    again = _space_check.space_check(
        target, zoo, key=jax.random.key(0), seeds=[0, 1], path=path, progress=False
    )
    assert again["rows"] == result["rows"]
    with pytest.raises(CheckpointError, match="different run"):
        _space_check.space_check(target, zoo, key=jax.random.key(1), seeds=[0, 1], path=path)
    ax = plot_space_check(result, tmp_path / "check.png")
    assert (tmp_path / "check.png").exists()
    assert "closest task's space" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_the_command_writes_the_check_s_spaces_beside_its_arguments(tmp_path, monkeypatch):
    from ldnas_jax.cli import main
    from ldnas_jax.commands import space_check as command

    spaces = {"E1": ["identity"], "full": ["identity", "max_pool_3x3"]}
    seen = {}

    def fake_check(target, zoo, **kwargs):
        seen.update(kwargs, target=target.name)
        return {
            "config": {"spaces": spaces, "seeds": [0, 1]},
            "distances": {"log_det": {"E1": 0.1}},
            "rows": [],
            "summary": {},
            "verdicts": {"test_accuracy": {}},
            "contrasts": {"test_accuracy": {}},
        }

    monkeypatch.setattr(command, "space_check", fake_check)
    plotted = []
    monkeypatch.setattr(command, "plot_space_check", lambda result, path: plotted.append(result))
    out = tmp_path / "run"
    argv = ["space-check", "--out", str(out), "--target", "E6", "--seeds", "0-1", "--no-progress"]
    assert main(argv) == 0
    written = json.loads((out / "space_check.json").read_text())
    assert written["check"]["spaces"] == spaces  # the check's own record is kept
    assert written["config"]["target"] == "E6" and written["seeds"] == [0, 1]  # the arguments
    assert written["command"].startswith("python -m ldnas_jax space-check --out")
    assert seen["target"] == "E6" and seen["seeds"] == [0, 1]
    assert plotted[0]["config"]["spaces"] == spaces  # the picture still gets the check's record
    tables = (out / "space_check.md").read_text()
    assert "| space | operations | d log-det (default) |" in tables


@pytest.mark.parametrize("name", ["space_check_E6.json", "space_check_T3.json"])
def test_the_results_page_quotes_the_committed_json_s_tables_verbatim(name):
    """The page's tables are the formatter's output for the committed JSON, so a figure on the
    page cannot drift from the JSON it names."""
    from pathlib import Path

    from ldnas_jax.commands._space_check_markdown import space_check_markdown

    docs = Path(__file__).resolve().parents[1] / "docs"
    path = docs / name
    if not path.exists():
        pytest.skip(f"{name} is not committed yet")
    page = (docs / "results" / "space_check.md").read_text(encoding="utf-8")
    tables = space_check_markdown(json.loads(path.read_text()))
    for label, table in tables.items():
        assert table in page, f"the {label} table of {name} is not on the page as the JSON has it"


def test_a_report_so_far_uses_only_the_seeds_every_space_has():
    from ldnas_jax.plots import plot_space_check

    config = {
        "target": "T",
        "spaces": {"A": ["identity"], "B": ["max_pool_3x3"]},
        "seeds": [0, 1, 2],
    }
    rows = _rows({"A": [0.9, 0.8, 0.7], "B": [0.5, 0.6]})  # seed 2 of B unfinished
    distances = {"log_det": {"A": 0.1, "B": 0.2}}
    report = space_check_report(config, distances, rows)
    assert report["seeds_reported"] == [0, 1] and report["complete"] is False
    assert report["rows"] == rows  # every row is kept; the statistics use seeds 0 and 1
    assert report["summary"]["A"]["test_accuracy"]["mean"] == pytest.approx(0.85)
    assert report["verdicts"]["test_accuracy"]["log_det"]["seeds"] == [0, 1]
    assert "seeds [0, 1] of [0, 1, 2] so far" in plot_space_check(report).get_title()
    whole = space_check_report(config, distances, [*rows, *_rows({"B": [0, 0, 0.4]})[2:]])
    assert whole["complete"] is True and whole["summary"]["B"]["test_accuracy"]["n"] == 3
    with pytest.raises(ValueError, match="no seed has a row for every space yet"):
        space_check_report(config, distances, _rows({"A": [0.9]}))


def test_the_command_reports_a_run_so_far_and_refuses_other_arguments(
    tmp_path, monkeypatch, capsys
):
    from ldnas_jax.cli import main
    from ldnas_jax.commands import space_check as command

    out = tmp_path / "run"
    argv = ["space-check", "--out", str(out), "--target", "E6", "--seeds", "0-1", "--no-progress"]
    with pytest.raises(CheckpointError, match="no rows.json"):  # no run there yet
        command.check(command_args(command, [*argv[1:], "--report"]))
    monkeypatch.setattr(command, "space_check", lambda *a, **k: (_ for _ in ()).throw(KeyError))
    with pytest.raises(KeyError):  # a run that stops before its first row: the run is recorded
        main(argv)
    config = {
        "target": "E6",
        "spaces": {"E1": ["identity"], "E2": ["max_pool_3x3"]},
        "seeds": [0, 1],
    }
    rows = [
        {"space": n, "seed": s, "test_accuracy": a, "balanced_accuracy": a}
        for n, s, a in [("E1", 0, 0.9), ("E2", 0, 0.7), ("E1", 1, 0.8)]
    ]
    distances = {"log_det": {"E1": 0.1, "E2": 0.3}}
    (out / "rows.json").write_text(
        json.dumps({"config": config, "distances": distances, "rows": rows})
    )
    assert main([*argv, "--report"]) == 0
    written = json.loads((out / "space_check.json").read_text())
    assert written["seeds_reported"] == [0] and written["complete"] is False
    assert written["command"].endswith("--report")
    assert written["verdicts"]["test_accuracy"]["log_det"]["chosen"] == "E1"
    assert "| E1 |" in (out / "space_check.md").read_text()
    capsys.readouterr()
    assert main([*argv, "--max-train", "100", "--report"]) != 0  # not the recorded run
    assert "different run (max_train: checkpoint 2400, now 100)" in capsys.readouterr().err


def command_args(command, argv):
    import argparse

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


# A recorded check for --spaces-from: per space its operations, its cell structure (nodes,
# shared) and a seed-0 winner with that structure.
_RECORDED_OPS = {
    "E1": ["identity", "max_pool_3x3"],
    "E2": ["sep_conv_3x3"],
    "full": ["identity", "sep_conv_3x3"],
    "random_0": ["max_pool_3x3"],
}
_RECORDED_CELLS = {"E1": (3, True), "E2": (4, True), "full": (3, False), "random_0": (4, True)}


def _recorded_check(budget) -> dict:
    winners = {
        "E1": nas.Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3),
        "E2": nas.Genotype(("sep_conv_3x3",) * 6),
        "full": nas.Genotype(("identity",) * 3, ("sep_conv_3x3",) * 3, num_nodes=3),
        "random_0": nas.Genotype(("max_pool_3x3",) * 6),
    }
    rows = [
        {"space": n, "seed": 0, "test_accuracy": 0.5, "balanced_accuracy": 0.5}
        | {"genotype": winners[n].to_json()}
        for n in _RECORDED_OPS
    ]
    check = {
        "target": "E6",
        "train_shape": [6, 8, 8, 3],
        "key": [0, 0],
        "budget": budget.record(),
        "spaces": _RECORDED_OPS,
        "seeds": [0],
    }
    return {"check": check, "distances": {"log_det": {"E1": 0.1, "E2": 0.3}}, "rows": rows}


def test_spaces_from_an_earlier_check_run_only_its_missing_rows(tmp_path, monkeypatch, capsys):
    """``--spaces-from`` rebuilds each space with its recorded winners' cell structure, keeps
    the earlier rows of the asked seeds and runs the rest; another target or budget is refused."""
    from ldnas_jax.cli import main
    from ldnas_jax.commands import space_check as command
    from ldnas_jax.data import Split, TaskData
    from ldnas_jax.experiments import _space_check

    split = Split(np.zeros((6, 8, 8, 3), np.float32), np.array([0, 1] * 3, np.int32))
    target = TaskData("E6", 2, split, split, split)
    monkeypatch.setattr(command, "load_task", lambda name, seed, max_train: target)
    searched = []

    def fake_search(target, budget, progress=False):
        def run(space, key):
            searched.append((space, jax.random.key_data(key).tolist()))
            value = len(space.operations) / 10
            scores = {"test_accuracy": value, "balanced_accuracy": value}
            return {**scores, "genotype": space.sample(key, 1)[0].to_json()}

        return run

    monkeypatch.setattr(_space_check, "fuse_then_train", fake_search)
    budget = command.search_budget(command_args(command, ["--out", "unused"]))  # the defaults
    earlier = _recorded_check(budget)
    recorded = tmp_path / "earlier.json"
    recorded.write_text(json.dumps(earlier))
    out = tmp_path / "run"
    argv = ["space-check", "--out", str(out), "--target", "E6", "--seeds", "0-1", "--no-progress"]
    argv += ["--controls", "1", "--spaces-from", str(recorded)]
    assert main(argv) == 0
    written = json.loads((out / "space_check.json").read_text())
    assert written["rows"][:4] == earlier["rows"]  # kept, not run again
    seed_1 = jax.random.key_data(jax.random.fold_in(jax.random.key(0), 1)).tolist()
    assert [(s.operations, s.num_nodes, s.shared_cells, k) for s, k in searched] == [
        (tuple(ops), *_RECORDED_CELLS[n], seed_1)  # seed 1 alone, each space's own cells
        for n, ops in _RECORDED_OPS.items()
    ]
    assert written["distances"] == earlier["distances"] and written["complete"] is True
    assert written["check"] == {**earlier["check"], "seeds": [0, 1]}
    assert "--spaces-from" in written["command"]
    capsys.readouterr()
    for flags, message in [
        (["--rounds", "1"], "ran at another budget (max_rounds)"),
        (["--target", "E5"], "checked target E6, not E5"),
        (["--zoo", "z"], "--zoo and --spaces-from exclude each other"),
        (["--controls", "2"], "holds 1 controls: pass --controls 1"),
    ]:
        assert main([*argv, *flags]) != 0  # the last --target wins
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="not the first rows of this check"):
        _space_check._write_earlier_rows(
            tmp_path / "x.json",
            {**earlier["check"], "seeds": [1, 0]},
            earlier["distances"],
            earlier,
        )
    with pytest.raises(CheckpointError, match="different run .train_shape"):  # the library checks
        _space_check._write_earlier_rows(
            tmp_path / "x.json",
            {**earlier["check"], "train_shape": [5, 8, 8, 3]},
            earlier["distances"],
            earlier,
        )
