"""Atomic Orbax checkpoints of pytrees, with a JSON sidecar of metadata.

Layout of one checkpoint directory::

    DIR/state/      Orbax StandardCheckpointer output (written to a temporary
                    name and renamed by Orbax, so it is all or nothing)
    DIR/meta.json   written last, through a temporary file and os.replace

A checkpoint without ``meta.json`` is incomplete and is never loaded.
"""

import json
import os
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
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint metadata at {meta_path} is corrupt: {err}") from err
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            if like is None:
                tree = checkpointer.restore(directory / "state")
            else:
                abstract = jax.tree.map(
                    lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), like
                )
                tree = checkpointer.restore(directory / "state", abstract)
    except Exception as err:  # orbax raises several types; report one
        raise CheckpointError(
            f"checkpoint at {directory} is corrupt or does not match: "
            f"{type(err).__name__}: {str(err)[:300]}"
        ) from err
    if like is not None:
        _check_same_structure(tree, like, directory)
    return tree, meta.get("metadata", {})


def read_metadata(directory: str | os.PathLike) -> dict:
    """The metadata of a complete checkpoint, without loading its arrays."""
    meta_path = Path(directory).absolute() / "meta.json"
    if not meta_path.exists():
        raise CheckpointError(f"no complete checkpoint at {directory} (meta.json missing)")
    try:
        return json.loads(meta_path.read_text())["metadata"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"checkpoint metadata at {meta_path} is corrupt: {err}") from err


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
