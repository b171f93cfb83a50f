"""What ``fisher_diagonal`` accepts as data, and the checks each batch passes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import is_real_number_dtype

__all__ = ["as_batches", "check_batch", "label_range_message"]

_FORMS = "an (x, y) pair (tuple or list), a dict with keys 'x' and 'y', or an iterable of those"


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

    A batch is ``(x, y)``, ``[x, y]`` or ``{"x": x, "y": y}``; ``y`` may be a list.

    Example:
      >>> x = np.zeros((2, 3))
      >>> [b[1] for b in as_batches([x, [0, 1]])], [b[1] for b in as_batches({"x": x, "y": None})]
      ([[0, 1]], [None])
    """
    pair = _as_pair(data)
    if pair is not None:
        yield pair  # one batch; its shapes are checked with the batch
        return
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable) or hasattr(data, "shape"):
        raise TypeError(f"data must be {_FORMS}; got {_describe(data)}")
    for item in data:
        pair = _as_pair(item)
        if pair is None:
            raise TypeError(f"each batch must be {_FORMS.split(', or')[0]}; got {_describe(item)}")
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
    """Checked ``(x, y)`` as NumPy, ``y`` int32 (zeros where the estimator needs none)."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and feature axes, got shape {x.shape}")
    if not is_real_number_dtype(x.dtype):
        raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
    if example_shape is not None and x.shape[1:] != example_shape:
        raise ValueError(f"every batch must have example shape {example_shape}, got {x.shape[1:]}")
    if jnp.issubdtype(x.dtype, jnp.floating) and not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf")
    if y is None:
        if estimator == "empirical":
            raise ValueError(
                "the empirical estimator needs labels; pass (x, y) or use 'sampled'/'exact'"
            )
        return x, np.zeros((x.shape[0],), np.int32)
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must have shape ({x.shape[0]},) to match x {x.shape}, got {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if estimator == "empirical" and y.size:
        lo, hi = int(np.min(y)), int(np.max(y))
        if lo < 0 or hi >= num_classes:
            raise ValueError(label_range_message(num_classes, lo, hi))
    return x, y.astype(np.int32)
