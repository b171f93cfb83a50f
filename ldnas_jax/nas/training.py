"""Brief, self-contained training of one candidate (used by random search)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldnas_jax.data.batching import pad_rows
from ldnas_jax.nas.operations import registry_generation
from ldnas_jax.train import cross_entropy, mode_kwargs, optimizer_step
from ldnas_jax.xla_cpu import fast_routes

__all__ = ["make_train_and_evaluate", "mask_classes"]


def _padded_chunks(x, y, chunk_size: int):
    """(x, y) as equal chunks, the last padded by :func:`pad_rows`, with a validity mask."""
    chunks = -(-len(x) // chunk_size)
    rows = chunks * chunk_size
    # Device-resident data are padded where they are; anything else as NumPy on the host.
    x, y = (a if isinstance(a, jax.Array) else np.asarray(a) for a in (x, y))
    x, y, mask = pad_rows(rows, x, y, np.ones(len(x), bool))
    return tuple(a.reshape((chunks, chunk_size) + a.shape[1:]) for a in (x, y, mask))


def make_train_and_evaluate(
    model: nn.Module, optimizer: optax.GradientTransformation, eval_chunk_size: int = 256
) -> Callable[..., tuple[Any, jax.Array, jax.Array]]:
    """One jitted program that trains ``model`` and returns its validation accuracy.

    Training and evaluation share one compilation, cached per (model, optimizer):
    with a :class:`~ldnas_jax.nas.SwitchSkeleton`, whose genotype is an argument,
    every genotype of a space trains in the same compiled program. Batches are
    gathered from device-resident data inside the scan, so memory does not grow
    with the number of steps.

    Returns:
      ``fn(params, x_train, y_train, batch_indices, x_val, y_val, *model_args,
      num_classes=None)`` -> ``(params, train_losses, val_accuracy)``, with
      ``batch_indices`` of shape (steps, B) (see ``draw_batch_indices``) and
      ``model_args`` passed to ``model.apply`` after the images (a switch network's
      genotype choices). The data may be NumPy arrays, sent to the device on every
      call, or arrays a caller placed on the device once (``jax.device_put``), which
      are used where they are. With ``num_classes``, logits past the first
      ``num_classes`` are masked out of the loss and the prediction: the head then
      acts as a ``num_classes`` head, and since the count is data, not shape, tasks
      of different class counts share one compiled program.

    Example:
      >>> import jax.numpy as jnp
      >>> from ldnas_jax.nas import Genotype, draw_batch_indices
      >>> from ldnas_jax.nas.switch import genotype_choices, switch_init, switch_network
      >>> g = Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
      >>> net = switch_network(g.operations, 2, num_nodes=3, channels=4, num_cells=1)
      >>> x = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
      >>> y = np.arange(8) % 2
      >>> fn = make_train_and_evaluate(net, optax.adam(1e-3))
      >>> params = switch_init(net, jax.random.key(0), x)
      >>> index = draw_batch_indices(jax.random.key(1), 8, steps=3, batch_size=4)
      >>> _, losses, accuracy = fn(params, x, y, index, x, y, genotype_choices(g, net.operations))
      >>> losses.shape, 0 <= float(accuracy) <= 1
      ((3,), True)
    """
    program = _program(model, optimizer)

    def fn(params, x_train, y_train, batch_indices, x_val, y_val, *model_args, num_classes=None):
        chunk_size = min(eval_chunk_size, len(x_val))
        val_chunks = _padded_chunks(x_val, y_val, chunk_size)
        classes = np.int32(np.iinfo(np.int32).max if num_classes is None else num_classes)
        return program(params, x_train, y_train, batch_indices, val_chunks, model_args, classes)

    return fn


def mask_classes(logits: jax.Array, num_classes) -> jax.Array:
    """``logits`` with every output from index ``num_classes`` on set to −∞.

    Softmax gives those outputs probability 0 and their weights gradient 0, so a
    head of K outputs trains and predicts exactly as one of ``num_classes``.

    Example:
      >>> mask_classes(jnp.zeros((1, 3)), 2)
      Array([[  0.,   0., -inf]], dtype=float32)
    """
    return jnp.where(jnp.arange(logits.shape[-1]) < num_classes, logits, -jnp.inf)


def _program(model: nn.Module, optimizer: optax.GradientTransformation):
    try:
        return _cached_program(model, optimizer, registry_generation())
    except TypeError:  # unhashable model or optimiser: a program of its own
        return _make_program(model, optimizer)


def _make_program(model: nn.Module, optimizer: optax.GradientTransformation, generation=None):
    del generation  # a cache key only: operations replaced since get a new program
    training, evaluating = mode_kwargs(model, train=True), mode_kwargs(model, train=False)

    @jax.jit
    def train_and_evaluate(
        params, x_train, y_train, batch_indices, val_chunks, model_args, classes
    ):
        def logits_of(params, x, model_args, mode):
            logits = model.apply({"params": params}, x, *model_args, **mode)
            return mask_classes(logits, classes)

        @fast_routes  # around XLA:CPU's slow small-map convolutions and max-pool derivative
        def loss_fn(params, x, y, model_args):
            return cross_entropy(logits_of(params, x, model_args, training), y)

        def step(carry, index):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(
                params, x_train[index], y_train[index], model_args
            )
            return optimizer_step(optimizer, grads, opt_state, params), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), batch_indices)

        def correct(chunk):
            x, y, mask = chunk
            logits = logits_of(params, x, model_args, evaluating)
            return jnp.sum((jnp.argmax(logits, axis=-1) == y) & mask)

        accuracy = jnp.sum(jax.lax.map(correct, val_chunks)) / jnp.sum(val_chunks[2])
        return params, losses, accuracy

    return train_and_evaluate


_cached_program = functools.lru_cache(maxsize=16)(_make_program)
