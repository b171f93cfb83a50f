"""Atomic Orbax checkpoints of pytrees, with a JSON sidecar of metadata.

Layout of one checkpoint directory::

    DIR/state/      Orbax StandardCheckpointer output (written to a temporary
                    name and renamed by Orbax, so it is all or nothing)
    DIR/meta.json   written last, through a temporary file and os.replace

A checkpoint without ``meta.json`` is incomplete and is never loaded.

Long runs keep a series of such checkpoints, one per step, and resume from the
newest complete one (:func:`save_step_checkpoint`, :func:`resume_from`)::

    RUN/step_00000003/      a checkpoint as above
    RUN/step_00000004/      the newest complete one wins; older ones are pruned

A kill at any moment leaves the previous complete step in place.
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt or does not match what was expected."""


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Writes JSON through a temporary file and ``os.replace``, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default))
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_checkpoint(directory: str | os.PathLike, tree: Any, metadata: dict | None = None) -> Path:
    """Saves ``tree`` with Orbax and ``metadata`` as JSON; replaces an older checkpoint there.

    Example:
      >>> import tempfile
      >>> d = save_checkpoint(tempfile.mkdtemp() + "/ckpt", {"w": np.ones(2)}, {"step": 3})
      >>> load_checkpoint(d)[1]["step"]
      3
    """
    directory = Path(directory).absolute()
    meta_path = directory / "meta.json"
    if meta_path.exists():
        meta_path.unlink()  # mark incomplete before touching the state
    state = directory / "state"
    if state.exists():
        shutil.rmtree(state)
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(state, jax.tree.map(np.asarray, tree))
    write_json_atomic(meta_path, {"metadata": metadata or {}, "complete": True})
    return directory


def load_checkpoint(directory: str | os.PathLike, like: Any | None = None) -> tuple[Any, dict]:
    """Restores ``(tree, metadata)``.

    Args:
      directory: a directory written by :func:`save_checkpoint`.
      like: optional pytree of the expected structure, shapes and dtypes; a
        stored tree that differs raises :class:`CheckpointError` instead of
        loading silently.
    """
    directory = Path(directory).absolute()
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise CheckpointError(f"no complete checkpoint at {directory} (meta.json missing)")
    metadata = read_metadata(directory)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            if like is None:
                tree = checkpointer.restore(directory / "state")
            else:
                stored = _stored_arrays(checkpointer.metadata(directory / "state"))
    except Exception as err:  # orbax raises several types; report one
        raise _corrupt(directory, err) from err
    if like is not None:
        # Orbax casts to the dtypes it is asked for (float32 -> int8 silently): compare first.
        _check_stored_arrays(stored, like, directory)
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(
                np.shape(a), jax.dtypes.canonicalize_dtype(np.asarray(a).dtype)
            ),
            like,
        )
        try:
            with ocp.StandardCheckpointer() as checkpointer:
                tree = checkpointer.restore(directory / "state", abstract)
        except Exception as err:
            raise _corrupt(directory, err) from err
        _check_same_structure(tree, like, directory)
    return tree, metadata


def _corrupt(directory: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"checkpoint at {directory} is corrupt or does not match: "
        f"{type(err).__name__}: {str(err)[:300]}"
    )


def _path_names(path) -> tuple[str, ...]:
    """A tree path as plain names, so a namedtuple field and a dict key of one name agree."""
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
        else:
            names.append(str(entry))
    return tuple(names)


