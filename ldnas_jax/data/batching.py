"""Minibatches over in-memory arrays."""

from collections.abc import Iterator

import numpy as np

__all__ = ["iterate_batches"]


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
