"""Minibatches over in-memory arrays."""

from collections.abc import Iterator

import numpy as np

__all__ = ["iterate_batches", "pad_rows"]


def pad_rows(rows: int, *arrays):
    """Each array zero-padded along its first axis to ``rows``: the one batch-padding routine.

    A ragged last batch padded to the full batch size keeps one compiled program for every
    batch; callers mask or zero-weight the padded rows. Works on numpy and JAX arrays alike.

    Args:
      rows: the padded length, at least the longest array's.
      *arrays: arrays with a leading example axis.

    Returns:
      The padded array if one was given, else a tuple of them.

    Example:
      >>> x, y = pad_rows(4, np.ones((3, 2)), np.arange(3))
      >>> x.shape, y.tolist()
      ((4, 2), [0, 1, 2, 0])
    """
    padded = []
    for a in arrays:
        extra = rows - a.shape[0]
        if extra < 0:
            raise ValueError(f"cannot pad {a.shape[0]} rows down to {rows}")
        if extra:
            zeros = np.zeros((extra, *a.shape[1:]), a.dtype)
            a = np.concatenate([a, zeros]) if isinstance(a, np.ndarray) else _jax_concat(a, zeros)
        padded.append(a)
    return padded[0] if len(padded) == 1 else tuple(padded)


def _jax_concat(a, zeros):
    import jax.numpy as jnp  # only JAX inputs need it

    return jnp.concatenate([a, jnp.asarray(zeros)])


def iterate_batches(
    x, y, batch_size: int, *, seed: int | None = None, drop_remainder: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields (x, y) minibatches covering every example once per pass.

    Arguments are checked when this is called, not when the first batch is drawn.

    Args:
      x: array with a leading example axis (numpy or JAX).
      y: array of the same length.
      batch_size: examples per batch, at least 1.
      seed: shuffle with this seed; None keeps the given order.
      drop_remainder: drop the last batch if it is smaller than `batch_size`; otherwise it is
        yielded as a smaller, ragged batch.

    Returns:
      An iterator over (x_batch, y_batch) pairs.

    Example:
      >>> [len(yb) for _, yb in iterate_batches(np.zeros((10, 2)), np.arange(10), 4)]
      [4, 4, 2]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int; got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    if np.ndim(x) < 1 or np.ndim(y) < 1:
        raise ValueError("x and y need a leading example axis")
    n = np.shape(x)[0]
    if n != np.shape(y)[0]:
        raise ValueError(f"x has {n} examples but y has {np.shape(y)[0]}")
    if n == 0:
        raise ValueError("cannot iterate over an empty data set")
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    stop = n - n % batch_size if drop_remainder else n

    def batches():
        for start in range(0, stop, batch_size):
            chosen = order[start : start + batch_size]
            yield x[chosen], y[chosen]

    return batches()
