"""A trained classifier's scores on a task's test split: accuracy and balanced accuracy."""

import jax
import numpy as np

from ldnas_jax.data import TaskData

__all__ = ["balanced_accuracy", "scores_on_test"]


def balanced_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over classes present in ``labels`` of the fraction predicted right.

    On a task whose majority class holds 70 % of the examples, a network that always
    predicts it scores 0.7 accuracy but 1 / K balanced accuracy.

    Example:
      >>> balanced_accuracy(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]), 2)
      0.5
    """
    recalls = [
        np.mean(predictions[labels == c] == c) for c in range(num_classes) if np.any(labels == c)
    ]
    return float(np.mean(recalls))


def scores_on_test(model, variables, target: TaskData, *, batch_size: int = 512) -> dict:
    """Accuracy and balanced accuracy of ``model`` (eval mode) on ``target``'s test split."""
    logits_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    x = target.test.x
    predictions = np.concatenate(
        [np.argmax(logits_fn(variables, x[i : i + batch_size]), -1) for i in range(0, len(x), batch_size)]
    )
    return {
        "test_accuracy": float(np.mean(predictions == target.test.y)),
        "balanced_accuracy": balanced_accuracy(predictions, target.test.y, target.num_classes),
    }
