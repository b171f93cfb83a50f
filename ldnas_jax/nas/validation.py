"""Checks on user data, so bad input fails early with a message, not an XLA trace."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_classification_data", "check_positive_int", "check_train_val"]


def check_positive_int(value, name: str) -> int:
    """Returns ``value`` as an int, or raises ``ValueError`` naming ``name``.

    Example:
      >>> check_positive_int(3, "steps")
      3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_classification_data(data, num_classes: int, name: str = "data"):
    """Validates an ``(x, y)`` pair of images and integer labels.

    Args:
      data: a pair ``(x, y)``; x is (N, H, W, C) NHWC images, y is (N,) labels.
      num_classes: labels must lie in [0, num_classes).
      name: what to call the pair in error messages (e.g. "train").

    Returns:
      ``(x, y)`` as numpy arrays, float32 images and int32 labels.

    Raises:
      TypeError: if ``data`` is not a pair, or labels are not integers.
      ValueError: wrong ranks, empty data, length mismatch or labels out of range.

    Example:
      >>> x, y = check_classification_data((np.zeros((2, 8, 8, 3)), np.array([0, 1])), 2)
      >>> x.shape, y.dtype
      ((2, 8, 8, 3), dtype('int32'))
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be an (x, y) pair of arrays")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.ndim != 4:
        raise ValueError(f"{name} x must be 4-D NHWC images (N, H, W, C), got shape {x.shape}")
    if y.ndim != 1:
        raise ValueError(f"{name} y must be 1-D labels (N,), got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name} has {x.shape[0]} images but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} labels must be integers, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"{name} labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]"
        )
    if np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{name} x must hold real numbers, got dtype {x.dtype}")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise ValueError(f"{name} x must hold finite numbers")
    return x.astype(np.float32), y.astype(np.int32)


def check_train_val(train, val, num_classes: int):
    """Validates the train and val pairs and that their images have one shape.

    Returns:
      ``((x_train, y_train), (x_val, y_val))`` as from ``check_classification_data``.

    Example:
      >>> pair = (np.zeros((2, 8, 8, 3)), np.array([0, 1]))
      >>> (x, y), _ = check_train_val(pair, pair, num_classes=2)
    """
    train = check_classification_data(train, num_classes, "train")
    val = check_classification_data(val, num_classes, "val")
    if train[0].shape[1:] != val[0].shape[1:]:
        raise ValueError(
            f"train images {train[0].shape[1:]} and val images {val[0].shape[1:]} differ in shape"
        )
    return train, val
