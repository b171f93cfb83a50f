"""The three estimators of the diagonal Fisher as rules: which targets, with which weights.

diag F = (1/M) Σ_i Σ_k w_ik · (∇θ log p(t_ik | x_i, θ))², where

* ``"empirical"``: the data label, weight 1 (the paper's eq. 1);
* ``"sampled"``: ``num_samples`` labels drawn from the model, weight 1/S each
  (a Monte-Carlo estimate of the true Fisher);
* ``"exact"``: every class c, weight p(c | x_i) (the true Fisher's expectation).

A rule maps one example's logits, taken from the engine's own forward pass, to its
targets and weights; padded rows carry weight 0 through their mask.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["ESTIMATORS", "estimator_rule", "targets_and_weights"]

ESTIMATORS = ("empirical", "sampled", "exact")


def estimator_rule(estimator: str, num_classes: int, num_samples: int) -> Callable:
    """``rule(logits_i, label_or_key_i, mask_i) -> (targets (K,), weights (K,))``.

    The second argument is the example's label for ``"empirical"`` and ``"exact"``
    (which ignores it), and its PRNG key for ``"sampled"``.

    Example:
      >>> rule = estimator_rule("exact", 2, 1)
      >>> t, w = rule(jnp.zeros(2), jnp.int32(0), jnp.float32(1.0))
      >>> t.tolist(), w.tolist()
      ([0, 1], [0.5, 0.5])
    """
    if estimator == "empirical":
        return lambda logits, y, mask: (y[None].astype(jnp.int32), mask[None].astype(jnp.float32))
    if estimator == "exact":
        classes = jnp.arange(num_classes, dtype=jnp.int32)
        return lambda logits, y, mask: (classes, jax.nn.softmax(logits.astype(jnp.float32)) * mask)

    def sampled(logits, key, mask):
        draws = jax.random.categorical(key, logits.astype(jnp.float32), shape=(num_samples,))
        return draws.astype(jnp.int32), jnp.full((num_samples,), 1.0 / num_samples) * mask

    return sampled


def targets_and_weights(
    estimator: str,
    logits: jax.Array | None,
    y: jax.Array | None,
    keys: jax.Array | None,
    num_samples: int,
):
    """Per-example targets ``(B, K)`` and their weights ``(B, K)``: the rules over a batch.

    Example:
      >>> t, w = targets_and_weights("empirical", None, jnp.array([2, 0]), None, 1)
      >>> t.tolist(), w.tolist()
      ([[2], [0]], [[1.0], [1.0]])
    """
    if estimator == "empirical":
        return y[:, None].astype(jnp.int32), jnp.ones((y.shape[0], 1), jnp.float32)
    logits = jax.lax.stop_gradient(logits.astype(jnp.float32))
    rule = estimator_rule(estimator, logits.shape[-1], num_samples)
    second = keys if estimator == "sampled" else jnp.zeros(logits.shape[0], jnp.int32)
    return jax.vmap(rule)(logits, second, jnp.ones(logits.shape[0], jnp.float32))
