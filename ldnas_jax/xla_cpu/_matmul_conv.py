"""Convolutions as matmuls of their patches, for any Flax linen ``nn.Conv``.

XLA:CPU runs some convolutions far below matmul speed: a 3×3 convolution on a
2×2 map with 512 channels reaches about 1 GFLOP/s, and the small batched
convolutions that a per-example ``vmap`` makes are slow too. The same layer
computed as ``patches @ kernel`` runs at matmul speed, forward and backward.
:func:`matmul_convs` routes chosen ``nn.Conv`` calls of any model this way
without touching its code (through :func:`flax.linen.intercept_methods`); the
layer-wise Fisher engine uses the same pieces to rebuild each convolution's
per-example patches.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import linear as _flax_linear
from jax import lax

__all__ = [
    "ConvGeometry",
    "conv_geometry",
    "conv_patches",
    "conv_taps",
    "layer_kind",
    "module_conv_forward",
    "module_weights",
    "same_padding_geometry",
]

# ---- recognising layers ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Static geometry of one ``nn.Conv`` call, enough to rebuild its patches.

    Attributes:
      kernel_size: spatial kernel shape.
      strides: window strides.
      input_dilation: ``lhs`` dilation (transposed-convolution style).
      kernel_dilation: ``rhs`` (atrous) dilation.
      padding: explicit ``(low, high)`` zero padding per spatial axis, applied
        after ``prepad``.
      prepad_mode: ``jnp.pad`` mode flax applies itself (``"wrap"`` for
        CIRCULAR, ``"reflect"``, ``"constant"`` for CAUSAL) or None.
      prepad: the ``(low, high)`` pairs of that pre-padding.
      lead_shape: leading (batch-like) axes of the per-example input.
      in_spatial: spatial shape of the input.
      out_spatial: spatial shape of the output.
      in_features: input channels.
      out_features: output channels.
    """

    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    input_dilation: tuple[int, ...]
    kernel_dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    prepad_mode: str | None
    prepad: tuple[tuple[int, int], ...]
    lead_shape: tuple[int, ...]
    in_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    in_features: int
    out_features: int

    @property
    def fan_in(self) -> int:
        return math.prod(self.kernel_size) * self.in_features

    @property
    def positions(self) -> int:
        """Output positions per example (leading axes included)."""
        return math.prod(self.lead_shape) * math.prod(self.out_spatial)


def _broadcast(value, n: int) -> tuple[int, ...]:
    if value is None:
        value = 1
    if isinstance(value, int):
        return (value,) * n
    return tuple(int(v) for v in value)


