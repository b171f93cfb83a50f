"""Label routes for F_{b,t}: a network whose head differs from the target task's classes.

The empirical Fisher of network N_b on task t's data needs labels N_b can score. When
N_b's head has fewer classes than t has labels:

* :func:`pad_logits` zero-pads N_b's logits up to t's classes, as the paper's authors
  did (paper-faithful);
* :func:`predicted_labels` labels X_t with N_b's own predictions, which needs no
  labels of t at all.

The ``"sampled"`` and ``"exact"`` estimators use N_b's predictive distribution and need
neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import check_int
from ldnas_jax.data.batching import pad_rows

__all__ = ["pad_logits", "predicted_labels"]


def pad_logits(apply_fn: Callable, num_classes: int) -> Callable:
    """``apply_fn`` with its logits zero-padded up to ``num_classes`` (the paper's route).

    A padded class has logit 0: it takes probability mass from the network's own
    classes, so the Fisher of a label outside the network's head is defined.

    Example:
      >>> two_class = lambda p, x: x @ p
      >>> padded = pad_logits(two_class, 4)
      >>> padded(jnp.ones((3, 2)), jnp.ones((1, 3))).tolist()
      [[3.0, 3.0, 0.0, 0.0]]
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    num_classes = check_int(num_classes, name="num_classes")

    def padded(params, x):
        logits = apply_fn(params, x)
        extra = num_classes - logits.shape[-1]
        if extra < 0:
            raise ValueError(
                f"apply_fn returns {logits.shape[-1]} logits, more than num_classes={num_classes}"
            )
        if extra == 0:
            return logits
        zeros = jnp.zeros((*logits.shape[:-1], extra), logits.dtype)
        return jnp.concatenate([logits, zeros], axis=-1)

    return padded


def predicted_labels(apply_fn: Callable, params: Any, x, *, batch_size: int = 256) -> np.ndarray:
    """The network's own predicted labels on ``x``: ``argmax apply_fn(params, x)``, int32.

    Batches are zero-padded to one size, so the prediction compiles once.

    Example:
      >>> x = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], np.float32)
      >>> predicted_labels(lambda p, x: x @ p, jnp.eye(2), x, batch_size=2).tolist()
      [0, 1, 0]
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    batch_size = check_int(batch_size, name="batch_size")
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch with feature axes, got shape {x.shape}")
    rows = min(batch_size, x.shape[0])
    predict = jax.jit(lambda p, xb: jnp.argmax(apply_fn(p, xb), axis=-1).astype(jnp.int32))
    labels = []
    for start in range(0, x.shape[0], rows):
        chunk = x[start : start + rows]
        labels.append(np.asarray(predict(params, pad_rows(rows, chunk)))[: len(chunk)])
    return np.concatenate(labels)
