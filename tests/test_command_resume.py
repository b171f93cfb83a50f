"""``--resume`` of the ``distances`` command: reuse of ε-networks and log-det pairs, refusals.

One tiny run (two embedded tasks, one seed, one epoch) is made once per module; the
tests then damage copies of its output as a killed run would leave it.
"""

import json
import shutil

import numpy as np
import pytest

from ldnas_jax.checkpoint import CheckpointError
from ldnas_jax.cli import main
from ldnas_jax.commands import _resume
from ldnas_jax.commands._resume import open_run, resumable_pairs
from ldnas_jax.data import load_task
from ldnas_jax.distances import mean_log_det, pair_reference
from ldnas_jax.experiments import _reproduce as reproduce_module
from ldnas_jax.tasks import every_pair, fisher_on_task, load_task_network

TASKS = ["E0", "E7"]
TINY = [
    "distances", "--tasks", *TASKS, "--seeds", "1", "--epochs", "1", "--max-train", "48",
    "--fisher-examples", "16", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("distances") / "run"
    assert main([*TINY, "--out", str(out)]) == 0
    return out


def _network_files(out):
    root = out / "checkpoints" / "networks"
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_resume_reuses_networks_and_pairs_and_computes_only_the_missing_pair(
    finished, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    reference = json.loads((finished / "distances.json").read_text())
    # As a run killed after the networks and three of the four pairs leaves it.
    (out / "distances.json").unlink()
    table_path = out / "checkpoints" / "log_dets_seed_0.json"
    table = json.loads(table_path.read_text())
    assert table["names"] == TASKS and all(v is not None for row in table["table"] for v in row)
    table["table"][0][1] = None  # L[E0, E7] not computed yet
    table_path.write_text(json.dumps(table))
    networks_before = _network_files(out)
    assert len(networks_before) > 0

    def no_training(*args, **kwargs):
        raise AssertionError("a saved ε-network was trained again")

    monkeypatch.setattr(reproduce_module, "train_task_network", no_training)
    assert main([*TINY, "--out", str(out), "--resume"]) == 0

    assert _network_files(out) == networks_before  # not rewritten
    again = json.loads((out / "distances.json").read_text())
    np.testing.assert_allclose(again["per_seed"], reference["per_seed"], rtol=1e-6, atol=1e-9)
    assert again["closest"] == reference["closest"]
    # The recomputed pair by eq. 2 from the saved networks: d[b, t] = |L[b, t] - L[t, t]|,
    # with L[b, t] from N_b's Fisher on t's first 16 training examples, σ relative to
    # F_{t,t}'s mean entry (the default normalisation).
    e7 = load_task("E7", seed=0, max_train=48)
    nets = {t: load_task_network(out / "checkpoints/networks/seed_0" / t)[0] for t in TASKS}
    fishers = {b: fisher_on_task(nets[b], e7.train, e7.num_classes, max_examples=16) for b in TASKS}
    r_t = pair_reference(fishers["E7"])
    log_det = {b: mean_log_det(fishers[b], reference=r_t) for b in TASKS}
    saved = json.loads(table_path.read_text())["table"]
    assert saved[0][1] == pytest.approx(log_det["E0"], rel=1e-5)
    assert again["per_seed"][0][0][1] == pytest.approx(abs(log_det["E0"] - log_det["E7"]), rel=1e-4)


@pytest.mark.slow
def test_a_non_empty_out_without_resume_is_refused(finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = (out / "distances.json").read_bytes()
    assert main([*TINY, "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "distances.json").read_bytes() == before


@pytest.mark.slow
def test_a_resume_with_other_arguments_is_refused(finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    argv = [*TINY, "--out", str(out), "--resume"]
    changed = [a if a != "16" else "8" for a in argv]  # --fisher-examples 8
    assert main(changed) == 2
    assert "fisher_examples: checkpoint 16, now 8" in capsys.readouterr().err


def _counting_fill(calls):
    """A fill that records the pairs it is asked for; T[b, t] = 10 b + t + 0.5."""

    def fill(pairs):
        for b, t in pairs:
            calls.append((b, t))
            yield b, t, 10.0 * b + t + 0.5

    return fill


def test_resumable_pairs_computes_each_missing_pair_once_in_the_pair_loop_order(tmp_path):
    path = tmp_path / "t.json"
    calls = []
    full = resumable_pairs(path, ["a", "b", "c"], _counting_fill(calls))
    expected = [[10.0 * b + t + 0.5 for t in range(3)] for b in range(3)]
    assert full.tolist() == expected
    assert calls == every_pair(3)  # column by column, F_{t,t} first
    saved = json.loads(path.read_text())
    saved["table"][2][0] = saved["table"][1][2] = None
    path.write_text(json.dumps(saved))
    calls.clear()
    assert resumable_pairs(path, ["a", "b", "c"], _counting_fill(calls)).tolist() == expected
    assert calls == [(2, 0), (1, 2)]
    calls.clear()
    resumable_pairs(path, ["a", "b", "c"], _counting_fill(calls))
    assert calls == []
    with pytest.raises(CheckpointError, match="holds the tasks"):
        resumable_pairs(path, ["a", "b", "x"], _counting_fill(calls))
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        resumable_pairs(path, ["a", "b", "c"], _counting_fill(calls))


def test_resumable_pairs_saves_every_few_pairs_and_at_the_end(tmp_path, monkeypatch):
    # (Moved from the demo's own table, which is now this one.) A kill after four pairs
    # leaves a partly filled table; five remain, saved after the 2nd, the 4th and the last.
    path = tmp_path / "log_dets.json"
    order = every_pair(3)
    expected = [[10.0 * b + t + 0.5 for t in range(3)] for b in range(3)]
    partial = [[None] * 3 for _ in range(3)]
    for b, t in order[:4]:
        partial[b][t] = expected[b][t]
    path.write_text(json.dumps({"names": ["T0", "T1", "T2"], "table": partial}))
    saves = []
    real_write = _resume.write_json_atomic
    monkeypatch.setattr(
        _resume,
        "write_json_atomic",
        lambda p, payload: saves.append(payload) or real_write(p, payload),
    )
    calls = []
    table = resumable_pairs(path, ["T0", "T1", "T2"], _counting_fill(calls), every=2)
    assert table.tolist() == expected
    assert calls == order[4:]  # only the missing pairs
    filled = [sum(v is not None for row in s["table"] for v in row) for s in saves]
    assert filled == [6, 8, 9]
    assert json.loads(path.read_text())["table"] == expected
    path.write_text(json.dumps({"names": ["T0", "T9", "T2"], "table": partial}))
    with pytest.raises(CheckpointError, match="T9"):
        resumable_pairs(path, ["T0", "T1", "T2"], _counting_fill(calls), every=1)


def test_open_run_records_the_config_and_compares_it(tmp_path):
    out = tmp_path / "run"
    checkpoints = open_run(out, {"seeds": 2, "tasks": ["E0", "E1"]}, resume=False)
    assert json.loads((checkpoints / "config.json").read_text()) == {
        "seeds": 2,
        "tasks": ["E0", "E1"],
    }
    assert open_run(out, {"seeds": 2, "tasks": ["E0", "E1"]}, resume=True) == checkpoints
    with pytest.raises(CheckpointError, match="seeds"):
        open_run(out, {"seeds": 3, "tasks": ["E0", "E1"]}, resume=True)
    with pytest.raises(CheckpointError, match="not empty"):
        open_run(out, {"seeds": 2, "tasks": ["E0", "E1"]}, resume=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["transfer-check", "--tasks", "E0", "E1", "E4", "--no-progress"],
        ["reproduce", "--tasks", "E0", "E1", "--no-progress"],
    ],
)
def test_other_commands_refuse_a_non_empty_out_before_any_training(argv, tmp_path, capsys):
    (tmp_path / "earlier.txt").write_text("an earlier run")
    config = tmp_path / "settings.json"  # reproduce's own --config may lie in OUT
    config.write_text(json.dumps({"seeds": 1}))
    extra = ["--config", str(config)] if argv[0] == "reproduce" else []
    assert main([*argv, *extra, "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier.txt", "settings.json"]


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--no-progress"],
        [*TINY],
        ["transfer-check", "--tasks", "E0", "E1", "E4", "--no-progress"],
        ["reproduce", "--tasks", "E0", "E1", "--no-progress"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_resume_of_a_directory_that_holds_no_run_is_refused(argv, tmp_path, capsys):
    # --resume must not start afresh beside files that no run of ours wrote.
    (tmp_path / "notes.txt").write_text("not a run")
    assert main([*argv, "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no run to resume" in err and "notes.txt" in err
    assert len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_resume_of_an_empty_or_new_directory_starts_the_run(tmp_path):
    # Nothing there to mix with: --resume of a new directory is a first run.
    for out in (tmp_path / "new", tmp_path):
        _resume.check_run(out, {"seeds": 1}, resume=True)


class _FakeClock:
    """A wall clock that stands still until moved."""

    def __init__(self, start):
        self.t = start

    def __call__(self):
        return self.t


def _time_stages(clock, now, stages):
    """Runs ``stages``, (name, seconds) in order, on ``clock`` as ``now`` moves; then stops it."""
    for name, seconds in stages:
        clock.stage(name)
        now.t += seconds
    clock.stop()


def test_stage_clock_sums_the_stages_of_a_finished_run_and_its_resume(tmp_path):
    now = _FakeClock(1000.0)
    path = tmp_path / "checkpoints" / "timing.json"
    clock = _resume.StageClock(path, out=tmp_path, resume=False, now=now)
    _time_stages(clock, now, [("zoo", 10.0), ("search", 40.0)])
    assert clock.stage_seconds() == {"zoo": 10.0, "search": 40.0}
    # The resume finds every stage done: each takes a moment, added to the first run's.
    now.t += 500.0  # between the two processes: no stage's time
    again = _resume.StageClock(path, out=tmp_path, resume=True, now=now)
    _time_stages(again, now, [("zoo", 0.5), ("search", 1.25)])
    assert again.stage_seconds() == {"zoo": 10.5, "search": 41.25}
    assert again.total_seconds() == 51.75
    assert again.this_run_seconds() == 1.75
    assert [p["resumed"] for p in json.loads(path.read_text())["parts"]] == [False, True]
    # Without --resume the record starts over.
    fresh = _resume.StageClock(path, out=tmp_path, resume=False, now=now)
    assert fresh.stage_seconds() == {} and len(fresh.parts) == 1


def test_stage_clock_reports_one_figure_for_a_run_of_one_part(tmp_path):
    # Stages of 0.004 s round to 0.00 each; a total rounded only after the sum would be
    # 0.01 and this run would seem shorter than the whole of it (CI caught 108.31 < 108.32).
    now = _FakeClock(0.0)
    clock = _resume.StageClock(tmp_path / "timing.json", out=tmp_path, resume=False, now=now)
    _time_stages(clock, now, [(name, 0.004) for name in ("zoo", "distances", "search")])
    assert clock.total_seconds() == clock.this_run_seconds() == 0.0


def test_stage_clock_counts_a_killed_part_up_to_its_last_written_file(tmp_path):
    import os

    now = _FakeClock(2000.0)
    path = tmp_path / "checkpoints" / "timing.json"
    clock = _resume.StageClock(path, out=tmp_path, resume=False, now=now)
    clock.stage("zoo")
    now.t += 10.0
    clock.stage("search")  # killed in here: its last checkpoint 7 s in, then 3 s lost
    saved = tmp_path / "checkpoints" / "step_1.json"
    saved.write_text("{}")
    os.utime(saved, (now.t + 7.0, now.t + 7.0))
    os.utime(path, (now.t + 60.0, now.t + 60.0))  # the record itself is no evidence of work
    now.t += 100.0
    resumed = _resume.StageClock(path, out=tmp_path, resume=True, now=now)
    resumed.stage("search")
    now.t += 5.0
    resumed.stop()
    assert resumed.stage_seconds() == {"zoo": 10.0, "search": 12.0}
    assert resumed.total_seconds() == 22.0 and resumed.this_run_seconds() == 5.0
    parts = json.loads(path.read_text())["parts"]
    assert parts[0]["killed"] and "killed" not in parts[1]


def test_stage_clock_refuses_a_corrupt_record(tmp_path):
    path = tmp_path / "timing.json"
    path.write_text('{"parts": [{"resumed": false}]}')
    with pytest.raises(CheckpointError, match="timing record .* is corrupt"):
        _resume.StageClock(path, out=tmp_path, resume=True)
