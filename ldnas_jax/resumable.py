"""One resumable loop: restore, step, checkpoint, and name the checkpoint a failure leaves.

The long computations of the library are loops of numbered steps whose history grows by one
JSON record per step: the epochs of :func:`~ldnas_jax.train_classifier`, the iterations of
:func:`~ldnas_jax.nas.fuse_search`, the samples of :func:`~ldnas_jax.nas.random_search`.
:func:`run_resumable` drives all of them, so that a kill, a resume, an early stop and a NaN
behave the same in each:

- restore: the newest checkpoint of a run with the same fingerprint when resuming; a store
  that already holds a run is refused otherwise, so nothing is overwritten by accident;
- step: ``step(index, state)`` returns a :class:`Step`, whose record joins the history;
- checkpoint: every ``every`` steps, after the last one and after a step that stops the loop;
- failure: a :class:`~ldnas_jax.NonFiniteError` raised by a step gains a note naming the
  checkpoint that is kept (all finite), from which ``resume=True`` continues.

The number of records in the history is the number of steps done, so a checkpoint needs no
separate counter. Two stores keep the checkpoints: :class:`StepCheckpoints` (numbered Orbax
checkpoints, arrays and JSON) and :class:`JsonCheckpoint` (one JSON file, for a loop whose
state is JSON alone, such as a command's table of rows).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from tqdm.auto import tqdm

from ldnas_jax._checks import NonFiniteError, check_int
from ldnas_jax.checkpoint import (
    CheckpointError,
    check_fingerprint,
    last_checkpoint_note,
    resume_from,
    save_step_checkpoint,
    write_json_atomic,
)

__all__ = ["JsonCheckpoint", "LoopState", "Step", "StepCheckpoints", "run_resumable"]

# Fields of a checkpoint's metadata that the loop itself keeps; the rest are the loop's extras.
_OWN_FIELDS = ("fingerprint", "history", "stopped", "seconds")


class LoopState(NamedTuple):
    """A loop's state between two steps.

    Attributes:
      arrays: a pytree of arrays carried from step to step (parameters, optimiser state,
        a PRNG key's data); saved with Orbax.
      history: one JSON-able record per finished step.
      extra: other JSON-able fields the loop carries (e.g. a search's current best).
      stopped: a step has ended the loop early; a resumed stopped loop stays stopped.
      seconds: wall time of the loop over every part of a resumed run.
    """

    arrays: Any
    history: list
    extra: dict
    stopped: bool = False
    seconds: float = 0.0


class Step(NamedTuple):
    """What one step returns: the new arrays, its history record, and whether to stop.

    ``extra`` replaces the loop's extra fields; None keeps them.
    """

    arrays: Any
    record: dict
    stop: bool = False
    extra: dict | None = None


class StepCheckpoints(NamedTuple):
    """Numbered Orbax checkpoints in ``directory`` (the newest ``keep`` are kept).

    ``resume=False`` refuses a directory that already holds checkpoints.
    """

    directory: str | Path
    resume: bool = False
    keep: int = 2

    def restore(self, fingerprint: dict, like: Any) -> tuple[LoopState, Path] | None:
        """The newest checkpoint's state and path; None when there is none."""
        restored = resume_from(
            self.directory, resume=self.resume, fingerprint=fingerprint, like=like
        )
        if restored is None:
            return None
        arrays, meta, where = restored
        return _state_from_metadata(arrays, meta, where), where

    def save(self, state: LoopState, fingerprint: dict) -> Path:
        """Saves ``state`` as the checkpoint of step ``len(state.history)``."""
        metadata = {
            **state.extra,
            "fingerprint": fingerprint,
            "history": state.history,
            "stopped": state.stopped,
            "seconds": state.seconds,
        }
        return save_step_checkpoint(
            self.directory, len(state.history), state.arrays, metadata, keep=self.keep
        )


class JsonCheckpoint(NamedTuple):
    """One JSON file, rewritten atomically, for a loop whose state is JSON alone (no arrays).

    The file holds ``{fingerprint_field: fingerprint, history_field: history, "stopped",
    "seconds", **extra}``; the two field names let a file keep the names its readers know
    (a space check's ``"config"`` and ``"rows"``). ``resume=False`` refuses an existing file.
    """

    path: str | Path
    resume: bool = False
    fingerprint_field: str = "fingerprint"
    history_field: str = "history"

    @property
    def directory(self) -> Path:
        """The file, named in the note of a failure."""
        return Path(self.path)

    def restore(self, fingerprint: dict, like: Any = None) -> tuple[LoopState, Path] | None:
        """The file's state and path; None when there is no file."""
        path = Path(self.path)
        if not path.exists():
            return None
        if not self.resume:
            raise CheckpointError(
                f"{path} already holds an earlier run; pass resume=True (--resume on the "
                "command line) to continue it, or choose another file"
            )
        try:
            saved = json.loads(path.read_text())
            recorded = saved.pop(self.fingerprint_field, None)
            saved["history"] = saved.pop(self.history_field)
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise CheckpointError(f"{path} is corrupt: {err!r}") from err
        check_fingerprint(recorded, fingerprint, path)
        return _state_from_metadata(None, saved, path), path

    def save(self, state: LoopState, fingerprint: dict) -> Path:
        """Rewrites the file with ``state``."""
        write_json_atomic(
            self.path,
            {
                self.fingerprint_field: fingerprint,
                **state.extra,
                self.history_field: state.history,
                "stopped": state.stopped,
                "seconds": state.seconds,
            },
        )
        return Path(self.path)


def _state_from_metadata(arrays, meta: dict, where) -> LoopState:
    try:
        extra = {k: v for k, v in meta.items() if k not in _OWN_FIELDS}
        # Release 0.2 recorded a search's "stopped_early" and a training's "epoch".
        stopped = bool(meta.get("stopped", extra.pop("stopped_early", False)))
        extra.pop("epoch", None)
        return LoopState(
            arrays, list(meta["history"]), extra, stopped, float(meta.get("seconds", 0.0))
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {where} has invalid metadata: {err}") from err


def run_resumable(
    step: Callable[[int, LoopState], Step],
    start: LoopState,
    *,
    steps: int,
    fingerprint: dict,
    store: StepCheckpoints | JsonCheckpoint | None = None,
    every: int = 1,
    description: str = "",
    unit: str = "steps",
    progress: bool = False,
    bar_units: int = 1,
    postfix: Callable[[dict], dict] | None = None,
    still_stopped: Callable[[LoopState], bool] | None = None,
) -> LoopState:
    """Runs ``step`` for steps ``len(history)``, ..., ``steps - 1``, resumable at every checkpoint.

    Args:
      step: ``step(index, state) -> Step``; raises NonFiniteError on NaN or inf.
      start: the state of a fresh run (its ``arrays`` also give the checkpoint's structure).
      steps: the number of steps of the whole run (>= 1); a resumed run may have been
        asked for fewer, and then continues up to ``steps``.
      fingerprint: JSON-able description of what the run computes; a checkpoint of a
        run with another one is refused.
      store: where checkpoints go; None keeps none.
      every: steps between checkpoints (>= 1).
      description: the progress bar's label and the prefix of error messages.
      unit: what a step is called in messages ("epochs", "iterations", ...).
      progress: show a tqdm bar of ``steps * bar_units`` units.
      bar_units: bar units per step (e.g. the optimiser steps of an epoch).
      postfix: the bar's postfix from a step's record.
      still_stopped: asked once of a restored state that had not stopped (e.g. an
        early-stop rule the earlier part did not have); True: the loop is over.

    Returns:
      The final :class:`LoopState`; ``seconds`` counts every part of the run.

    Raises:
      CheckpointError: a corrupt checkpoint, one of another run, one without
        ``resume`` in the store, or one with more steps than ``steps``.
      NonFiniteError: from ``step``, with the note of the checkpoint that is kept.

    Example:
      >>> import tempfile
      >>> count = lambda i, s: Step(s.arrays + 1, {"step": i}, stop=i == 2)
      >>> store = StepCheckpoints(tempfile.mkdtemp())
      >>> state = run_resumable(count, LoopState(0, [], {}), steps=5, fingerprint={}, store=store)
      >>> int(state.arrays), state.stopped, len(state.history)
      (3, True, 3)
      >>> again = run_resumable(count, LoopState(0, [], {}), steps=5, fingerprint={},
      ...                       store=store._replace(resume=True))
      >>> int(again.arrays), len(again.history)
      (3, 3)
    """
    began = time.perf_counter()
    steps = check_int(steps, name="steps")
    every = check_int(every, name="every")
    state, kept = _restore(store, fingerprint, start, steps, description, unit)
    if state.history and not state.stopped and still_stopped is not None:
        state = state._replace(stopped=bool(still_stopped(state)))
    earlier = state.seconds
    bar = tqdm(
        total=steps * bar_units,
        initial=len(state.history) * bar_units,
        desc=description,
        disable=not progress,
        leave=False,
    )
    try:  # the bar is closed on an error too, so a NaN's message is not under a dead bar
        for index in range(len(state.history), len(state.history) if state.stopped else steps):
            try:
                outcome = step(index, state)
            except NonFiniteError as err:
                note = last_checkpoint_note(None if store is None else store.directory, kept)
                raise NonFiniteError(f"{err}{note}") from None
            state = LoopState(
                outcome.arrays,
                [*state.history, outcome.record],
                state.extra if outcome.extra is None else outcome.extra,
                bool(outcome.stop),
                earlier + time.perf_counter() - began,
            )
            bar.update(bar_units)
            if postfix is not None:
                bar.set_postfix(postfix(outcome.record))
            done = index + 1
            if store is not None and (done % every == 0 or done == steps or state.stopped):
                kept = store.save(state, fingerprint)
            if state.stopped:
                break
    finally:
        bar.close()
    return state._replace(seconds=earlier + time.perf_counter() - began)


def _restore(store, fingerprint, start: LoopState, steps: int, description: str, unit: str):
    """``(state, kept)``: the newest checkpoint's state and path, or ``(start, None)``."""
    restored = None if store is None else store.restore(fingerprint, start.arrays)
    if restored is None:
        return start, None
    state, kept = restored
    if len(state.history) > steps:
        prefix = f"{description}: " if description else ""
        raise CheckpointError(
            f"{prefix}checkpoint {kept} has {len(state.history)} {unit}, more than the "
            f"{steps} asked for"
        )
    return state, kept
