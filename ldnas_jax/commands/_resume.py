"""``--resume`` for the commands: the run directory, its fingerprint and resumable tables.

A command checks its ``--out`` with :func:`check_run` before it writes anything (a
non-empty directory is refused unless ``--resume`` is given, a resume with other arguments
than the recorded ``OUT/checkpoints/config.json`` too), then opens it with :func:`open_run`.
ε-networks go under :func:`network_directory` and K×K tables fill pair by pair through
:func:`resumable_pairs` (:func:`resumable_log_dets` for eq. 2), so a killed run continues
where it stopped. :class:`StageClock` times a run's stages over all its parts. Every
refusal is a :class:`~ldnas_jax.checkpoint.CheckpointError`.
"""

import argparse
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import numpy as np

from ldnas_jax.checkpoint import (
    CheckpointError,
    check_fingerprint,
    prepare_run_directory,
    write_json_atomic,
)
from ldnas_jax.data import TaskData
from ldnas_jax.tasks import (
    DistanceOptions,
    TaskNetwork,
    every_pair,
    load_task_network,
    pair_log_dets,
)

# Arguments that change where and how a run is executed or shown, not what it computes.
RUN_CONTROL = ("out", "resume", "no_progress", "command", "networks", "checkpoint_every")


def add_resume_argument(parser: argparse.ArgumentParser, **options) -> None:
    """Adds the ``--resume`` flag (extra ``options`` go to ``add_argument``)."""
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out: finished ε-networks and tables are reused",
        **options,
    )


def add_networks_argument(parser: argparse.ArgumentParser) -> None:
    """``--networks DIR``: ε-networks reused across runs and commands, one per seed and task."""
    parser.add_argument(
        "--networks",
        default=None,
        help="directory of ε-networks: each one is loaded from DIR/seed_S/TASK when present, "
        "else trained and saved there (Orbax; default: OUT/checkpoints/networks)",
    )