def conv_geometry(module: nn.Conv, in_shape: Sequence[int]) -> ConvGeometry | None:
    """The geometry of a plain ``nn.Conv`` call, or None where the engine must fall back."""
    if not _is_plain(module, nn.Conv) or not module.shared_weights:
        return None
    if module.feature_group_count != 1:
        return None
    if module.conv_general_dilated is not None or module.conv_general_dilated_cls is not None:
        return None
    kernel_size = (
        _broadcast(module.kernel_size, 1)
        if isinstance(module.kernel_size, int)
        else tuple(module.kernel_size)
    )
    nd = len(kernel_size)
    if len(in_shape) < nd + 1:
        return None
    strides = _broadcast(module.strides, nd)
    input_dilation = _broadcast(module.input_dilation, nd)
    kernel_dilation = _broadcast(module.kernel_dilation, nd)
    lead = tuple(in_shape[: len(in_shape) - nd - 1])
    spatial = tuple(in_shape[len(in_shape) - nd - 1 : -1])
    channels = int(in_shape[-1])
    padding = _flax_linear.canonicalize_padding(module.padding, nd)
    prepad_mode, prepad = None, ((0, 0),) * nd
    dilated_kernel = tuple((k - 1) * d + 1 for k, d in zip(kernel_size, kernel_dilation))
    if padding in ("CIRCULAR", "REFLECT"):
        prepad_mode = {"CIRCULAR": "wrap", "REFLECT": "reflect"}[padding]
        prepad = tuple(((k - 1) // 2, k // 2) for k in dilated_kernel)
        padding = "VALID"
    elif padding == "CAUSAL":
        if nd != 1:
            return None
        prepad_mode, prepad = "constant", ((kernel_dilation[0] * (kernel_size[0] - 1), 0),)
        padding = "VALID"
    spatial_after_prepad = tuple(s + lo + hi for s, (lo, hi) in zip(spatial, prepad))
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID", "SAME_LOWER") or any(d != 1 for d in input_dilation):
            return None  # lax itself refuses string padding with input dilation
        # lax.conv_general_dilated resolves string padding on the undilated input shape.
        pads = lax.padtype_to_pads(spatial_after_prepad, dilated_kernel, strides, padding)
    else:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    out_spatial = []
    for s, (lo, hi), ld, dk, st in zip(
        spatial_after_prepad, pads, input_dilation, dilated_kernel, strides
    ):
        size = (s - 1) * ld + 1 + lo + hi
        if size < dk:
            return None
        out_spatial.append((size - dk) // st + 1)
    return ConvGeometry(
        kernel_size,
        strides,
        input_dilation,
        kernel_dilation,
        pads,
        prepad_mode,
        prepad,
        lead,
        spatial,
        tuple(out_spatial),
        channels,
        int(module.features),
    )


def _is_plain(module, cls) -> bool:
    """``module`` runs ``cls.__call__`` unchanged, with flax's own dtype promotion."""
    return (
        isinstance(module, cls)
        and type(module).__call__ is cls.__call__
        and module.promote_dtype is nn.dtypes.promote_dtype
    )


def layer_kind(ctx, args, kwargs) -> str | None:
    """``"dense"`` / ``"conv"`` for an intercepted call the engine understands, else None."""
    if ctx.method_name != "__call__" or kwargs or len(args) != 1 or not hasattr(args[0], "shape"):
        return None
    module = ctx.module
    if _is_plain(module, nn.Dense):
        if module.dot_general is not None or module.dot_general_cls is not None:
            return None
        return "dense"
    if _is_plain(module, nn.Conv):
        return "conv"
    return None


def module_weights(module) -> dict[str, Any] | None:
    """The module's own ``kernel`` (and ``bias``), or None if it has anything else."""
    try:
        variables = module.variables
    except Exception:  # unbound or uninitialised: not ours to touch
        return None
    params = variables.get("params", {})
    if "kernel" not in params or not set(params) <= {"kernel", "bias"}:
        return None
    if any(not hasattr(v, "shape") for v in params.values()):
        return None
    return dict(params)


# ---- patches and the matmul convolution -----------------------------------------------------


def conv_taps(a: jax.Array, geom: ConvGeometry, fill: float = 0.0) -> list[jax.Array]:
    """The padded input seen through each kernel position: ``prod(kernel)`` arrays ``(N, *out_spatial, C)``.

    Tap order is row-major over the kernel; the padding holds ``fill`` (−inf for max
    pooling). Built from strided slices. A depthwise convolution is the sum of these taps
    times their per-channel weights.

    Example:
      >>> geom = same_padding_geometry((1, 4, 4, 2), (3, 3))
      >>> taps = conv_taps(jnp.ones((1, 4, 4, 2)), geom)
      >>> len(taps), taps[0].shape
      (9, (1, 4, 4, 2))
    """
    nd = len(geom.kernel_size)
    if geom.prepad_mode is not None:
        a = jnp.pad(a, ((0, 0), *geom.prepad, (0, 0)), mode=geom.prepad_mode)
    config = [(0, 0, 0)] + [
        (lo, hi, d - 1) for (lo, hi), d in zip(geom.padding, geom.input_dilation)
    ]
    a = lax.pad(a, jnp.asarray(fill, a.dtype), config + [(0, 0, 0)])
    taps = []
    for tap in itertools.product(*(range(k) for k in geom.kernel_size)):
        start = [0] + [t * d for t, d in zip(tap, geom.kernel_dilation)] + [0]
        limit = (
            [a.shape[0]]
            + [
                s + (o - 1) * st + 1
                for s, o, st in zip(start[1 : 1 + nd], geom.out_spatial, geom.strides)
            ]
            + [a.shape[-1]]
        )
        taps.append(lax.slice(a, start, limit, [1, *geom.strides, 1]))
    return taps


def conv_patches(a: jax.Array, geom: ConvGeometry) -> jax.Array:
    """Input patches of a convolution: ``(N, *spatial, C) -> (N, *out_spatial, prod(kernel)·C)``.

    The one im2col of the package. The last axis is ordered (kernel position,
    channel), matching ``kernel.reshape(-1, out_features)`` of an ``HWIO`` kernel.

    Example:
      >>> geom = same_padding_geometry((1, 4, 4, 2), (3, 3), strides=(2, 2))
      >>> conv_patches(jnp.ones((1, 4, 4, 2)), geom).shape
      (1, 2, 2, 18)
    """
    taps = conv_taps(a, geom)
    return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def same_padding_geometry(
    in_shape: Sequence[int],
    kernel_size: Sequence[int],
    strides: Sequence[int] | None = None,
    kernel_dilation: Sequence[int] | None = None,
    out_features: int = 0,
) -> ConvGeometry:
    """The geometry of a ``"SAME"``-padded convolution of an ``(N, *spatial, C)`` input.

    Each output axis has ``ceil(size / stride)`` positions, as ``lax.conv``'s
    ``"SAME"`` gives.

    Example:
      >>> same_padding_geometry((2, 5, 5, 3), (3, 3), strides=(2, 2)).out_spatial
      (3, 3)
    """
    kernel_size = tuple(int(k) for k in kernel_size)
    nd = len(kernel_size)
    strides = _broadcast(strides, nd) if strides is None else tuple(int(s) for s in strides)
    dilation = (
        _broadcast(kernel_dilation, nd)
        if kernel_dilation is None
        else tuple(int(d) for d in kernel_dilation)
    )
    spatial = tuple(int(s) for s in in_shape[1 : 1 + nd])
    dilated = tuple((k - 1) * d + 1 for k, d in zip(kernel_size, dilation))
    pads = tuple(
        (int(lo), int(hi)) for lo, hi in lax.padtype_to_pads(spatial, dilated, strides, "SAME")
    )
    return ConvGeometry(
        kernel_size=kernel_size,
        strides=strides,
        input_dilation=(1,) * nd,
        kernel_dilation=dilation,
        padding=pads,
        prepad_mode=None,
        prepad=((0, 0),) * nd,
        lead_shape=(),
        in_spatial=spatial,
        out_spatial=tuple(-(-s // st) for s, st in zip(spatial, strides)),
        in_features=int(in_shape[-1]),
        out_features=int(out_features),
    )


def module_conv_forward(module: nn.Conv, geom: ConvGeometry, inputs, kernel, bias, convolve=None):
    """``nn.Conv.__call__`` with flax's dtype rules, mask and bias, convolving by another route.

    ``convolve(a, kernel, geom)`` gets the input with its leading axes flattened into one
    batch axis; by default it is patches @ kernel.
    """
    nd = len(geom.kernel_size)
    lead = inputs.shape[: inputs.ndim - nd - 1]
    a = inputs.reshape((-1, *inputs.shape[inputs.ndim - nd - 1 :]))
    if module.mask is not None:
        kernel = kernel * module.mask
    a, kernel, bias = nn.dtypes.promote_dtype(a, kernel, bias, dtype=module.dtype)
    if convolve is None:
        patches = conv_patches(a, geom)
        y = lax.dot_general(
            patches,
            kernel.reshape(-1, kernel.shape[-1]),
            (((patches.ndim - 1,), (0,)), ((), ())),
            precision=module.precision,
        )
    else:
        y = convolve(a, kernel, geom)
    if bias is not None:
        y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
    return y.reshape((*lead, *y.shape[1:]))
