"""Parameters given as a whole model: the arrays the Fisher is taken over, the rest held still.

An Equinox module is a pytree whose leaves are its arrays *and* whatever else its fields
hold (activation functions, for one). The Fisher is taken with respect to the
floating-point arrays only, as ``eqx.partition(model, eqx.is_inexact_array)`` would split
them, without importing Equinox: the other leaves are closed over by ``apply_fn``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["split_params"]


def _is_value(leaf) -> bool:
    """An array or a number: a leaf the Fisher code takes as a parameter value."""
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Number))


def _is_inexact_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray)) and jnp.issubdtype(leaf.dtype, jnp.inexact)


def split_params(apply_fn: Callable, params: Any) -> tuple[Callable, Any]:
    """``(apply_fn, params)`` as they are when every leaf is an array or a number; else the
    floating-point arrays alone, with an ``apply_fn`` that puts the other leaves back.

    The arrays come back in ``params``' own structure with None at the other leaves,
    the form ``eqx.partition(model, eqx.is_inexact_array)[0]`` has, so the Fisher of an
    Equinox module is shaped like that partition.

    Raises:
      TypeError: ``params`` hold non-array leaves and no floating-point array.

    Example:
      >>> params = {"w": jnp.ones((2, 3)), "act": jnp.tanh}
      >>> fn, arrays = split_params(lambda p, x: p["act"](x @ p["w"]), params)
      >>> arrays["act"] is None, fn(arrays, jnp.zeros((1, 2))).shape
      (True, (1, 3))
    """
    leaves, treedef = jax.tree.flatten(params)
    if all(_is_value(leaf) for leaf in leaves):
        return apply_fn, params
    keep = [_is_inexact_array(leaf) for leaf in leaves]
    if not any(keep):
        odd = next(leaf for leaf in leaves if not _is_value(leaf))
        raise TypeError(
            f"params hold no floating-point array to take the Fisher over (found a "
            f"{type(odd).__name__} leaf); pass the model's parameters"
        )
    arrays = treedef.unflatten([leaf if k else None for leaf, k in zip(leaves, keep)])

    def apply_arrays(p, x):
        values = iter(jax.tree.leaves(p))
        full = [next(values) if k else leaf for leaf, k in zip(leaves, keep)]
        return apply_fn(treedef.unflatten(full), x)

    return apply_arrays, arrays
