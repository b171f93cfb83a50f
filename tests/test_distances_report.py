"""How sure the ``distances`` command's closest tasks are, and which ε-networks missed ε.

The command runs once per module on three embedded tasks, two seeds and untrained random
ε-networks (training is not under test), with a small bootstrap. Its JSON, printed report,
heatmap and resume are checked against the library's pieces computed here.
"""

import json
import shutil

import jax
import numpy as np
import pytest

from ldnas_jax.cli import main
from ldnas_jax.commands import distances as distances_command
from ldnas_jax.commands._epsilon_report import epsilon_line
from ldnas_jax.data import load_task
from ldnas_jax.distances import closest_shares, closest_task
from ldnas_jax.experiments import _reproduce as reproduce_module
from ldnas_jax.models import make_model
from ldnas_jax.plots import plot_distance_heatmap
from ldnas_jax.tasks import DistanceOptions, TaskNetwork, bootstrap_log_dets, bootstrap_tables

TASKS = ["E0", "E1", "E7"]
SEEDS, RESAMPLES, CHUNKS, MAX_TRAIN, FISHER_EXAMPLES = 2, 6, 4, 16, 8
ARGV = [
    "distances", "--tasks", *TASKS, "--seeds", str(SEEDS), "--max-train", str(MAX_TRAIN),
    "--fisher-examples", str(FISHER_EXAMPLES), "--bootstrap", str(RESAMPLES),
    "--bootstrap-chunks", str(CHUNKS), "--no-progress",
]  # fmt: skip
# Test accuracies of the random ε-networks, (seed, task) -> accuracy; ε = 0.1.
ACCURACY = {(0, "E0"): 0.95, (0, "E1"): 0.91, (0, "E7"): 0.5, (1, "E0"): 0.97, (1, "E1"): 0.8}


def _networks(datas):
    """Random ε-networks per seed, keyed as the command keys their training."""
    by_key = {}
    for seed in range(SEEDS):
        for index, data in enumerate(datas):
            key = jax.random.fold_in(jax.random.key(seed), index)
            model = make_model("small_vgg", data.num_classes)
            variables = dict(model.init(key, data.train.x[:1], train=False))
            accuracy = ACCURACY.get((seed, data.name), 0.99)
            by_key[bytes(np.asarray(jax.random.key_data(key)))] = TaskNetwork(
                data.name, "small_vgg", data.num_classes, variables, accuracy, 0.1
            )
    return by_key


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    datas = [load_task(t, seed=0, max_train=MAX_TRAIN) for t in TASKS]
    by_key = _networks(datas)

    def fake_training(data, *, key, **kwargs):
        return by_key[bytes(np.asarray(jax.random.key_data(key)))]

    out = tmp_path_factory.mktemp("distances") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reproduce_module, "train_task_network", fake_training)
        assert main([*ARGV, "--out", str(out)]) == 0
    payload = json.loads((out / "distances.json").read_text())
    return out, datas, by_key, payload


def _copy_without_the_table(out, tmp_path):
    """A copy of the run's folder without distances.json, for a resume to finish."""
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "distances.json").unlink()
    return copy


def _seed_networks(by_key, seed):
    return [by_key[bytes(np.asarray(jax.random.key_data(jax.random.fold_in(
        jax.random.key(seed), i))))] for i in range(len(TASKS))]  # fmt: skip


@pytest.mark.slow
def test_seed_shares_are_the_closest_shares_of_the_seed_tables(run):
    _, _, _, payload = run
    per_seed = np.array(payload["per_seed"])
    assert per_seed.shape == (SEEDS, 3, 3)
    np.testing.assert_array_equal(payload["seed_shares"], closest_shares(per_seed))
    for t in TASKS:
        winners = [closest_task(table, t, names=TASKS) for table in per_seed]
        summary = payload["summary"][t]
        assert summary["closest"] == payload["closest"][t]
        assert summary["seed_share"] == winners.count(summary["closest"]) / SEEDS


@pytest.mark.slow
def test_bootstrap_shares_are_of_the_seed_mean_table_on_paired_resamples(run):
    _, datas, by_key, payload = run
    options = DistanceOptions(max_examples=FISHER_EXAMPLES)
    resample_key = jax.random.fold_in(jax.random.key(0), distances_command.RESAMPLE_KEY)
    tables = []
    for seed in range(SEEDS):
        log_dets = bootstrap_log_dets(
            _seed_networks(by_key, seed),
            [d.train for d in datas],
            [d.num_classes for d in datas],
            options=options,
            key=jax.random.fold_in(jax.random.key(seed), distances_command.FISHER_KEY),
            resample_key=resample_key,
            resamples=RESAMPLES,
            chunks=CHUNKS,
        )
        tables.append(bootstrap_tables(log_dets))
    expected = closest_shares(np.mean(tables, axis=0))
    np.testing.assert_allclose(payload["bootstrap_shares"], expected, atol=1e-12)
    assert payload["bootstrap"]["resamples"] == RESAMPLES
    assert payload["bootstrap"]["chunks"] == CHUNKS
    for t in TASKS:
        b = TASKS.index(payload["closest"][t])
        assert payload["summary"][t]["bootstrap_share"] == expected[b, TASKS.index(t)]
    np.testing.assert_allclose(np.sum(payload["bootstrap_shares"], axis=0), 1.0)


@pytest.mark.slow
def test_the_networks_that_missed_epsilon_are_listed(run):
    _, _, _, payload = run
    missed = {(m["seed"], m["task"]): m["test_accuracy"] for m in payload["missed_epsilon"]}
    assert missed == {(0, "E7"): 0.5, (1, "E1"): 0.8}
    records = payload["epsilon_networks"]
    assert len(records) == SEEDS * len(TASKS)
    assert all(r["met_epsilon"] == ((r["seed"], r["task"]) not in missed) for r in records)
    assert payload["epsilon"] == 0.1


