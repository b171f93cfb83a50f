"""``--resume`` for the commands: the run directory, its fingerprint and resumable tables.

A command opens its ``--out`` with :func:`open_run`, which refuses a non-empty
directory unless ``--resume`` is given and records the arguments in
``OUT/checkpoints/config.json`` so that a resume with other arguments is refused.
ε-networks go under :func:`network_directory` and K×K tables fill pair by pair
through :func:`resumable_pairs`, so a killed run continues where it stopped.
"""

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ldnas_jax.checkpoint import (
    CheckpointError,
    check_fingerprint,
    prepare_run_directory,
    write_json_atomic,
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


def open_run(
    out: str | Path, config: dict, *, resume: bool, inputs: Sequence[str | Path] = ()
) -> Path:
    """Creates ``out`` and returns ``out/checkpoints``, refusing to mix two runs.

    Args:
      out: the run directory.
      config: the arguments that decide the results (no run-control flags); saved
        on the first run and compared on every resume.
      resume: continue a run already in ``out``.
      inputs: files of the user's that may lie in ``out`` without making it an
        earlier run (e.g. the ``--config`` file).

    Raises:
      SystemExit: ``out`` is not empty and ``resume`` is False, or the recorded
        arguments differ from ``config`` (the message names the fields).

    Example:
      >>> import tempfile
      >>> open_run(tempfile.mkdtemp(), {"seeds": 1}, resume=False).name
      'checkpoints'
    """
    out = Path(out)
    checkpoints = out / "checkpoints"
    recorded = checkpoints / "config.json"
    try:
        inputs = {Path(p).resolve() for p in inputs}
        earlier = out.is_dir() and any(p.resolve() not in inputs for p in out.iterdir())
        prepare_run_directory(out, resume=resume or not earlier)
        if recorded.exists():
            try:
                saved = json.loads(recorded.read_text())
            except json.JSONDecodeError as err:
                raise CheckpointError(f"{recorded} is corrupt: {err}") from err
            check_fingerprint(saved, config, recorded)
        else:
            write_json_atomic(recorded, config)
    except CheckpointError as err:
        raise SystemExit(str(err)) from None
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
    path: Path, names: Sequence[str], compute: Callable[[int, int], float]
) -> np.ndarray:
    """A K×K table ``T[b, t] = compute(b, t)``, saved to ``path`` after every pair.

    Pairs run target-major (``t`` outer, ``b`` inner). On a rerun the pairs already
    in ``path`` are reused; JSON floats round-trip exactly, so a resumed table
    equals an unbroken one.

    Raises:
      SystemExit: ``path`` is corrupt or holds a table of other tasks.

    Example:
      >>> import tempfile
      >>> p = Path(tempfile.mkdtemp()) / "t.json"
      >>> resumable_pairs(p, ["a", "b"], lambda b, t: 10.0 * b + t).tolist()
      [[0.0, 1.0], [10.0, 11.0]]
    """
    names = list(names)
    k = len(names)
    table = np.full((k, k), np.nan)
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            saved_names = saved["names"]
            saved = np.array(
                [[np.nan if v is None else v for v in row] for row in saved["table"]],
                dtype=np.float64,
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise SystemExit(f"table checkpoint {path} is corrupt: {err}") from err
        if saved_names != names or saved.shape != (k, k):
            raise SystemExit(
                f"{path} holds the tasks {saved_names}, not {names}; use another --out"
            )
        table = saved
    for t in range(k):
        for b in range(k):
            if np.isfinite(table[b, t]):
                continue
            table[b, t] = float(compute(b, t))
            # NaN marks pairs still to compute; JSON writes it as null.
            rows = [[v if np.isfinite(v) else None for v in row] for row in table]
            write_json_atomic(path, {"names": names, "table": rows})
    return table
