"""What ``fisher_diagonal`` accepts as data, and the checks each batch passes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import is_real_number_dtype, is_traced

__all__ = ["as_batches", "check_batch", "label_range_message"]

_FORMS = (
    "an (x, y) pair (tuple or list), a dict with keys 'x' and 'y', an array x alone "
    "(for 'sampled' and 'exact'), or an iterable of pairs or dicts"
)
_BATCH = "an (x, y) pair (tuple or list) or a dict with keys 'x' and 'y'"


def _as_pair(item) -> tuple[Any, Any] | None:
    """``(x, y)`` if ``item`` is one batch; None if it is not one."""
    if isinstance(item, Mapping):
        if set(item) in ({"x", "y"}, {"x"}):
            return item["x"], item.get("y")
        raise TypeError(
            f"a batch given as a dict needs the keys 'x' and 'y' (y may be None), "
            f"got keys {sorted(map(str, item))}"
        )
    if (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and hasattr(item[0], "shape")
        and not isinstance(item[0], (str, bytes))
    ):
        return item[0], item[1]
    return None


def _describe(item) -> str:
    if hasattr(item, "shape"):
        return f"{type(item).__name__} of shape {tuple(item.shape)}"
    if isinstance(item, (tuple, list)):
        return f"a {type(item).__name__} of {len(item)} items"
    return type(item).__name__


def as_batches(data) -> Iterator[tuple[Any, Any]]:
    """Yields ``(x, y)`` batches from one batch or an iterable of them; ``y`` may be None.

    A batch is ``(x, y)``, ``[x, y]`` or ``{"x": x, "y": y}``; ``y`` may be a list. An
    array alone is one batch without labels, ``(x, None)``, for the estimators that need
    none (in an iterable, a bare array would be ambiguous with ``[x, y]``: batches there
    are pairs or dicts).

    Example:
      >>> x = np.zeros((2, 3))
      >>> [b[1] for b in as_batches([x, [0, 1]])], [b[1] for b in as_batches({"x": x, "y": None})]
      ([[0, 1]], [None])
      >>> [b[1] for b in as_batches(x)]
      [None]
    """
    pair = _as_pair(data)
    if pair is not None:
        yield pair  # one batch; its shapes are checked with the batch
        return
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        yield data, None  # x alone: the labels check says whether the estimator needs them
        return
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"data must be {_FORMS}; got {_describe(data)}")
    for item in data:
        pair = _as_pair(item)
        if pair is None:
            raise TypeError(f"each batch must be {_BATCH}; got {_describe(item)}")
        yield pair


def label_range_message(num_classes: int, lo: int, hi: int) -> str:
    """The out-of-range labels error, naming the routes for a network with a smaller head."""
    return (
        f"labels must lie in [0, {num_classes}) for a network with {num_classes} logits, "
        f"found range [{lo}, {hi}]. For another task's labels with more classes, zero-pad "
        "the network's logits with ldnas_jax.fisher.pad_logits(apply_fn, num_classes) (the "
        "paper's route) or label x with the network's own predictions, "
        "ldnas_jax.fisher.predicted_labels(apply_fn, params, x); the 'sampled' and 'exact' "
        "estimators need no labels"
    )


def check_batch(x, y, estimator: str, example_shape, num_classes: int):
    """Checked ``(x, y)``, ``y`` int32 (zeros where the estimator needs none).

    Concrete arrays come back as NumPy. Traced ones (under ``jit``) come back as they are,
    with their shapes and dtypes checked; their values (NaN in ``x``, labels in range,
    one-hot rows) cannot be, and are not.
    """
    x = x if is_traced(x) else np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and feature axes, got shape {x.shape}")
    if not is_real_number_dtype(x.dtype):
        raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
    if example_shape is not None and x.shape[1:] != example_shape:
        raise ValueError(f"every batch must have example shape {example_shape}, got {x.shape[1:]}")
    floating = jnp.issubdtype(x.dtype, jnp.floating)
    if floating and not is_traced(x) and not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf")
    if y is None:
        if estimator == "empirical":
            raise ValueError(
                "the empirical estimator needs labels; pass (x, y) or use 'sampled'/'exact'"
            )
        return x, np.zeros((x.shape[0],), np.int32)
    y = y if is_traced(y) else np.asarray(y)
    if y.ndim == 2 and y.shape[0] == x.shape[0] and y.shape[1] > 1:
        y = one_hot_classes(y)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must have shape ({x.shape[0]},) to match x {x.shape} (or be one-hot rows "
            f"({x.shape[0]}, classes)), got {y.shape}"
        )
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if estimator == "empirical" and y.size and not is_traced(y):
        lo, hi = int(np.min(y)), int(np.max(y))
        if lo < 0 or hi >= num_classes:
            raise ValueError(label_range_message(num_classes, lo, hi))
    return x, y.astype(np.int32)


def one_hot_classes(y):
    """The class of each one-hot row of ``y`` ``(n, k)``: ``y.argmax(-1)``.

    Concrete rows must be one-hot (a single 1, zeros elsewhere): soft labels would
    otherwise be read as their largest class without a word. Traced rows are taken
    as they are.

    Example:
      >>> one_hot_classes(np.eye(3)[[2, 0]]).tolist()
      [2, 0]
    """
    if not is_real_number_dtype(y.dtype):
        raise TypeError(f"one-hot labels must hold numbers, got dtype {y.dtype}")
    if not is_traced(y):
        ones = y == 1
        if not (np.all(ones | (y == 0)) and np.all(np.sum(ones, axis=-1) == 1)):
            raise ValueError(
                f"labels of shape {y.shape} are read as one-hot rows, but a row is not one-hot "
                "(a single 1, zeros elsewhere); pass integer class labels of shape "
                f"({y.shape[0]},), e.g. y.argmax(-1)"
            )
        return np.argmax(y, axis=-1)
    return jnp.argmax(y, axis=-1)
