"""Sums over examples and targets of squared per-example gradients, without vmap(grad).

For a contraction with per-example input rows ``U_i (P, G, A)`` and output cotangents
``δ_ik (P, G, O)``, the per-example weight gradient of group g is ``G_ikg = U_igᵀ δ_ikg``
and the Fisher needs ``Σ_ik G_ik²``. :func:`contraction_squares` picks the cheapest exact
formulation:

* one position (a dense layer on a vector): ``(U²)ᵀ (Σ_k δ²)``, one matmul and no
  per-example tensor (the dense-layer identity kfac-jax and BackPACK use);
* few positions (a convolution on a 2×2 map): the expansion over position pairs
  ``Σ_{p≤q} c_pq (U_p∘U_q)ᵀ (Σ_k δ_p∘δ_q)``, again one matmul, independent of K;
* otherwise: a ``scan`` over examples of ``U_iᵀ [δ_i1 … δ_iK]``, squared and
  accumulated, so that a per-example gradient never exceeds one chunk of examples.

For a parameter *added to* or *multiplying* an activation (a bias, a normalisation
scale), :func:`elementwise_squares` sums ``δ`` (times the other factor) over the axes the
parameter is broadcast along, per example, then squares.

All sums are in float32 whatever the model's dtype.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from ldnas_jax.data.batching import pad_rows
from ldnas_jax.fisher._contraction import Layout

__all__ = ["contraction_route", "contraction_squares", "elementwise_squares"]

_F32 = jnp.float32
_HIGHEST = lax.Precision.HIGHEST
# Memory/latency cost of one element of a per-example gradient, in multiply-adds:
# it is written by the matmul, read back, squared and accumulated.
_PER_EXAMPLE_ELEMENT_COST = 16.0


def contraction_route(positions: int, targets: int) -> str:
    """``"outer"``, ``"pairs"`` or ``"scan"``: the cheapest exact formulation (module docstring).

    Example:
      >>> contraction_route(1, 10), contraction_route(4, 10), contraction_route(1024, 1)
      ('outer', 'pairs', 'scan')
    """
    if positions == 1:
        return "outer"
    pairs = positions * (positions + 1) // 2
    if 2 * pairs <= targets * (2 * positions + _PER_EXAMPLE_ELEMENT_COST):
        return "pairs"
    return "scan"


def contraction_squares(layout: Layout, a, d, group: int):
    """``Σ_i Σ_k G_ik²`` of one contraction, shaped ``(G, A, O)``.

    Args:
      layout: the contraction's :class:`~ldnas_jax.fisher._contraction.Layout`.
      a: captured inputs, ``(B, *input_shape)``.
      d: output cotangents ``(B, K, *output_shape)`` (weights already folded in as √w).
      group: examples per step of the scan route.
    """
    route = contraction_route(layout.positions, d.shape[1])
    deltas = layout.to_deltas(d.astype(_F32))  # (B, K, P, G, O)
    if route == "outer":
        u = layout.to_rows(a)[:, 0].astype(_F32)  # (B, G, A)
        return lax.dot_general(
            jnp.square(u),
            jnp.sum(jnp.square(deltas[:, :, 0]), axis=1),
            (((0,), (0,)), ((1,), (1,))),
            precision=_HIGHEST,
        )
    if route == "pairs":
        return _pairs(layout.to_rows(a).astype(_F32), deltas)
    return _scan(layout, a, deltas, group)


def _pairs(u, d):
    """``(Σ_p u_p d_p)² = Σ_{p≤q} c_pq (u_p u_q)(d_p d_q)``, c = 1 on the diagonal, 2 off it."""
    p_idx, q_idx = np.triu_indices(u.shape[1])
    coef = jnp.asarray(np.where(p_idx == q_idx, 1.0, 2.0), _F32)
    left = u[:, p_idx] * u[:, q_idx]  # (B, Q, G, A)
    right = jnp.sum(d[:, :, p_idx] * d[:, :, q_idx], axis=1) * coef[None, :, None, None]
    return lax.dot_general(left, right, (((0, 1), (0, 1)), ((2,), (2,))), precision=_HIGHEST)


def _scan(layout: Layout, a, deltas, group: int):
    """Per-example gradients ``group`` examples at a time, squared and accumulated."""
    batch = a.shape[0]
    rows = -(-batch // group) * group
    a, deltas = pad_rows(rows, a, deltas)  # zero rows add nothing
    a = a.reshape((rows // group, group, *a.shape[1:]))
    deltas = deltas.reshape((rows // group, group, *deltas.shape[1:]))
    g_count, a_count, o_count = layout.groups, layout.fan_in, layout.fan_out

    def step(acc, xs):
        a_g, d_g = xs
        u = layout.to_rows(a_g).astype(_F32)  # (g, P, G, A); d_g: (g, K, P, G, O)
        if group == 1 and g_count == 1:
            g = lax.dot_general(
                u[0, :, 0], d_g[0, :, :, 0], (((0,), (1,)), ((), ())), precision=_HIGHEST
            )  # (A, K, O)
            return acc + jnp.sum(jnp.square(g), axis=1)[None], None
        g = lax.dot_general(
            u, d_g, (((1,), (2,)), ((0, 2), (0, 3))), precision=_HIGHEST
        )  # (g, G, A, K, O)
        return acc + jnp.sum(jnp.square(g), axis=(0, 3)), None

    acc, _ = lax.scan(step, jnp.zeros((g_count, a_count, o_count), _F32), (a, deltas))
    return acc


def elementwise_squares(d, other, scale, reduce_axes: tuple[int, ...]):
    """``Σ_i Σ_k (Σ_broadcast δ_ik · other_i · scale)²`` for a parameter added or multiplied.

    Args:
      d: cotangents of the operation's output, ``(B, K, *out_shape)``.
      other: the other factor of a product, ``(B, *shape)`` broadcastable to the output,
        or None for a sum.
      scale: a constant factor the parameter was multiplied by on its way, broadcastable
        to the output, or None.
      reduce_axes: output axes the parameter is broadcast along (summed per example).

    Returns:
      The output shape with size 1 along ``reduce_axes``.

    Example:
      >>> d = jnp.ones((2, 1, 3, 4))  # 2 examples, 1 target, a (3, 4) output; a bias over 4
      >>> elementwise_squares(d, None, None, (0,)).tolist()
      [[18.0, 18.0, 18.0, 18.0]]
    """
    c = d.astype(_F32)
    if other is not None:
        c = c * other.astype(_F32)[:, None]
    if scale is not None:
        c = c * scale.astype(_F32)[None, None]
    if reduce_axes:
        c = jnp.sum(c, axis=tuple(2 + ax for ax in reduce_axes), keepdims=True)
    return jnp.sum(jnp.square(c), axis=(0, 1))
