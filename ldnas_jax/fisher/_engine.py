"""The Fisher engine protocol and the reference engine, ``vmap(grad)``.

A :class:`FisherEngine` computes, for one chunk of examples, the weighted sum of squared
per-example gradients of log p. Which targets and weights enter is an estimator's *rule*,
applied per example to the logits of the engine's own forward pass, so that the
``"sampled"`` and ``"exact"`` estimators need no second forward pass:
``rule(logits_i, *per_example_args) -> (targets_i (K,), weights_i (K,))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["FisherEngine", "given_targets", "make_vmap_engine", "vmap_engine_from_forward"]

_F32 = jnp.float32


class FisherEngine(NamedTuple):
    """A Fisher engine: everything :func:`ldnas_jax.fisher_diagonal` needs from one.

    Attributes:
      name: ``"vmap"`` or ``"layerwise"``.
      sum_squares: ``sum_squares(consts, params, x, rule, *rule_args)`` returns a
        pytree like ``params`` holding ``Σ_i Σ_k w_ik (∂ log p(t_ik | x_i) / ∂θ)²`` in
        float32, where ``(t_i, w_i) = rule(logits_i, *rule_args_i)`` (arrays in
        ``rule_args`` have a leading example axis). Weights must be non-negative.
      consts: the model's constants, the first argument of ``sum_squares``.
      num_classes: number of logits.
      preferred_chunk: examples per compiled step the engine runs best with, or None.
      plan: the layer-wise :class:`~ldnas_jax.fisher.LayerwisePlan`, or None.

    Calling the engine, ``engine(params, x, targets, weights)``, takes targets and
    weights ``(B, K)`` directly.
    """

    name: str
    sum_squares: Callable
    consts: tuple
    num_classes: int
    preferred_chunk: int | None = None
    plan: Any = None

    def __call__(self, params, x, targets, weights):
        return self.sum_squares(
            self.consts,
            params,
            x,
            given_targets,
            jnp.asarray(targets, jnp.int32),
            jnp.asarray(weights, _F32),
        )


def given_targets(logits_i, targets_i, weights_i):
    """The rule of targets and weights given in advance."""
    del logits_i
    return targets_i, weights_i


def vmap_engine_from_forward(forward: Callable, consts, num_classes: int) -> FisherEngine:
    """The reference engine over ``forward(consts, params, x) -> logits``.

    Per example it runs the forward pass once and pulls back one one-hot cotangent per
    target, so the exact estimator costs one forward and C backward passes.
    """

    def one_example(consts, params, x_i, rule, *args_i):
        def log_probs(p):
            logits = forward(consts, p, x_i[None])[0].astype(_F32)
            return jax.nn.log_softmax(logits), logits

        _, pull_back, logits = jax.vjp(log_probs, params, has_aux=True)
        targets, weights = rule(jax.lax.stop_gradient(logits), *args_i)
        cotangents = jax.nn.one_hot(targets, num_classes, dtype=_F32)  # (K, C)
        (grads,) = jax.vmap(pull_back)(cotangents)  # each leaf (K, *leaf.shape)
        return jax.tree.map(
            lambda g: jnp.tensordot(weights, jnp.square(g.astype(_F32)), axes=1), grads
        )

    def sum_squares(consts, params, x, rule, *args):
        per_example = jax.vmap(lambda x_i, *a: one_example(consts, params, x_i, rule, *a))(x, *args)
        return jax.tree.map(lambda s: jnp.sum(s, axis=0), per_example)

    return FisherEngine("vmap", sum_squares, tuple(consts), num_classes)


def make_vmap_engine(
    apply_fn: Callable[[Any, jax.Array], jax.Array], num_classes: int
) -> FisherEngine:
    """The reference engine for ``apply_fn``: one ``vjp`` per example, vmapped.

    Example:
      >>> params = {"w": jnp.ones((3, 2))}
      >>> engine = make_vmap_engine(lambda p, x: x @ p["w"], 2)
      >>> engine(params, jnp.ones((4, 3)), jnp.zeros((4, 1), int), jnp.ones((4, 1)))["w"].shape
      (3, 2)
    """
    return vmap_engine_from_forward(lambda consts, p, x: apply_fn(p, x), (), num_classes)
