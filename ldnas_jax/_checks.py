"""Input checks shared by the public entry points; each error names the problem."""

from typing import Any

import jax
import numpy as np


def check_classification_data(x, y, *, name: str = "data", num_classes: int | None = None):
    """Validates one ``(x, y)`` pair and returns them as numpy arrays."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 1 or y.ndim != 1:
        raise ValueError(
            f"{name}: expected x with a batch axis and 1-D labels, got shapes {x.shape} and {y.shape}"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name}: labels must be integers, got dtype {y.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: x contains NaN or inf")
    if num_classes is not None:
        check_labels(y, num_classes, name=name)
    return x, y.astype(np.int32)


def check_labels(y: np.ndarray, num_classes: int, *, name: str = "data") -> None:
    lo, hi = int(np.min(y)), int(np.max(y))
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), found range [{lo}, {hi}]")


class NonFiniteError(ValueError, FloatingPointError):
    """A parameter, Fisher or loss holds NaN or inf; the message names where."""


def check_finite_tree(tree: Any, *, what: str) -> None:
    """Raises :class:`NonFiniteError` naming the first leaf that holds NaN or inf."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    for path, leaf in leaves:
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise NonFiniteError(f"{what} contains NaN or inf at {jax.tree_util.keystr(path)}")


def check_positive(value: float, *, name: str) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)
