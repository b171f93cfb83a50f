"""Accuracy and loss on a target's test split, compiled once per architecture and head size.

Kept apart until :func:`ldnas_jax.train.evaluate` pads its last batch and compiles once
per model; then the fine-tuning experiment calls that instead.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldnas_jax._checks import check_classification_data
from ldnas_jax.data import Split
from ldnas_jax.models import make_model


@functools.lru_cache(maxsize=16)
def _cached_logits(model_name: str, num_classes: int):
    model = make_model(model_name, num_classes)
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def evaluate_padded(
    model_name: str, num_classes: int, variables, split: Split, batch: int = 256
) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` with one compiled shape: the last batch is padded.

    Example:
      >>> x = np.zeros((5, 8, 8, 3), np.float32)
      >>> variables = make_model("small_vgg", 2).init(jax.random.key(0), x[:1])
      >>> accuracy, loss = evaluate_padded("small_vgg", 2, variables, Split(x, np.zeros(5, int)),
      ...                                  batch=4)
      >>> accuracy in (0.0, 1.0), loss > 0
      (True, True)
    """
    x, y = check_classification_data(split.x, split.y, name="target test split")
    logits_fn = _cached_logits(model_name, num_classes)
    batch = min(batch, len(x))
    correct, loss = 0, 0.0
    for start in range(0, len(x), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        n = len(xb)
        if n < batch:
            xb = np.concatenate([xb, np.zeros((batch - n, *xb.shape[1:]), xb.dtype)])
        logits = logits_fn(variables, xb)[:n]
        correct += int(jnp.sum(jnp.argmax(logits, -1) == yb))
        loss += float(optax.softmax_cross_entropy_with_integer_labels(logits, yb).sum())
    return correct / len(x), loss / len(x)