def check_run(
    out: str | Path, config: dict, *, resume: bool, inputs: Sequence[str | Path] = ()
) -> None:
    """Raises where :func:`open_run` would refuse ``out``; reads, writes nothing.

    Args:
      out: the run directory.
      config: the arguments that decide the results (no run-control flags).
      resume: continue a run already in ``out``.
      inputs: files of the user's that may lie in ``out`` without making it an
        earlier run (e.g. the ``--config`` file).

    Raises:
      CheckpointError: ``out`` is not a directory, or not empty and ``resume`` is False,
        or not empty without a recorded run (``checkpoints/config.json``) to resume, or
        its recorded arguments differ from ``config`` (the message names the fields).

    Example:
      >>> import tempfile
      >>> check_run(tempfile.mkdtemp(), {"seeds": 1}, resume=False)
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} is a file, not a run directory")
    inputs = {Path(p).resolve() for p in inputs}
    listed = out.iterdir() if out.is_dir() else ()
    found = sorted(p.name for p in listed if p.resolve() not in inputs)
    if found and not resume:
        raise CheckpointError(
            f"{out} is not empty: it holds an earlier run; pass --resume to continue it, "
            "or choose another directory"
        )
    recorded = out / "checkpoints" / "config.json"
    # Every run records its config before it writes anything else: without it, what is in
    # ``out`` is not a run of ours, and starting afresh beside it would mix the two.
    if found and not recorded.exists():
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise CheckpointError(
            f"{out} holds no run to resume (it has {shown} but no checkpoints/config.json); "
            "choose an empty or new directory"
        )
    if recorded.exists():
        try:
            saved = json.loads(recorded.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{recorded} is corrupt: {err}") from err
        check_fingerprint(saved, config, recorded)


def open_run(
    out: str | Path, config: dict, *, resume: bool, inputs: Sequence[str | Path] = ()
) -> Path:
    """Creates ``out`` and returns ``out/checkpoints``, refusing to mix two runs.

    Arguments and refusals as :func:`check_run`; ``config`` is saved in
    ``out/checkpoints/config.json`` on the first run.

    Example:
      >>> import tempfile
      >>> open_run(tempfile.mkdtemp(), {"seeds": 1}, resume=False).name
      'checkpoints'
    """
    check_run(out, config, resume=resume, inputs=inputs)
    out = Path(out)
    checkpoints = out / "checkpoints"
    prepare_run_directory(out, resume=True)  # check_run refused what is not ours
    if not (checkpoints / "config.json").exists():
        write_json_atomic(checkpoints / "config.json", config)
    return checkpoints


def run_config(args: argparse.Namespace, control: Sequence[str] = RUN_CONTROL) -> dict:
    """The arguments of ``args`` that decide the results: all but the run-control ones.

    Example:
      >>> run_config(argparse.Namespace(seeds=2, out="o", resume=True))
      {'seeds': 2}
    """
    return {k: v for k, v in vars(args).items() if k not in control}


def network_directory(networks: str | None, checkpoints: Path, seed: int, task: str) -> Path:
    """Where the ε-network of ``task`` and ``seed`` lives: ``--networks`` if given, else the run's.

    Example:
      >>> str(network_directory(None, Path("o/checkpoints"), 1, "E3"))
      'o/checkpoints/networks/seed_1/E3'
    """
    root = Path(networks) if networks else checkpoints / "networks"
    return root / f"seed_{seed}" / task


def resumable_pairs(
    path: Path,
    names: Sequence[str],
    fill: Callable[[list[tuple[int, int]]], Iterable[tuple[int, int, float]]],
    *,
    every: int = 1,
) -> np.ndarray:
    """A K×K table ``T[b, t]``, filled by ``fill`` and saved to ``path`` every ``every`` pairs.

    ``fill(pairs)`` yields ``(b, t, value)`` for the pairs still missing, e.g.
    :func:`ldnas_jax.tasks.pair_log_dets`; they are asked for in the order of
    :func:`ldnas_jax.tasks.every_pair`. On a rerun the pairs already in ``path`` are
    reused; JSON floats round-trip exactly, so a resumed table equals an unbroken one.

    Raises:
      CheckpointError: ``path`` is corrupt or holds a table of other tasks.

    Example:
      >>> import tempfile
      >>> p = Path(tempfile.mkdtemp()) / "t.json"
      >>> fill = lambda pairs: ((b, t, 10.0 * b + t) for b, t in pairs)
      >>> resumable_pairs(p, ["a", "b"], fill).tolist()
      [[0.0, 1.0], [10.0, 11.0]]
    """
    names = list(names)
    k = len(names)
    table = _saved_table(path, names) if path.exists() else np.full((k, k), np.nan)
    missing = [(b, t) for b, t in every_pair(k) if not np.isfinite(table[b, t])]
    done_since_save = 0
    for b, t, value in fill(missing):
        table[b, t] = float(value)
        done_since_save += 1
        if done_since_save >= every or np.isfinite(table).all():
            # NaN marks pairs still to compute; JSON writes it as null.
            rows = [[v if np.isfinite(v) else None for v in row] for row in table]
            write_json_atomic(path, {"names": names, "table": rows})
            done_since_save = 0
    if not np.isfinite(table).all():
        raise ValueError(f"fill left pairs of {path} uncomputed")
    return table


def _saved_table(path: Path, names: list[str]) -> np.ndarray:
    """The table a run saved at ``path``, checked against the tasks it should cover."""
    k = len(names)
    try:
        saved = json.loads(path.read_text())
        saved_names = saved["names"]
        table = np.array(
            [[np.nan if v is None else v for v in row] for row in saved["table"]],
            dtype=np.float64,
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"table checkpoint {path} is corrupt: {err}") from err
    if saved_names != names or table.shape != (k, k):
        raise CheckpointError(
            f"{path} holds the tasks {saved_names}, not {names}; use another --out"
        )
    return table


def resumable_log_dets(
    path: Path,
    networks: Sequence[TaskNetwork],
    datas: Sequence[TaskData],
    options: DistanceOptions,
    *,
    key: jax.Array,
    every: int = 1,
    progress: bool = True,
) -> np.ndarray:
    """L[b, t] of every pair, each N_b's Fisher on t's train split, resumable by pair.

    The pairs come from :func:`ldnas_jax.tasks.pair_log_dets` with ``key``, so the table
    equals ``task_distances(...).log_dets`` with the same key, whichever pairs a killed
    run had finished.
    """
    return resumable_pairs(
        path,
        [d.name for d in datas],
        lambda pairs: pair_log_dets(
            networks,
            [d.train for d in datas],
            [d.num_classes for d in datas],
            options=options,
            key=key,
            pairs=pairs,
            progress=progress,
        ),
        every=every,
    )


def saved_network(directory: Path, *, model: str, task: str) -> TaskNetwork | None:
    """The ε-network saved in ``directory``, or None where there is none yet.

    Raises:
      CheckpointError: the saved network is another model's or another task's.
    """
    if not (directory / "meta.json").exists():
        return None
    network, meta = load_task_network(directory)
    if meta["model_name"] != model or meta["task"] != task:
        raise CheckpointError(
            f"{directory} holds {meta['model_name']} for {meta['task']}, not {model} for {task}"
        )
    return network


TIMING_NOTE = (
    "stage_seconds: each stage's seconds summed over the parts of this run (the first run "
    "and each --resume; a part killed mid-stage counts up to the last file it wrote); "
    "total_seconds: their sum; this_run_seconds: this process alone"
)


class StageClock:
    """Seconds per stage of a run, summed over its parts: the first run and each ``--resume``.

    Each part is recorded in ``path`` (JSON) when it starts and at each stage change, so a
    resumed run adds its seconds to those of the parts before it. A part killed mid-stage
    has its running stage counted up to the newest file under ``out`` (its last saved work,
    the part a resume reuses): what it computed after that is lost and redone.

    Args:
      path: the timing record, e.g. ``OUT/checkpoints/timing.json``.
      out: the run directory, searched for a killed part's last file.
      resume: continue the record in ``path``; False starts a new one.
      now: the wall clock (seconds); file times are compared with it.

    Example:
      >>> import tempfile
      >>> out = Path(tempfile.mkdtemp())
      >>> ticks = iter([0.0, 0.0, 2.0, 5.0])  # start, zoo, search, stop
      >>> clock = StageClock(out / "timing.json", out=out, resume=False, now=lambda: next(ticks))
      >>> clock.stage("zoo"); clock.stage("search"); clock.stop()
      >>> clock.stage_seconds(), clock.total_seconds(), clock.this_run_seconds()
      ({'zoo': 2.0, 'search': 3.0}, 5.0, 5.0)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        out: str | Path,
        resume: bool,
        now: Callable[[], float] = time.time,
    ):
        self.path, self.now = Path(path), now
        self.parts = _saved_parts(self.path) if resume and self.path.exists() else []
        if self.parts and self.parts[-1]["running"] is not None:  # that part was killed
            _count_killed_part(self.parts[-1], _newest_file_time(Path(out), self.path))
        started = now()
        self.part = {"resumed": bool(self.parts), "running": None, "since": started}
        self.part["stage_seconds"] = {}
        self.parts.append(self.part)
        self._save()

    def stage(self, name: str) -> None:
        """Ends the running stage, if any, and starts ``name``."""
        self._end_running()
        self.part["running"] = name
        self._save()

    def stop(self) -> None:
        """Ends the running stage; the part is complete."""
        self._end_running()
        self._save()

    def stage_seconds(self) -> dict[str, float]:
        """Seconds of each stage over all parts (rounded to 0.01 s), in first-run order."""
        total: dict[str, float] = {}
        for part in self.parts:
            for name, seconds in part["stage_seconds"].items():
                total[name] = total.get(name, 0.0) + seconds
        return {name: round(seconds, 2) for name, seconds in total.items()}

    def total_seconds(self) -> float:
        """The sum of :meth:`stage_seconds`."""
        return round(sum(self.stage_seconds().values()), 2)

    def this_run_seconds(self) -> float:
        """Seconds of this process's stages alone, rounded as :meth:`total_seconds` rounds.

        Each stage is rounded before the sum, as in :meth:`total_seconds`, so a run of one
        part reports the same figure for both.
        """
        rounded = (round(seconds, 2) for seconds in self.part["stage_seconds"].values())
        return round(sum(rounded), 2)

    def _end_running(self) -> None:
        now = self.now()
        name = self.part["running"]
        if name is not None:
            seconds = self.part["stage_seconds"]
            seconds[name] = seconds.get(name, 0.0) + max(0.0, now - self.part["since"])
        self.part["running"], self.part["since"] = None, now

    def _save(self) -> None:
        write_json_atomic(self.path, {"note": TIMING_NOTE, "parts": self.parts})


def _saved_parts(path: Path) -> list[dict]:
    try:
        parts = json.loads(path.read_text())["parts"]
        for part in parts:  # the fields StageClock reads
            part["running"], part["since"], part["stage_seconds"]  # noqa: B018
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"timing record {path} is corrupt: {err}") from err
    return parts


def _count_killed_part(part: dict, last_written: float) -> None:
    """Adds to a killed part's running stage its seconds up to ``last_written``."""
    name = part["running"]
    seconds = part["stage_seconds"]
    seconds[name] = seconds.get(name, 0.0) + max(0.0, last_written - part["since"])
    part["running"], part["killed"] = None, True


def _newest_file_time(out: Path, skip: Path) -> float:
    """The latest modification time of a file under ``out`` other than ``skip`` (0 if none)."""
    times = [p.stat().st_mtime for p in out.rglob("*") if p.is_file() and p != skip]
    return max(times, default=0.0)
