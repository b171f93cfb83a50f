"""Tiny tasks for tests: a learnable two-class problem that compiles and trains in seconds."""

import jax
import numpy as np

from ldnas_jax import nas
from ldnas_jax.data import Split, TaskData


def rbg_key(seed=0):
    """A key of the rbg generator: cheaper to compile on CPU than threefry's."""
    return jax.random.key(seed, impl="rbg")


def stripes(seed, n, size=8):
    """Horizontal (label 0) vs vertical (label 1) noisy stripes with a random phase.

    Both classes have the same mean, so only spatial operations can tell them apart: a
    network whose cells output zeros sees nothing but its head's bias.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int32)
    rows = (np.arange(size)[None, :] + rng.integers(0, 2, n)[:, None]) % 2  # (n, size)
    horizontal = np.repeat(rows[:, :, None], size, axis=2)  # varies along H
    x = np.where(y[:, None, None] == 0, horizontal, horizontal.transpose(0, 2, 1))
    x = x[..., None].repeat(3, axis=-1) + 0.1 * rng.normal(size=(n, size, size, 3))
    return x.astype(np.float32), y


def stripes_task(name, n=32, size=8, seed=0):
    """:func:`stripes` as a task, the same arrays in every split."""
    split = Split(*stripes(seed, n, size))
    return TaskData(name, 2, split, split, split)


# Network and batch sizes of a search that compiles in seconds.
TOY_SIZES = {"batch_size": 16, "channels": 4, "num_cells": 1}


def fuse_config(**fields):
    """A :class:`~ldnas_jax.nas.FuseConfig` at :data:`TOY_SIZES`; ``fields`` override them."""
    return nas.FuseConfig(**{**TOY_SIZES, **fields})


def random_search_config(**fields):
    """A :class:`~ldnas_jax.nas.RandomSearchConfig` at :data:`TOY_SIZES`; ``fields`` override."""
    return nas.RandomSearchConfig(**{**TOY_SIZES, **fields})


def search_options(config, **options):
    """Keyword arguments of a search (or ``run_fuse``) on a two-class task, quietly.

    ``config`` is the run's :func:`fuse_config` or :func:`random_search_config`; ``options``
    (the search loop's own: ``num_candidates``, ``max_iterations``, the key ...) add to them or
    override them.
    """
    return {"num_classes": 2, "progress": False, "config": config, **options}
