"""The one resumable loop: a killed and resumed loop equals an unbroken one, in both stores."""

import json

import numpy as np
import pytest

from ldnas_jax import (
    CheckpointError,
    JsonCheckpoint,
    LoopState,
    NonFiniteError,
    Step,
    StepCheckpoints,
    run_resumable,
)


class Killed(Exception):
    """Stands for a kill in the middle of a step."""


def running_sum(kill_at=None, nan_at=None):
    """A step that adds ``index + 1`` to an array and records the total; it may die or go NaN."""

    def step(index, state):
        if index == kill_at:
            raise Killed
        total = state.arrays["total"] + (index + 1)
        if index == nan_at:
            raise NonFiniteError(f"sum: total became nan at step {index + 1}")
        return Step({"total": total}, {"step": index, "total": float(total[0])})

    return step


START = LoopState({"total": np.zeros(2, np.float32)}, [], {})


def test_a_killed_loop_resumes_to_the_unbroken_result_in_orbax_checkpoints(tmp_path):
    unbroken = run_resumable(running_sum(), START, steps=5, fingerprint={"run": 1})
    # A plain loop, the reference: 1 + 2 + ... + 5.
    assert unbroken.history[-1]["total"] == sum(range(1, 6)) and len(unbroken.history) == 5
    store = StepCheckpoints(tmp_path, resume=False)
    with pytest.raises(Killed):
        run_resumable(running_sum(kill_at=3), START, steps=5, fingerprint={"run": 1}, store=store)
    with pytest.raises(CheckpointError, match="pass resume=True"):
        run_resumable(running_sum(), START, steps=5, fingerprint={"run": 1}, store=store)
    with pytest.raises(CheckpointError, match="different run.*run"):
        run_resumable(
            running_sum(), START, steps=5, fingerprint={"run": 2}, store=store._replace(resume=True)
        )
    with pytest.raises(CheckpointError, match="has 3 steps, more than the 2 asked for"):
        run_resumable(
            running_sum(), START, steps=2, fingerprint={"run": 1}, store=store._replace(resume=True)
        )
    calls = []

    def counted(index, state):
        calls.append(index)
        return running_sum()(index, state)

    resumed = run_resumable(
        counted, START, steps=5, fingerprint={"run": 1}, store=store._replace(resume=True)
    )
    assert calls == [3, 4]  # steps 0-2 came from the checkpoint of step 3
    assert resumed.history == unbroken.history
    np.testing.assert_array_equal(resumed.arrays["total"], unbroken.arrays["total"])


def test_a_nan_names_the_checkpoint_that_is_kept(tmp_path):
    store = StepCheckpoints(tmp_path / "run")
    with pytest.raises(
        NonFiniteError, match=r"step 4; the last good checkpoint is kept at .*step_00000002"
    ):
        run_resumable(running_sum(nan_at=3), START, steps=5, fingerprint={}, store=store, every=2)
    with pytest.raises(NonFiniteError, match=r"no checkpoint had been written yet"):
        run_resumable(
            running_sum(nan_at=0), START, steps=5, fingerprint={},
            store=StepCheckpoints(tmp_path / "other"),
        )  # fmt: skip


def test_a_stopped_loop_stays_stopped_and_a_new_rule_can_stop_a_restored_one(tmp_path):
    stop_at_two = lambda index, state: running_sum()(index, state)._replace(stop=index == 1)
    store = StepCheckpoints(tmp_path, resume=True)
    first = run_resumable(stop_at_two, START, steps=5, fingerprint={}, store=store)
    assert first.stopped and len(first.history) == 2
    again = run_resumable(running_sum(), START, steps=5, fingerprint={}, store=store)
    assert again.stopped and again.history == first.history
    # A loop that ran out of steps goes on when asked for more, unless the rule says stop.
    other = StepCheckpoints(tmp_path / "other", resume=True)
    run_resumable(running_sum(), START, steps=2, fingerprint={}, store=other)
    held = run_resumable(
        running_sum(), START, steps=5, fingerprint={}, store=other,
        still_stopped=lambda s: s.history[-1]["total"] >= 3,
    )  # fmt: skip
    assert held.stopped and len(held.history) == 2
    longer = run_resumable(running_sum(), START, steps=4, fingerprint={}, store=other)
    assert [r["total"] for r in longer.history] == [1, 3, 6, 10]


def test_a_json_loop_resumes_from_its_file_with_the_field_names_it_was_given(tmp_path):
    start = LoopState(None, [], {"note": "kept beside the rows"})

    def row(index, state):
        if index == kill_at:
            raise Killed
        return Step(None, {"row": index, "square": index * index})

    store = JsonCheckpoint(tmp_path / "rows.json", resume=True, fingerprint_field="config",
                           history_field="rows")  # fmt: skip
    kill_at = 2
    with pytest.raises(Killed):
        run_resumable(row, start, steps=4, fingerprint={"n": 4}, store=store)
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert saved["config"] == {"n": 4} and saved["note"] == "kept beside the rows"
    assert saved["rows"] == [{"row": 0, "square": 0}, {"row": 1, "square": 1}]
    kill_at = None
    done = run_resumable(row, start, steps=4, fingerprint={"n": 4}, store=store)
    assert [r["square"] for r in done.history] == [0, 1, 4, 9]
    assert done.extra == {"note": "kept beside the rows"}
    with pytest.raises(CheckpointError, match="already holds an earlier run"):
        run_resumable(row, start, steps=4, fingerprint={"n": 4}, store=store._replace(resume=False))
    (tmp_path / "rows.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        run_resumable(row, start, steps=4, fingerprint={"n": 4}, store=store)


def test_checkpoints_of_release_0_2_still_resume(tmp_path):
    from ldnas_jax.checkpoint import save_step_checkpoint

    history = [{"step": 0, "total": 1.0}, {"step": 1, "total": 3.0}]
    # 0.2 wrote a training's epoch count beside its history, and a search's "stopped_early".
    save_step_checkpoint(
        tmp_path / "train", 2, {"total": np.full(2, 3.0, np.float32)},
        {"fingerprint": {}, "epoch": 2, "history": history},
    )  # fmt: skip
    store = StepCheckpoints(tmp_path / "train", resume=True)
    resumed = run_resumable(running_sum(), START, steps=3, fingerprint={}, store=store)
    assert [r["total"] for r in resumed.history] == [1, 3, 6] and resumed.extra == {}
    save_step_checkpoint(
        tmp_path / "search", 2, {"total": np.full(2, 3.0, np.float32)},
        {"fingerprint": {}, "history": history, "stopped_early": True, "best": "c", "seconds": 2.0},
    )  # fmt: skip
    store = StepCheckpoints(tmp_path / "search", resume=True)
    stopped = run_resumable(running_sum(), START, steps=3, fingerprint={}, store=store)
    assert stopped.stopped and stopped.history == history and stopped.extra == {"best": "c"}
    assert stopped.seconds >= 2.0