def _stored_arrays(step_metadata) -> dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]]:
    """``{path: (shape, dtype)}`` of the arrays in an Orbax checkpoint, read from its metadata."""
    tree = getattr(step_metadata, "item_metadata", step_metadata)
    tree = getattr(tree, "tree", tree)
    return {
        _path_names(path): (tuple(leaf.shape), np.dtype(leaf.dtype))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _check_stored_arrays(stored: dict, like: Any, directory: Path) -> None:
    """Raises :class:`CheckpointError` where stored arrays and ``like`` differ in path, shape or dtype."""
    expected = {
        _path_names(path): (tuple(np.shape(leaf)), np.asarray(leaf).dtype)
        for path, leaf in jax.tree_util.tree_leaves_with_path(like)
    }
    if set(stored) != set(expected):
        missing = sorted(set(expected) - set(stored))[:3]
        extra = sorted(set(stored) - set(expected))[:3]
        raise CheckpointError(
            f"checkpoint at {directory} holds a different tree structure: "
            f"missing {missing}, unexpected {extra}"
        )
    for path, (shape, dtype) in expected.items():
        got_shape, got_dtype = stored[path]
        if got_shape != shape or got_dtype != dtype:
            raise CheckpointError(
                f"checkpoint at {directory} does not match: {'/'.join(path)} is stored with "
                f"dtype {got_dtype} and shape {got_shape}, expected dtype {dtype} and shape {shape}"
            )


def read_metadata(directory: str | os.PathLike) -> dict:
    """The metadata of a complete checkpoint, without loading its arrays."""
    meta_path = Path(directory).absolute() / "meta.json"
    if not meta_path.exists():
        raise CheckpointError(f"no complete checkpoint at {directory} (meta.json missing)")
    try:
        metadata = json.loads(meta_path.read_text())["metadata"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint metadata at {meta_path} is corrupt: {err}") from err
    if not isinstance(metadata, dict):
        raise CheckpointError(f"checkpoint metadata at {meta_path} is corrupt: not an object")
    return metadata


def _check_same_structure(tree, like, directory):
    got, want = jax.tree.structure(tree), jax.tree.structure(like)
    if got != want:
        raise CheckpointError(
            f"checkpoint at {directory} holds a different tree structure: {got} != {want}"
        )
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(like)):
        if np.shape(a) != np.shape(b):
            raise CheckpointError(
                f"checkpoint at {directory}: shape {np.shape(a)} != expected {np.shape(b)}"
            )


_STEP_DIR = re.compile(r"^step_(\d+)$")


def _complete_steps(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    steps = []
    for child in directory.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / "meta.json").exists():
            steps.append((int(match.group(1)), child))
    return sorted(steps)


def latest_step_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete ``step_*`` checkpoint under ``directory``, or None.

    Example:
      >>> import tempfile
      >>> run = Path(tempfile.mkdtemp())
      >>> _ = save_step_checkpoint(run, 2, {"w": np.ones(2)}, {"step": 2})
      >>> latest_step_checkpoint(run).name
      'step_00000002'
    """
    steps = _complete_steps(Path(directory).absolute())
    return steps[-1][1] if steps else None


def save_step_checkpoint(
    directory: str | os.PathLike,
    step: int,
    tree: Any,
    metadata: dict | None = None,
    *,
    keep: int = 2,
) -> Path:
    """Saves checkpoint ``step`` under ``directory`` and prunes all but the newest ``keep``.

    The new step is complete (its ``meta.json`` written) before any older one is
    removed, so a kill at any point leaves at least one complete checkpoint.

    Example:
      >>> import tempfile
      >>> run = Path(tempfile.mkdtemp())
      >>> for step in range(4):
      ...     _ = save_step_checkpoint(run, step, {"w": np.full(2, step)}, {"step": step})
      >>> sorted(p.name for p in run.iterdir())
      ['step_00000002', 'step_00000003']
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = Path(directory).absolute()
    path = save_checkpoint(directory / f"step_{int(step):08d}", tree, metadata)
    for child in directory.iterdir():
        match = _STEP_DIR.match(child.name)
        # Leftovers of a killed save (no meta.json) older than this step go too.
        if match and int(match.group(1)) < step and not (child / "meta.json").exists():
            shutil.rmtree(child, ignore_errors=True)
    for _, old in _complete_steps(directory)[:-keep]:
        (old / "meta.json").unlink()  # incomplete first, so a kill mid-removal is harmless
        shutil.rmtree(old, ignore_errors=True)
    return path


def resume_from(
    directory: str | os.PathLike,
    *,
    resume: bool,
    fingerprint: dict,
    like: Any | None = None,
) -> tuple[Any, dict, Path] | None:
    """Opens a run directory: the newest checkpoint to continue from, or None to start afresh.

    Args:
      directory: the run's checkpoint directory (created when missing).
      resume: continue from the newest checkpoint; when False a directory that
        already holds checkpoints is refused rather than overwritten.
      fingerprint: JSON-able description of what the run computes (its key,
        data shapes, options); a checkpoint recorded with another one raises.
      like: the expected pytree, as for :func:`load_checkpoint`.

    Returns:
      ``(tree, metadata, path)`` of the newest complete checkpoint, or None.

    Raises:
      CheckpointError: checkpoints present without ``resume``, a corrupt
        checkpoint, or one from a different run.

    Example:
      >>> import tempfile
      >>> run = Path(tempfile.mkdtemp())
      >>> resume_from(run, resume=True, fingerprint={"seed": 0}) is None
      True
    """
    directory = Path(directory).absolute()
    latest = latest_step_checkpoint(directory)
    if latest is None:
        directory.mkdir(parents=True, exist_ok=True)
        return None
    if not resume:
        raise CheckpointError(
            f"{directory} already holds checkpoints of an earlier run; pass resume=True "
            "(--resume on the command line) to continue it, or use an empty directory"
        )
    tree, metadata = load_checkpoint(latest, like=like)
    check_fingerprint(metadata.get("fingerprint"), fingerprint, latest)
    return tree, metadata, latest


def prepare_run_directory(directory: str | os.PathLike, *, resume: bool) -> Path:
    """Creates a run directory, refusing to reuse a non-empty one unless ``resume``.

    Raises:
      CheckpointError: ``directory`` exists, is not empty, and ``resume`` is False.

    Example:
      >>> import tempfile
      >>> prepare_run_directory(tempfile.mkdtemp() + "/run", resume=False).is_dir()
      True
    """
    directory = Path(directory)
    if not resume and directory.is_dir() and any(directory.iterdir()):
        raise CheckpointError(
            f"{directory} is not empty: it holds an earlier run; pass resume=True "
            "(--resume on the command line) to continue it, or choose another directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def check_fingerprint(recorded: dict | None, expected: dict, where: str | os.PathLike) -> None:
    """Raises :class:`CheckpointError` naming the fields where a checkpoint's run differs.

    Example:
      >>> check_fingerprint({"seed": 0}, {"seed": 0}, "ckpt")
    """
    expected = json.loads(json.dumps(expected, default=_json_default))  # tuples -> lists
    if not isinstance(recorded, dict):
        raise CheckpointError(f"checkpoint at {where} records no run fingerprint")
    differ = sorted(k for k in set(recorded) | set(expected) if recorded.get(k) != expected.get(k))
    if differ:
        details = "; ".join(
            f"{k}: checkpoint {recorded.get(k)!r}, now {expected.get(k)!r}" for k in differ
        )
        raise CheckpointError(
            f"checkpoint at {where} belongs to a different run ({details}); "
            "resume with the same arguments or use an empty directory"
        )


def last_checkpoint_note(directory: str | os.PathLike | None, last: Path | None) -> str:
    """The tail of an error message saying which checkpoint survives (empty without checkpoints).

    Example:
      >>> last_checkpoint_note("run", None)
      '; no checkpoint had been written yet in run'
    """
    if directory is None:
        return ""
    if last is None:
        return f"; no checkpoint had been written yet in {directory}"
    return f"; the last good checkpoint is kept at {last}"


def key_fingerprint(key: jax.Array) -> dict:
    """A JSON record of a PRNG key (implementation and raw data), typed or legacy uint32.

    Example:
      >>> key_fingerprint(jax.random.key(0))
      {'impl': 'threefry2x32', 'data': [0, 0]}
    """
    data, impl = key_to_data(key)
    return {"impl": impl, "data": data.tolist()}


def key_to_data(key: jax.Array) -> tuple[np.ndarray, str]:
    """``(uint32 data, implementation name)`` of a key; ``"raw"`` for legacy uint32 keys."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key)), str(jax.random.key_impl(key))
    return np.asarray(key, dtype=np.uint32), "raw"


def key_from_data(data: Any, impl: str) -> jax.Array:
    """Inverse of :func:`key_to_data`.

    Example:
      >>> key = jax.random.key(3)
      >>> bool(key_from_data(*key_to_data(key)) == key)
      True
    """
    data = np.asarray(data, dtype=np.uint32)
    if impl == "raw":
        return jax.numpy.asarray(data)
    return jax.random.wrap_key_data(data, impl=impl)
