"""Which route each linen ``nn.Conv`` takes: XLA's convolution, patches @ kernel, or XLA's
convolution differentiated through chunked patches.

No single rule suits every layer on XLA:CPU. A 3×3 convolution on a 2×2 map runs about
5× faster as a matmul of its patches. On larger maps the whole batch's patches are bound
by memory bandwidth, and XLA's kernel gradient is its slow part: there the third route,
``"patch_gradient"`` (:func:`ldnas_jax.xla_cpu.conv_with_patch_gradient`), keeps XLA's
input gradient and computes the forward pass and the kernel gradient from patches a
chunk of images at a time.
:func:`matmul_convs` therefore defaults, on CPU, to timing the routes for each distinct
layer shape, once per process (:func:`conv_route`), and taking the fastest.
The timing runs while the model is traced (a few small programs per new shape), so a
trained model never pays it twice, and later traces of the same shapes read the cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldnas_jax.xla_cpu._conv_gradient import conv_with_patch_gradient, xla_conv
from ldnas_jax.xla_cpu._matmul_conv import (
    ConvGeometry,
    conv_geometry,
    conv_patches,
    layer_kind,
    module_conv_forward,
    module_weights,
)

__all__ = [
    "ROUTES",
    "ConvTiming",
    "clear_conv_routes",
    "conv_route",
    "conv_route_timings",
    "default_matmul_positions",
    "matmul_convs",
    "time_conv_routes",
]

ROUTES = ("lax", "matmul", "patch_gradient")
TIMED = "timed"
# The matmul route materialises every patch; past this size the timing itself would cost
# memory, and XLA's convolution is the safe choice for such large maps anyway.
MAX_PATCH_BYTES = 256 * 2**20
# The matmul route must beat XLA's convolution clearly: its patches cost memory, and a layer
# timed alone misses how XLA fuses it with its neighbours (on a small CNN, taking matmul on a
# 2% win made the whole training step 10% slower). Near-ties go to XLA's op.
MATMUL_MAX_TIME_RATIO = 0.85
# Timing a shape costs about a second of compiling. Below this many forward FLOPs a layer's
# pass takes milliseconds either way, so it keeps the fixed rule (matmul up to 16 output
# positions, XLA's op with the patch kernel gradient above) untimed. SmallVGG's layers lie
# far below it, VGG-16's nearly all above.
TIMING_MIN_FLOPS = 2**30
# The fixed rule: XLA:CPU's convolutions on tiny maps are pathological.
CPU_MATMUL_POSITIONS = 16

_TIMINGS: dict[tuple, ConvTiming] = {}


@dataclasses.dataclass(frozen=True)
class ConvTiming:
    """Seconds of one forward and backward pass of a convolution on each route.

    Attributes:
      lax_seconds: through ``lax.conv_general_dilated``, differentiated by JAX.
      matmul_seconds: through :func:`ldnas_jax.xla_cpu.conv_patches` and a matmul.
      patch_gradient_seconds: through :func:`ldnas_jax.xla_cpu.conv_with_patch_gradient`
        (infinite when not timed).
    """

    lax_seconds: float
    matmul_seconds: float
    patch_gradient_seconds: float = math.inf

    @property
    def route(self) -> str:
        """The faster of the two XLA routes, unless matmul takes at most 0.85× its time.

        Example:
          >>> ConvTiming(lax_seconds=1.0, matmul_seconds=0.5).route
          'matmul'
          >>> ConvTiming(lax_seconds=1.0, matmul_seconds=0.95).route  # a near-tie
          'lax'
          >>> ConvTiming(1.0, 0.5, patch_gradient_seconds=0.4).route
          'patch_gradient'
        """
        xla_route, xla_seconds = min(
            ("lax", self.lax_seconds),
            ("patch_gradient", self.patch_gradient_seconds),
            key=lambda pair: pair[1],
        )
        return "matmul" if self.matmul_seconds <= MATMUL_MAX_TIME_RATIO * xla_seconds else xla_route


def _matmul_conv(x: jax.Array, kernel: jax.Array, geom: ConvGeometry) -> jax.Array:
    patches = conv_patches(x, geom)
    return patches @ kernel.reshape(-1, kernel.shape[-1])


# The programs each route runs, as timed.
_ROUTE_PROGRAMS = {
    "lax": xla_conv,
    "matmul": _matmul_conv,
    "patch_gradient": conv_with_patch_gradient,
}


def _seconds(compiled, args) -> float:
    started = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - started


def time_conv_routes(
    geom: ConvGeometry, dtype=jnp.float32, batch: int = 1, repeats: int = 3
) -> ConvTiming:
    """Times one forward and backward pass of the convolution ``geom`` on every route.

    The input holds ``batch`` times the geometry's leading axes (a geometry from
    :func:`ldnas_jax.xla_cpu.conv_geometry` already holds the batch there). The backward
    pass takes gradients for the input and the kernel, as a training step does. Each
    route is compiled and run once; unless one took over twice the other's time, each
    runs ``repeats - 1`` more times and its best run counts. (XLA:CPU's convolution on a
    2×2 map can take seconds per pass, so clear cases are not repeated.) Safe to call
    while another program is being traced.

    Example:
      >>> from ldnas_jax.xla_cpu import same_padding_geometry
      >>> geom = same_padding_geometry((1, 4, 4, 8), (3, 3), out_features=8)
      >>> timing = time_conv_routes(geom, batch=2)
      >>> timing.route in ROUTES and min(timing.lax_seconds, timing.matmul_seconds,
      ...                                  timing.patch_gradient_seconds) > 0
      True
    """
    in_shape = (batch * math.prod(geom.lead_shape), *geom.in_spatial, geom.in_features)
    kernel_shape = (*geom.kernel_size, geom.in_features, geom.out_features)
    rng = np.random.default_rng(0)
    # Outside any trace: the timed programs run now, even when a model is being traced.
    with jax.ensure_compile_time_eval():
        x = jnp.asarray(rng.standard_normal(in_shape), dtype)
        kernel = jnp.asarray(rng.standard_normal(kernel_shape), dtype)
        steps = {}
        for name, conv in _ROUTE_PROGRAMS.items():
            loss = lambda x, k, conv=conv: jnp.sum(conv(x, k, geom).astype(jnp.float32) ** 2)
            steps[name] = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel).compile()
        seconds = {name: _seconds(step, (x, kernel)) for name, step in steps.items()}
        if max(seconds.values()) < 2 * min(seconds.values()):
            for _ in range(repeats - 1):
                for name, step in steps.items():
                    seconds[name] = min(seconds[name], _seconds(step, (x, kernel)))
    return ConvTiming(**{f"{name}_seconds": value for name, value in seconds.items()})


def _patch_bytes(geom: ConvGeometry, batch: int, dtype) -> int:
    return batch * geom.positions * geom.fan_in * jnp.dtype(dtype).itemsize


def _forward_flops(geom: ConvGeometry, batch: int) -> int:
    return 2 * batch * geom.positions * geom.fan_in * geom.out_features


def conv_route(geom: ConvGeometry, dtype=jnp.float32, batch: int = 1) -> str:
    """The route for this convolution here: timed on first use, then cached.

    The cache lives for the process and is keyed by backend, geometry, dtype and batch.
    Two kinds of convolution are not timed: those whose patches would exceed 256 MiB take
    ``"lax"``, and those under 2**30 forward FLOPs, whose pass takes milliseconds either
    way, keep the fixed rule (``"matmul"`` up to 16 output positions per image,
    ``"patch_gradient"`` above).

    Example:
      >>> from ldnas_jax.xla_cpu import same_padding_geometry
      >>> tiny = same_padding_geometry((1, 2, 2, 16), (3, 3), out_features=16)
      >>> conv_route(tiny, batch=4), conv_route_timings()  # untimed: the fixed rule
      ('matmul', {})
      >>> wide = same_padding_geometry((1, 8, 8, 256), (3, 3), out_features=256)
      >>> conv_route(wide, batch=16) in ROUTES  # 1.2 GFLOP: timed once, then cached
      True
      >>> [key[1:] for key in conv_route_timings()] == [(wide, "float32", 16)]
      True
    """
    if _patch_bytes(geom, batch, dtype) > MAX_PATCH_BYTES:
        return "lax"
    if _forward_flops(geom, batch) < TIMING_MIN_FLOPS:
        return "matmul" if math.prod(geom.out_spatial) <= CPU_MATMUL_POSITIONS else "patch_gradient"
    key = (jax.default_backend(), geom, jnp.dtype(dtype).name, int(batch))
    if key not in _TIMINGS:
        _TIMINGS[key] = time_conv_routes(geom, dtype, batch)
    return _TIMINGS[key].route


def conv_route_timings() -> dict[tuple, ConvTiming]:
    """A copy of this process's timings: ``(backend, geometry, dtype, batch) -> ConvTiming``."""
    return dict(_TIMINGS)


