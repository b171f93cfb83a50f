"""G, the matrix of per-example gradients of log p(y|x, θ): the rows of the full empirical Fisher.

The full empirical Fisher is GᵀG / M (paper eq. 1 before its diagonal is taken);
:func:`ldnas_jax.distances.full_fisher_log_det` takes its log-determinant from G alone.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ldnas_jax._checks import NonFiniteError, check_classification_data, check_labels
from ldnas_jax.data.batching import pad_rows

# Memory guards: G is held in float32 (M × n × 4 bytes).
MAX_EXAMPLES = 4096
MAX_GRADIENT_BYTES = 2**31
DEFAULT_CHUNK_SIZE = 32


def per_example_gradients(
    apply_fn: Callable,
    params: Any,
    x,
    y,
    *,
    state: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_examples: int = MAX_EXAMPLES,
) -> np.ndarray:
    """G, the M × n matrix of per-example gradients of log p(y_i | x_i, θ), flattened.

    Gradients come from ``vmap(grad)`` over chunks of ``chunk_size`` examples (the last
    chunk is zero-padded, so one compilation serves all); each example's gradient pytree is
    flattened with :func:`jax.flatten_util.ravel_pytree`, in the order of
    ``jax.tree.leaves(params)`` (the order :func:`ldnas_jax.flatten_fisher` uses).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits (batch, classes)``; with ``state`` it is
        called as ``apply_fn(params, x, state)``.
      params: the parameters θ the gradients are taken with respect to.
      x, y: inputs with a batch axis and integer labels in [0, classes).
      state: optional variables that are inputs but not differentiated (e.g. BatchNorm
        statistics), passed as an argument so compilations are shared across networks.
      chunk_size: examples per compiled step.
      max_examples: memory guard on M.

    Returns:
      float32 numpy array of shape (M, n).

    Example:
      >>> import flax.linen as nn
      >>> model = nn.Dense(3)
      >>> p = model.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
      >>> g = per_example_gradients(lambda p, x: model.apply({"params": p}, x), p,
      ...                           np.ones((5, 4), np.float32), np.array([0, 1, 2, 0, 1]))
      >>> g.shape
      (5, 15)
    """
    x, y = check_classification_data(x, y, name="per-example gradient data")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and feature axes, got shape {x.shape}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    num_params = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))
    if num_params == 0:
        raise ValueError("params has no entries to take gradients with respect to")
    _check_memory(x.shape[0], num_params, max_examples)
    call = _stateless(apply_fn) if state is None else _stateful(apply_fn)
    check_labels(y, _num_classes(call, params, state, x), name="labels")
    step = _gradient_step(call)
    rows = []
    for start in range(0, x.shape[0], chunk_size):
        xc, yc = x[start : start + chunk_size], y[start : start + chunk_size]
        rows.append(np.asarray(step(params, state, *pad_rows(chunk_size, xc, yc)))[: len(xc)])
    g = np.concatenate(rows)
    if not np.all(np.isfinite(g)):
        raise NonFiniteError(
            f"per-example gradients contain NaN or inf ({int(np.sum(~np.isfinite(g)))} entries)"
        )
    return g


def _check_memory(m: int, n: int, max_examples: int) -> None:
    if m > max_examples:
        raise ValueError(
            f"{m} examples exceed the memory guard max_examples={max_examples}; cap the examples"
        )
    if 4 * m * n > MAX_GRADIENT_BYTES:
        raise ValueError(
            f"G would be {m}×{n} float32 ({4 * m * n / 2**30:.1f} GiB), above the "
            f"{MAX_GRADIENT_BYTES / 2**30:.0f} GiB guard; use fewer examples or a smaller network"
        )


def _num_classes(call, params, state, x) -> int:
    example = jax.ShapeDtypeStruct((1, *x.shape[1:]), jax.dtypes.canonicalize_dtype(x.dtype))
    try:
        out = jax.eval_shape(call, params, state, example)
    except Exception as err:  # flax raises many types here; surface one clear error
        raise ValueError(
            f"params do not fit apply_fn for inputs of shape {example.shape}: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if len(getattr(out, "shape", ())) != 2:
        raise ValueError(f"apply_fn must return logits (batch, classes), got {out}")
    return int(out.shape[1])


# Wrappers are cached per apply_fn so that repeated calls reuse one compiled step.
@functools.lru_cache(maxsize=32)
def _stateless(apply_fn):
    return lambda params, state, x: apply_fn(params, x)


@functools.lru_cache(maxsize=32)
def _stateful(apply_fn):
    return lambda params, state, x: apply_fn(params, x, state)


@functools.lru_cache(maxsize=32)
def _gradient_step(call):
    """Jitted ``(params, state, x, y) -> (B, n)`` rows of flattened per-example gradients."""

    def log_likelihood(params, state, x_i, y_i):
        logits = call(params, jax.lax.stop_gradient(state), x_i[None])[0]
        return jax.nn.log_softmax(logits.astype(jnp.float32))[y_i]

    def one(params, state, x_i, y_i):
        return ravel_pytree(jax.grad(log_likelihood)(params, state, x_i, y_i))[0]

    return jax.jit(jax.vmap(one, in_axes=(None, None, 0, 0)))
