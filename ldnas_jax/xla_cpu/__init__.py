"""Exact rewrites around XLA:CPU's slow spots: small convolutions and max-pool derivatives.

* :func:`matmul_convs`: linen ``nn.Conv`` runs as patches @ kernel where that is faster,
  timed once per layer shape (:func:`conv_route`) or chosen by output size.
* :func:`tiled_max_pooling`: max pooling whose windows tile the input is differentiated
  through a first-maximum mask (:func:`window_max`), not ``select_and_scatter``.
* :func:`conv_with_patch_gradient`: XLA's convolution, differentiated with its forward
  pass as :func:`conv_by_patches` and its kernel gradient as :func:`conv_kernel_gradient`,
  patch matmuls a chunk of images at a time (the ``"patch_gradient"`` route; the search
  space's ``conv2d`` shares the kernel gradient).
* :func:`fast_routes`: both at once, around any function.
* :func:`conv_patches`: the one im2col of the package (:func:`conv_taps` its
  per-tap slices, for depthwise convolutions).
* :func:`bind_equation`: one jaxpr equation evaluated as JAX does, for the evaluators
  that rewrite the others (here and in :mod:`ldnas_jax.fisher`).

Every rewrite gives the same values and derivatives as the program it replaces.
"""

from ldnas_jax.xla_cpu._conv_gradient import (
    conv_by_patches,
    conv_kernel_gradient,
    conv_with_patch_gradient,
    split_batch,
    xla_conv,
)
from ldnas_jax.xla_cpu._conv_routing import (
    ConvTiming,
    clear_conv_routes,
    conv_route,
    conv_route_timings,
    default_matmul_positions,
    matmul_convs,
    time_conv_routes,
)
from ldnas_jax.xla_cpu._fast_routes import fast_routes
from ldnas_jax.xla_cpu._matmul_conv import (
    ConvGeometry,
    conv_geometry,
    conv_patches,
    conv_taps,
    same_padding_geometry,
)
from ldnas_jax.xla_cpu._pooling import bind_equation, tiled_max_pooling, window_max

__all__ = [
    "ConvGeometry",
    "ConvTiming",
    "bind_equation",
    "clear_conv_routes",
    "conv_by_patches",
    "conv_geometry",
    "conv_kernel_gradient",
    "conv_patches",
    "conv_route",
    "conv_route_timings",
    "conv_taps",
    "conv_with_patch_gradient",
    "default_matmul_positions",
    "fast_routes",
    "matmul_convs",
    "same_padding_geometry",
    "split_batch",
    "tiled_max_pooling",
    "time_conv_routes",
    "window_max",
    "xla_conv",
]
