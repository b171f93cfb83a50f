"""Seeded minibatches stacked for ``jax.lax.scan``, and their placement on a device mesh."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ldnas_jax._checks import check_int

__all__ = ["batch_sharding", "draw_batch_indices", "draw_batches", "place_batches"]


def draw_batch_indices(
    key: jax.Array, num_examples: int, steps: int, batch_size: int
) -> np.ndarray:
    """Indices of ``steps`` minibatches, walking seeded permutations of the data.

    Consecutive batches come from one permutation (an epoch) until it runs out,
    then from a fresh one, so every example is seen once per epoch. Permutation e
    is ``jax.random.permutation(jax.random.split(key, epochs)[e], num_examples)``;
    all of them are drawn in one compiled call on the device, then copied back.

    Returns:
      An int array of shape (steps, batch_size).

    Raises:
      ValueError: if ``batch_size`` exceeds ``num_examples`` or a count is < 1.

    Example:
      >>> draw_batch_indices(jax.random.key(0), 10, steps=3, batch_size=4).shape
      (3, 4)
    """
    num_examples = check_int(num_examples, name="num_examples")
    steps = check_int(steps, name="steps")
    batch_size = check_int(batch_size, name="batch_size")
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} examples available")
    return np.asarray(_batch_indices(key, num_examples, steps, batch_size))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _batch_indices(key, num_examples: int, steps: int, batch_size: int) -> jax.Array:
    needed = steps * batch_size
    keys = jax.random.split(key, -(-needed // num_examples))
    # lax.map, not vmap: a batched "rbg" key draws other bits than the same key alone.
    orders = jax.lax.map(lambda k: jax.random.permutation(k, num_examples), keys)
    return orders.reshape(-1)[:needed].reshape(steps, batch_size)


def draw_batches(key: jax.Array, x, y, steps: int, batch_size: int):
    """Stacked minibatches ``(xs, ys)`` of shapes (steps, B, ...) and (steps, B).

    The rows are those of :func:`draw_batch_indices`. NumPy data are gathered on the
    host and come back as NumPy arrays; data already on a device (``jax.Array``) are
    gathered there, so nothing crosses to the host but the indices.

    Example:
      >>> xs, ys = draw_batches(jax.random.key(0), np.zeros((10, 8, 8, 3)), np.zeros(10), 2, 5)
      >>> xs.shape, ys.shape
      ((2, 5, 8, 8, 3), (2, 5))
    """
    index = draw_batch_indices(key, len(x), steps, batch_size)
    return _gather(x, index), _gather(y, index)


def _gather(data, index: np.ndarray):
    if isinstance(data, jax.Array):
        return data[jnp.asarray(index)]
    return np.asarray(data)[index]


def batch_sharding(mesh: Mesh, data_axis: str) -> NamedSharding:
    """Stacked batches (steps, B, ...) split along B over ``data_axis``; steps stay whole.

    Example:
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
      >>> batch_sharding(mesh, "data").spec
      P(None, 'data')
    """
    return NamedSharding(mesh, P(None, data_axis))


def place_batches(batches, sharding: NamedSharding):
    """Puts stacked host batches ``(xs, ys)`` on the devices of ``sharding``.

    On one process the arrays are the whole global batches and are split over
    the devices. On several processes (``jax.distributed.initialize``) each
    process passes *its own rows*, (steps, B / processes, ...), and the global
    arrays are assembled from every process's share.

    Example:
      >>> mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
      >>> xs, ys = place_batches((np.zeros((2, 4, 3)), np.zeros((2, 4))),
      ...                        batch_sharding(mesh, "data"))
      >>> xs.sharding.spec
      P(None, 'data')
    """
    if jax.process_count() == 1:
        return jax.device_put(tuple(batches), sharding)
    return tuple(jax.make_array_from_process_local_data(sharding, a) for a in batches)
