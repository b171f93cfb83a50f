"""Max pooling whose derivative is cheap on XLA:CPU.

JAX differentiates max pooling (``lax.reduce_window`` with ``max``, as in
``nn.max_pool``) through XLA's ``select_and_scatter``, which XLA:CPU runs about
20× slower than the pooling itself: on the small CNN of
``benchmarks/fisher_speed.py`` it was half the time of the Fisher.

When the windows tile the input (stride equal to the window, no padding, no
dilation, as in ``nn.max_pool(x, (2, 2), strides=(2, 2))``), the same pooling is a
reshape and a max over the window axis, and its derivative is a one-hot mask on
each window's *first* maximum in row-major order, the element
``select_and_scatter`` picks too. Values and derivatives are identical; only
the cost changes, to a few elementwise passes.

:func:`tiled_max_pooling` applies this to any function without touching its
code: it traces the function to a jaxpr and evaluates it again with every
tiling ``reduce_window_max`` replaced. Pooling that overlaps or pads is left as
it was.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

__all__ = ["tiled_max_pooling", "window_max"]


def _split_windows(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """``x`` as ``(*out_shape, prod(window))``; trailing rows no window covers are dropped."""
    out_shape = tuple(size // w for size, w in zip(x.shape, window))
    x = x[tuple(slice(0, o * w) for o, w in zip(out_shape, window))]
    x = x.reshape(tuple(d for o, w in zip(out_shape, window) for d in (o, w)))
    outer_then_inner = (*range(0, x.ndim, 2), *range(1, x.ndim, 2))
    return x.transpose(outer_then_inner).reshape((*out_shape, math.prod(window)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def window_max(x: jax.Array, window: Sequence[int]) -> jax.Array:
    """Max over non-overlapping windows, one window size per axis of ``x``.

    Equals ``lax.reduce_window(x, -inf, lax.max, window, window, "VALID")``
    in value and derivative (the derivative flows to each window's first
    maximum), without XLA's slow ``select_and_scatter``.

    Example:
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> window_max(x, (1, 2, 2, 1))[0, :, :, 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
    """
    return jnp.max(_split_windows(x, tuple(window)), axis=-1)


@window_max.defjvp
def _window_max_jvp(window, primals, tangents):
    (x,), (t,) = primals, tangents
    window = tuple(window)
    windows = _split_windows(x, window)
    first_max = jax.nn.one_hot(jnp.argmax(windows, axis=-1), windows.shape[-1], dtype=t.dtype)
    # Linear in t, and its transpose is a broadcast multiply: no scatter.
    return jnp.max(windows, axis=-1), jnp.sum(first_max * _split_windows(t, window), axis=-1)


def _tiles(params: dict) -> bool:
    """Whether a ``reduce_window_max`` equation's windows tile its input."""
    window = tuple(params["window_dimensions"])
    return (
        tuple(params["window_strides"]) == window
        and all(tuple(p) == (0, 0) for p in params["padding"])
        and all(d == 1 for d in params["base_dilation"])
        and all(d == 1 for d in params["window_dilation"])
    )


def bind_equation(eqn, invals: Sequence) -> list:
    """Applies ``eqn``'s primitive to ``invals``, as ``jax.core.eval_jaxpr`` does: the list
    of its outputs, for an evaluator that rewrites some equations and binds the rest.

    ``eqn`` is a jaxpr equation, or any record with its ``primitive``, ``params`` and ``ctx``.
    """
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns = ()
    if isinstance(params, tuple):  # jax < 0.7 returned (subfuns, params)
        subfuns, params = params
    with getattr(eqn.ctx, "manager", contextlib.nullcontext()):
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _eval_rewritten(jaxpr: jcore.Jaxpr, consts: Sequence, args: Sequence) -> list:
    """Evaluates ``jaxpr``, replacing tiling max pooling; recurses into ``jit`` bodies."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for var, value in zip(jaxpr.constvars, consts):
        env[var] = value
    for var, value in zip(jaxpr.invars, args):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if eqn.primitive is lax.reduce_window_max_p and _tiles(eqn.params):
            outvals = [window_max(invals[0], tuple(eqn.params["window_dimensions"]))]
        elif eqn.primitive.name in ("jit", "pjit") and "jaxpr" in eqn.params:
            inner = eqn.params["jaxpr"]
            outvals = _eval_rewritten(inner.jaxpr, inner.consts, invals)
        else:
            outvals = bind_equation(eqn, invals)
        for var, value in zip(eqn.outvars, outvals):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def tiled_max_pooling(fn: Callable) -> Callable:
    """``fn`` with every tiling max pooling differentiated without ``select_and_scatter``.

    ``fn``'s arguments must be pytrees of arrays (they are traced). Max pooling
    inside ``jit`` is rewritten too; inside other higher-order primitives
    (``scan``, ``cond``, ``remat``, custom derivatives) it is kept as written.
    Use it around a loss before ``jax.grad``, or around an ``apply_fn``.

    Example:
      >>> import flax.linen as nn
      >>> pool_sum = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)).sum()
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
      >>> g = jax.grad(tiled_max_pooling(pool_sum))(x)
      >>> bool(jnp.array_equal(g, jax.grad(pool_sum)(x)))
      True
    """

    @functools.wraps(fn)
    def rewritten(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = _eval_rewritten(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return rewritten
