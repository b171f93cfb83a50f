"""Input checks shared by the public entry points; each error names the problem.

Under a JAX transformation (``jit``, ``vmap``, ``grad``) an argument may be a tracer, whose
values are not known. Checks of shapes and dtypes still run on tracers; checks of values
(NaN, ranges, signs) run only on concrete values: :func:`is_traced` says which applies.
"""

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_classification_data(x, y, *, name: str = "data", num_classes: int | None = None):
    """Validates one ``(x, y)`` pair and returns them as numpy arrays.

    Example:
      >>> x, y = check_classification_data(np.zeros((2, 3)), [0, 1], num_classes=2)
      >>> x.shape, y.dtype
      ((2, 3), dtype('int32'))
    """
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
    if not is_real_number_dtype(x.dtype):
        raise TypeError(f"{name}: x must hold real numbers, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: x contains NaN or inf")
    if num_classes is not None:
        check_labels(y, num_classes, name=name)
    return x, y.astype(np.int32)


def check_image_data(data, num_classes: int, *, name: str = "data"):
    """Validates an ``(x, y)`` pair of NHWC images and labels in ``[0, num_classes)``.

    The pair form of :func:`check_classification_data` that architecture search
    takes: ``x`` must be 4-D, and the arrays come back as float32 images and
    int32 labels.

    Raises:
      TypeError: ``data`` is not a pair, labels are not integers, images not real.
      ValueError: wrong ranks, empty data, length mismatch, NaN or inf in the
        images, or labels out of range.

    Example:
      >>> x, y = check_image_data((np.zeros((2, 8, 8, 3)), np.array([0, 1])), 2)
      >>> x.dtype, y.dtype
      (dtype('float32'), dtype('int32'))
    """
    num_classes = check_int(num_classes, name="num_classes")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be an (x, y) pair of arrays, got {type(data).__name__}")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if x.ndim != 4:
        raise ValueError(f"{name} x must be 4-D NHWC images (N, H, W, C), got shape {x.shape}")
    if y.ndim == 1 and x.shape[0] != y.shape[0]:
        raise ValueError(f"{name} has {x.shape[0]} images but {y.shape[0]} labels")
    x, y = check_classification_data(x, y, name=name, num_classes=num_classes)
    return x.astype(np.float32), y


def check_train_val(train, val, num_classes: int):
    """Validates the train and val pairs and that their images have one shape.

    Returns:
      ``((x_train, y_train), (x_val, y_val))`` as from :func:`check_image_data`.

    Example:
      >>> pair = (np.zeros((2, 8, 8, 3)), np.array([0, 1]))
      >>> (x, y), _ = check_train_val(pair, pair, num_classes=2)
    """
    train = check_image_data(train, num_classes, name="train")
    val = check_image_data(val, num_classes, name="val")
    if train[0].shape[1:] != val[0].shape[1:]:
        raise ValueError(
            f"train images {train[0].shape[1:]} and val images {val[0].shape[1:]} differ in shape"
        )
    return train, val


def is_real_number_dtype(dtype) -> bool:
    """True for boolean, integer and real floating dtypes (not complex, str or object)."""
    dtype = np.dtype(dtype)
    return (
        dtype == np.bool_ or np.issubdtype(dtype, np.integer) or jnp.issubdtype(dtype, jnp.floating)
    )


def check_labels(y: np.ndarray, num_classes: int, *, name: str = "data") -> None:
    """Raises ``ValueError`` unless every label lies in ``[0, num_classes)``.

    Example:
      >>> check_labels(np.array([0, 2]), 3)
    """
    y = np.asarray(y)
    if y.size == 0:
        return
    lo, hi = int(np.min(y)), int(np.max(y))
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), found range [{lo}, {hi}]")


def is_traced(*trees: Any) -> bool:
    """True when a leaf of ``trees`` is a JAX tracer (the caller runs under jit, vmap or grad).

    Value checks skip traced arguments: their values exist only when the program runs.

    Example:
      >>> is_traced(np.ones(2), {"w": jnp.ones(2)})
      False
      >>> bool(jax.jit(lambda v: jnp.asarray(is_traced(v)))(jnp.ones(2)))
      True
    """
    return any(
        isinstance(leaf, jax.core.Tracer) for tree in trees for leaf in jax.tree.leaves(tree)
    )


class NonFiniteError(ValueError, FloatingPointError):
    """A parameter, Fisher or loss holds NaN or inf; the message names where."""


def _all_finite(leaf) -> bool:
    if isinstance(leaf, jax.core.Tracer):
        return True  # no value to check under tracing; the eager call checks it
    if isinstance(leaf, jax.Array):
        # Reduce where the array lives: no host copy of a large parameter tree.
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            return True
        with jax.ensure_compile_time_eval():  # a concrete leaf inside a jit: reduce it now
            return bool(jnp.all(jnp.isfinite(leaf)))
    array = np.asarray(leaf)
    if not np.issubdtype(array.dtype, np.inexact):
        return True  # integers and booleans are always finite
    return bool(np.all(np.isfinite(array)))


def check_finite_tree(tree: Any, *, what: str) -> None:
    """Raises :class:`NonFiniteError` naming the first leaf that holds NaN or inf.

    Traced leaves (under ``jit`` or ``vmap``) have no values to check and are skipped.

    Example:
      >>> check_finite_tree({"w": np.ones(2)}, what="params")
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not _all_finite(leaf):
            raise NonFiniteError(f"{what} contains NaN or inf at {jax.tree_util.keystr(path)}")


def check_positive(value: float, *, name: str) -> float:
    """Returns ``value`` as a float, or raises unless it is a finite real number > 0.

    Example:
      >>> check_positive(1e-3, name="sigma")
      0.001
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        if not (isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        if not is_real_number_dtype(value.dtype) or value.dtype == np.bool_:
            raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_positive_scalar(value, *, name: str):
    """:func:`check_positive` where ``value`` is concrete; a traced one is returned as it is.

    A tracer (σ under ``jit`` or ``vmap``) must be a real scalar; its sign is unknown
    until the program runs, so it is not checked.

    Example:
      >>> check_positive_scalar(0.5, name="sigma")
      0.5
      >>> jax.jit(lambda s: check_positive_scalar(s, name="sigma") * 2)(1.5).item()
      3.0
    """
    if not isinstance(value, jax.core.Tracer):
        return check_positive(value, name=name)
    if np.ndim(value) != 0 or value.dtype == np.bool_ or not is_real_number_dtype(value.dtype):
        raise TypeError(f"{name} must be a real scalar, got a traced {value.dtype} {value.shape}")
    return value


def check_int(value, *, name: str, minimum: int = 1) -> int:
    """Returns ``value`` as an int, or raises unless it is an integer >= ``minimum``.

    Example:
      >>> check_int(np.int64(3), name="chunk_size")
      3
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_key(key, *, name: str = "key") -> None:
    """Raises ``TypeError`` unless ``key`` is one JAX PRNG key (typed, or raw uint32 data).

    Example:
      >>> check_key(jax.random.key(0))
    """
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single PRNG key, got a batch of shape {key.shape}")
        return
    if isinstance(key, (np.ndarray, jax.Array)) and key.dtype == np.uint32 and key.ndim == 1:
        return  # a legacy raw key, e.g. jax.random.PRNGKey(0)
    raise TypeError(
        f"{name} must be a JAX PRNG key such as jax.random.key(0), got {type(key).__name__} {key!r}"
    )
