"""Tiny tasks for tests: a learnable two-class problem that compiles and trains in seconds."""

import numpy as np

from ldnas_jax.data import Split, TaskData


def stripes_task(name, n=32, size=8, seed=0):
    """Horizontal (0) vs vertical (1) noisy stripes, the same arrays in every split."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int32)
    rows = (np.arange(size)[None, :] + rng.integers(0, 2, n)[:, None]) % 2
    horizontal = np.repeat(rows[:, :, None], size, axis=2)
    x = np.where(y[:, None, None] == 0, horizontal, horizontal.transpose(0, 2, 1))
    x = (x[..., None].repeat(3, axis=-1) + 0.1 * rng.normal(size=(n, size, size, 3))).astype(
        np.float32
    )
    split = Split(x, y)
    return TaskData(name, 2, split, split, split)