def clear_conv_routes() -> None:
    """Forgets every timing, so that the next trace times its convolutions again."""
    _TIMINGS.clear()


def default_matmul_positions() -> int:
    # XLA:CPU convolutions on tiny maps are pathological; GPUs and TPUs have good ones.
    return CPU_MATMUL_POSITIONS if jax.default_backend() == "cpu" else 0


def _route_policy(max_output_positions: int | str | None) -> int | str:
    if max_output_positions is None:
        return TIMED if jax.default_backend() == "cpu" else 0
    if max_output_positions == TIMED:
        return TIMED
    if isinstance(max_output_positions, bool) or not isinstance(max_output_positions, int):
        raise TypeError(
            f"max_output_positions must be an int, {TIMED!r} or None, got {max_output_positions!r}"
        )
    if max_output_positions < 0:
        raise ValueError(f"max_output_positions must be ≥ 0, got {max_output_positions}")
    return max_output_positions


def _route(policy: int | str, geom: ConvGeometry, dtype) -> str:
    if policy == TIMED:
        return conv_route(geom, dtype)  # the geometry's leading axes hold the batch
    return "matmul" if math.prod(geom.out_spatial) <= policy else "lax"


@contextlib.contextmanager
def matmul_convs(max_output_positions: int | str | None = None):
    """Within the context, chosen ``nn.Conv`` calls run as patches @ kernel, or with a patch
    kernel gradient.

    XLA:CPU runs a 3×3 convolution on a 2×2 map with 512 channels at about
    1 GFLOP/s; the same layer as a matmul of its patches runs near matmul speed,
    forward and backward. On larger maps its kernel gradient is the slow part, and the
    ``"patch_gradient"`` route takes it, and the forward pass, from patches a chunk of
    images at a time (:func:`ldnas_jax.xla_cpu.conv_with_patch_gradient`). The result is the same convolution up
    to float rounding. Use it around training or evaluation steps of any linen model
    (the context must be active while the step is traced, i.e. around its first
    call under ``jit``).

    Args:
      max_output_positions: ``"timed"`` times the routes once per layer shape and takes
        the fastest (:func:`conv_route`); an int routes a convolution to the matmul when
        its output has at most this many spatial positions per image (0: never) and
        leaves the others to flax.
        Default: ``"timed"`` on CPU, 0 elsewhere.

    Example:
      >>> conv = nn.Conv(8, (3, 3))
      >>> x = jnp.ones((2, 4, 4, 3))
      >>> v = conv.init(jax.random.key(0), x)
      >>> with matmul_convs(16):  # a 4×4 output map: 16 positions, a matmul
      ...   jaxpr = jax.make_jaxpr(conv.apply)(v, x)
      >>> "conv_general_dilated" in str(jaxpr)
      False
    """
    policy = _route_policy(max_output_positions)

    def interceptor(next_fun, args, kwargs, ctx):
        if policy == 0 or layer_kind(ctx, args, kwargs) != "conv":
            return next_fun(*args, **kwargs)
        params = module_weights(ctx.module)
        if params is None:
            return next_fun(*args, **kwargs)
        geom = conv_geometry(ctx.module, args[0].shape)
        route = "lax" if geom is None else _route(policy, geom, args[0].dtype)
        if route == "lax":
            return next_fun(*args, **kwargs)
        convolve = conv_with_patch_gradient if route == "patch_gradient" else None
        return module_conv_forward(
            ctx.module, geom, args[0], params["kernel"], params.get("bias"), convolve
        )

    with nn.intercept_methods(interceptor):
        yield