@pytest.mark.slow
def test_the_printed_report_gives_each_decision_s_shares_and_the_misses(run, tmp_path, capsys):
    out, _, _, payload = run
    copy = _copy_without_the_table(out, tmp_path)
    assert main([*ARGV, "--out", str(copy), "--resume"]) == 0  # everything saved: no Fisher
    printed = capsys.readouterr().out
    for t in TASKS:
        s = payload["summary"][t]
        wins = round(s["seed_share"] * SEEDS)
        line = (
            f"closest baseline to {t}: {s['closest']} (d = {s['distance']:.4g}; "
            f"wins {wins}/{SEEDS} seeds, {100 * s['bootstrap_share']:.0f}% of resamples)"
        )
        assert line in printed
    assert (
        "ε-networks that missed ε = 0.1 (test accuracy < 0.9): E7 seed 0 (0.500), "
        "E1 seed 1 (0.800)" in printed
    )


@pytest.mark.slow
def test_a_resume_recomputes_only_the_missing_bootstrap_column(run, tmp_path, monkeypatch):
    out, _, _, payload = run
    copy = _copy_without_the_table(out, tmp_path)
    path = copy / "checkpoints" / "bootstrap_seed_1.json"
    saved = json.loads(path.read_text())
    del saved["columns"]["E1"]  # as a run killed before column E1 of seed 1
    path.write_text(json.dumps(saved))
    calls = []
    real = distances_command.bootstrap_column_log_dets

    def counting(networks, targets, classes, t, **kwargs):
        calls.append(t)
        return real(networks, targets, classes, t, **kwargs)

    monkeypatch.setattr(distances_command, "bootstrap_column_log_dets", counting)
    assert main([*ARGV, "--out", str(copy), "--resume"]) == 0
    assert calls == [1]
    again = json.loads((copy / "distances.json").read_text())
    for field in ("per_seed", "seed_shares", "bootstrap_shares", "summary", "missed_epsilon"):
        assert again[field] == payload[field], field


def test_bootstrap_zero_turns_the_resamples_off(tmp_path, monkeypatch):
    datas = [load_task(t, seed=0, max_train=MAX_TRAIN) for t in TASKS[:2]]
    by_key = _networks(datas)
    monkeypatch.setattr(
        reproduce_module,
        "train_task_network",
        lambda data, *, key, **kw: by_key[bytes(np.asarray(jax.random.key_data(key)))],
    )
    argv = [*ARGV[:2], *TASKS[:2], "--seeds", "1", "--max-train", str(MAX_TRAIN)]
    argv += ["--fisher-examples", "4", "--bootstrap", "0", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    payload = json.loads((tmp_path / "run" / "distances.json").read_text())
    assert payload["bootstrap_shares"] is None
    assert all(s["bootstrap_share"] is None for s in payload["summary"].values())
    assert not (tmp_path / "run" / "checkpoints" / "bootstrap_seed_0.json").exists()


def test_report_lines():
    tie = {"closest": "E1", "distance": 0.5, "seed_share": 0.5, "bootstrap_share": None}
    assert distances_command.closest_line("E3", tie, 3) == (
        "closest baseline to E3: E1 (d = 0.5; wins 1.5/3 seeds)"
    )
    assert epsilon_line([], 0.1) == ("every ε-network met ε = 0.1 (test accuracy >= 0.9)")


def _texts(fig):
    return [t.get_text() for t in fig.axes[0].texts]


def test_heatmap_marks_shares_on_the_boxed_cells_and_the_tasks_that_missed_epsilon():
    mean = np.array([[0.0, 0.2, 0.9], [0.3, 0.0, 0.1], [0.1, 0.4, 0.0]])
    shares = np.array([[0.0, 0.7, 0.0], [0.25, 0.0, 1.0], [0.75, 0.3, 0.0]])
    fig = plot_distance_heatmap(
        mean, ["a", "b", "c"], shares={"seeds": shares, "resamples": shares / 2},
        missed_epsilon=["c"],
    )  # fmt: skip
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c*"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c*"]
    assert "seeds | resamples" in ax.get_title() and "* ε-network missed ε" in ax.get_title()
    # Texts run row by row; the boxed cells are (c, a), (a, b), (b, c).
    texts = np.array(_texts(fig)).reshape(3, 3)
    assert texts[2, 0].endswith("\n75%|38%")  # 37.5 -> 38, half to even
    assert texts[0, 1].endswith("\n70%|35%")
    assert texts[1, 2].endswith("\n100%|50%")
    assert sum("%" in t for t in texts.ravel()) == 3
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_heatmap_without_the_new_arguments_is_unchanged_and_bad_ones_are_refused():
    mean = np.array([[0.0, 1.0], [2.0, 0.0]])
    fig = plot_distance_heatmap(mean, ["a", "b"], std=np.zeros((2, 2)))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b"]
    assert not any("%" in t for t in _texts(fig))
    assert fig.axes[0].get_title() == "d[b, t]: rows source b, columns target t"
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        plot_distance_heatmap(mean, ["a", "b"], shares=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="unknown tasks"):
        plot_distance_heatmap(mean, ["a", "b"], missed_epsilon=["z"])
    with pytest.raises(TypeError, match="collection"):
        plot_distance_heatmap(mean, ["a", "b"], missed_epsilon="a")
    import matplotlib.pyplot as plt

    plt.close("all")
