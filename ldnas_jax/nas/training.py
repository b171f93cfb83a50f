"""Brief, self-contained training of one candidate (used by random search)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldnas_jax.data.batching import pad_rows
from ldnas_jax.xla_cpu._fast_routes import fast_routes
from ldnas_jax.train import cross_entropy, optimizer_step

__all__ = ["make_train_and_evaluate"]


def _padded_chunks(x, y, chunk_size: int):
    """(x, y) as equal chunks, the last padded by :func:`pad_rows`, with a validity mask."""
    chunks = -(-len(x) // chunk_size)
    rows = chunks * chunk_size
    x, y, mask = pad_rows(rows, x, y, np.ones(len(x), bool))
    return tuple(a.reshape((chunks, chunk_size) + a.shape[1:]) for a in (x, y, mask))


def make_train_and_evaluate(
    model: nn.Module, optimizer: optax.GradientTransformation, eval_chunk_size: int = 256
) -> Callable[..., tuple[Any, jax.Array, jax.Array]]:
    """One jitted program that trains ``model`` and returns its validation accuracy.

    Training and evaluation share one compilation (architectures differ per call
    site, so every compilation counts). Batches are gathered from device-resident
    data inside the scan, so memory does not grow with the number of steps.

    Returns:
      ``fn(params, x_train, y_train, batch_indices, x_val, y_val)`` ->
      ``(params, train_losses, val_accuracy)``, with ``batch_indices`` of shape
      (steps, B) (see ``draw_batch_indices``).

    Example:
      >>> # fn = make_train_and_evaluate(Skeleton(g, 10), optax.adam(3e-3))
      >>> # params, losses, accuracy = fn(params, x_tr, y_tr, index, x_val, y_val)
    """

    @fast_routes  # around XLA:CPU's slow small-map convolutions and max-pool derivative
    def loss_fn(params, x, y):
        return cross_entropy(model.apply({"params": params}, x, train=True), y)

    @jax.jit
    def train_and_evaluate(params, x_train, y_train, batch_indices, val_chunks):
        def step(carry, index):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, x_train[index], y_train[index])
            return optimizer_step(optimizer, grads, opt_state, params), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), batch_indices)

        def correct(chunk):
            x, y, mask = chunk
            predictions = jnp.argmax(model.apply({"params": params}, x), axis=-1)
            return jnp.sum((predictions == y) & mask)

        accuracy = jnp.sum(jax.lax.map(correct, val_chunks)) / jnp.sum(val_chunks[2])
        return params, losses, accuracy

    def fn(params, x_train, y_train, batch_indices, x_val, y_val):
        chunk_size = min(eval_chunk_size, len(x_val))
        val_chunks = _padded_chunks(np.asarray(x_val), np.asarray(y_val), chunk_size)
        return train_and_evaluate(params, x_train, y_train, batch_indices, val_chunks)

    return fn
