"""The classification loss shared by FUSE and candidate training."""

from __future__ import annotations

import jax
import optax

__all__ = ["cross_entropy"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of (B, K) logits against (B,) integer labels.

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))), 4)  # log 4
      1.3863
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
