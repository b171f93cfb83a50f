"""A traced contraction (``dot_general``, ``conv_general_dilated``) seen from its weight operand.

Whatever the layout of a contraction, a per-example weight gradient is a sum over the
*positions* (the input's axes that are neither contracted nor paired with the weight) of
``input row ⊗ output cotangent``, one product per *group* (the axes the weight shares with
the input, ``dot_general`` batch axes or convolution feature groups). :class:`Layout`
rearranges a captured input into rows ``(examples, positions, groups, fan_in)`` and an
output cotangent into ``(examples, targets, positions, groups, fan_out)``, and maps the
resulting ``(groups, fan_in, fan_out)`` back to the weight operand's own layout.

:func:`conv_as_matmul` computes any ungrouped-batch convolution as patches @ kernel, the
route around XLA:CPU's slow small convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from ldnas_jax.xla_cpu import ConvGeometry, conv_patches

__all__ = ["Layout", "contraction_layout", "conv_as_matmul", "conv_geometry_of"]


class Layout(NamedTuple):
    """How one contraction's weight gradient is formed.

    Attributes:
      kind: ``"dense"`` (``dot_general``) or ``"conv"``.
      positions: P, input rows per example.
      groups: G.
      fan_in: A, entries of one row.
      fan_out: O, outputs per group.
      to_rows: ``a (n, *input_shape) -> (n, P, G, A)``.
      to_deltas: ``d (n, K, *output_shape) -> (n, K, P, G, O)``.
      to_weight: ``(G, A, O) -> weight operand shape``.
    """

    kind: str
    positions: int
    groups: int
    fan_in: int
    fan_out: int
    to_rows: Callable
    to_deltas: Callable
    to_weight: Callable


def _batched_transpose(a, perm, lead: int):
    """Transposes the trailing axes of ``a`` by ``perm``, keeping ``lead`` leading axes."""
    return jnp.transpose(a, (*range(lead), *(lead + p for p in perm)))


def contraction_layout(eqn, weight_operand: int) -> Layout:
    """The :class:`Layout` of a ``dot_general`` or ``conv_general_dilated`` equation."""
    if eqn.primitive.name == "dot_general":
        return _dot_layout(eqn, weight_operand)
    return _conv_layout(eqn)


def _dot_layout(eqn, k: int) -> Layout:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    w_aval, a_aval = eqn.invars[k].aval, eqn.invars[1 - k].aval
    w_c, a_c = (lc, rc) if k == 0 else (rc, lc)
    w_b, a_b = (lb, rb) if k == 0 else (rb, lb)
    w_c, a_c, w_b, a_b = (tuple(int(d) for d in t) for t in (w_c, a_c, w_b, a_b))
    w_f = tuple(d for d in range(len(w_aval.shape)) if d not in w_c + w_b)
    a_f = tuple(d for d in range(len(a_aval.shape)) if d not in a_c + a_b)
    nb = len(w_b)
    # dot_general's output: batch axes, then the lhs's free axes, then the rhs's.
    if k == 0:
        out_w = tuple(range(nb, nb + len(w_f)))
        out_a = tuple(range(nb + len(w_f), nb + len(w_f) + len(a_f)))
    else:
        out_a = tuple(range(nb, nb + len(a_f)))
        out_w = tuple(range(nb + len(a_f), nb + len(a_f) + len(w_f)))
    size = lambda shape, axes: math.prod(shape[d] for d in axes)
    positions, groups = size(a_aval.shape, a_f), size(a_aval.shape, a_b)
    fan_in, fan_out = size(a_aval.shape, a_c), size(w_aval.shape, w_f)
    a_perm = a_f + a_b + a_c
    d_perm = out_a + tuple(range(nb)) + out_w
    w_order = w_b + w_c + w_f
    w_split = tuple(w_aval.shape[d] for d in w_order)
    inverse = tuple(int(i) for i in np.argsort(w_order))

    def to_rows(a):
        a = _batched_transpose(a, a_perm, 1)
        return a.reshape(a.shape[0], positions, groups, fan_in)

    def to_deltas(d):
        d = _batched_transpose(d, d_perm, 2)
        return d.reshape(d.shape[0], d.shape[1], positions, groups, fan_out)

    def to_weight(g):
        return jnp.transpose(g.reshape(w_split), inverse)

    return Layout("dense", positions, groups, fan_in, fan_out, to_rows, to_deltas, to_weight)


def conv_geometry_of(eqn) -> tuple[ConvGeometry, tuple, tuple, tuple]:
    """The :class:`~ldnas_jax.xla_cpu.ConvGeometry` of a ``conv_general_dilated`` equation.

    Returns ``(geometry, lhs_spec, rhs_spec, out_spec)``; ``geometry`` is that of the
    input in ``(N, *spatial, C)`` layout.
    """
    p = eqn.params
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = (tuple(int(d) for d in s) for s in dn)
    lhs_shape = eqn.invars[0].aval.shape
    rhs_shape = eqn.invars[1].aval.shape
    nd = len(lhs_spec) - 2
    kernel = tuple(int(rhs_shape[d]) for d in rhs_spec[2:])
    in_spatial = tuple(int(lhs_shape[d]) for d in lhs_spec[2:])
    out_shape = eqn.outvars[0].aval.shape
    out_spatial = tuple(int(out_shape[d]) for d in out_spec[2:])
    geom = ConvGeometry(
        kernel_size=kernel,
        strides=tuple(int(s) for s in p["window_strides"]),
        input_dilation=tuple(int(d) for d in (p["lhs_dilation"] or (1,) * nd)),
        kernel_dilation=tuple(int(d) for d in (p["rhs_dilation"] or (1,) * nd)),
        padding=tuple((int(lo), int(hi)) for lo, hi in p["padding"]),
        prepad_mode=None,
        prepad=((0, 0),) * nd,
        lead_shape=(int(lhs_shape[lhs_spec[0]]),),
        in_spatial=in_spatial,
        out_spatial=out_spatial,
        in_features=int(lhs_shape[lhs_spec[1]]),
        out_features=int(rhs_shape[rhs_spec[0]]),
    )
    return geom, lhs_spec, rhs_spec, out_spec


def _to_channels_last(a, spec, lead: int):
    """``(lead..., *layout)`` -> ``(lead..., N, *spatial, C)`` for a conv layout ``spec``."""
    return _batched_transpose(a, (spec[0], *spec[2:], spec[1]), lead)


def _conv_layout(eqn) -> Layout:
    geom, lhs_spec, rhs_spec, out_spec = conv_geometry_of(eqn)
    nd = len(geom.kernel_size)
    groups = int(eqn.params["feature_group_count"])
    taps = math.prod(geom.kernel_size)
    c_group = geom.in_features // groups
    o_group = geom.out_features // groups
    n = geom.lead_shape[0]
    positions = n * math.prod(geom.out_spatial)
    fan_in = taps * c_group

    def to_rows(a):
        m = a.shape[0]
        a = _to_channels_last(a, lhs_spec, 1)
        patches = conv_patches(a.reshape(m * n, *a.shape[2:]), geom)  # (m·N, *out, taps·C)
        patches = patches.reshape(m, positions, taps, groups, c_group)
        return jnp.swapaxes(patches, 2, 3).reshape(m, positions, groups, fan_in)

    def to_deltas(d):
        d = _to_channels_last(d, out_spec, 2)
        return d.reshape(d.shape[0], d.shape[1], positions, groups, o_group)

    # rhs operand axis rhs_spec[0] is O, rhs_spec[1] is I, rhs_spec[2 + j] is spatial j.
    to_operand = [0] * (nd + 2)
    to_operand[rhs_spec[0]], to_operand[rhs_spec[1]] = nd + 1, nd
    for j in range(nd):
        to_operand[rhs_spec[2 + j]] = j

    def to_weight(g):  # (G, taps·Cg, Og) -> (*kernel, Cg, G·Og) -> rhs layout
        g = g.reshape(groups, *geom.kernel_size, c_group, o_group)
        g = jnp.moveaxis(g, 0, nd + 1).reshape(*geom.kernel_size, c_group, geom.out_features)
        return jnp.transpose(g, to_operand)

    return Layout("conv", positions, groups, fan_in, o_group, to_rows, to_deltas, to_weight)


def conv_as_matmul(eqn, lhs, rhs):
    """``conv_general_dilated`` computed as a matmul of the input's patches and the kernel.

    Same value as the convolution up to float rounding; XLA:CPU runs it near matmul speed
    where its convolutions are slow (small maps, and the per-example convolutions of a
    ``vmap``). Feature groups become a batch axis of the matmul.
    """
    geom, lhs_spec, rhs_spec, out_spec = conv_geometry_of(eqn)
    nd = len(geom.kernel_size)
    p = eqn.params
    groups = int(p["feature_group_count"])
    n = lhs.shape[lhs_spec[0]]
    patches = conv_patches(_to_channels_last(lhs, lhs_spec, 0), geom)  # (N, *out, taps·C)
    taps = math.prod(geom.kernel_size)
    c_group, o = geom.in_features // groups, geom.out_features
    rows = patches.reshape(-1, taps, groups, c_group)
    # kernel as (*kernel, Cg, O), rows (taps, Cg) like the patches, then per group.
    kernel = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
    kernel = kernel.reshape(taps, c_group, groups, o // groups)
    dtype = p.get("preferred_element_type")
    if groups == 1:
        y = lax.dot_general(
            rows.reshape(rows.shape[0], taps * c_group),
            kernel.reshape(taps * c_group, o),
            (((1,), (0,)), ((), ())),
            precision=p.get("precision"),
            preferred_element_type=dtype,
        )
    else:
        y = lax.dot_general(
            jnp.swapaxes(rows, 1, 2).reshape(rows.shape[0], groups, taps * c_group),
            jnp.moveaxis(kernel, 2, 0).reshape(groups, taps * c_group, o // groups),
            (((2,), (1,)), ((1,), (0,))),
            precision=p.get("precision"),
            preferred_element_type=dtype,
        )  # (G, rows, Og)
        y = jnp.moveaxis(y, 0, 1).reshape(-1, o)
    y = y.reshape(n, *geom.out_spatial, o)
    # (N, *spatial, O) back to the output layout: output axis out_spec[k] holds (N, C, *sp)[k].
    source = (0, nd + 1, *range(1, nd + 1))
    perm = [0] * (nd + 2)
    for k, axis in enumerate(out_spec):
        perm[axis] = source[k]
    return jnp.transpose(y, perm)


def conv_output_positions(eqn) -> int:
    """Output positions per image of a convolution equation."""
    out_shape = eqn.outvars[0].aval.shape
    out_spec = eqn.params["dimension_numbers"][2]
    return math.prod(int(out_shape[d]) for d in out_spec[2:])


def matmul_conv_rewrite(max_positions: int):
    """A :func:`ldnas_jax.fisher._program.evaluate` rewrite: small convolutions as matmuls."""

    def rewrite(eqn, invals):
        if (
            max_positions <= 0
            or eqn.primitive is not lax.conv_general_dilated_p
            or eqn.params["batch_group_count"] != 1
            or conv_output_positions(eqn) > max_positions
        ):
            return None
        return [conv_as_matmul(eqn, *invals)]

    return rewrite
