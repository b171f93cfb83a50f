"""Any loss or apply function, traced around XLA:CPU's slow convolutions and pooling."""

import functools
from collections.abc import Callable

import jax

from ldnas_jax.xla_cpu._conv_routing import matmul_convs
from ldnas_jax.xla_cpu._pooling import tiled_max_pooling

__all__ = ["fast_routes"]


def fast_routes(fn: Callable, *, max_output_positions: int | str | None = None) -> Callable:
    """``fn`` with each convolution on its fastest route, and tiling max pooling's cheap derivative.

    By default they apply on CPU only: on a GPU or TPU ``fn`` is traced as written, unless
    ``max_output_positions`` asks for matmul convolutions there.

    Both rewrites keep the result (the convolution routes of
    :func:`ldnas_jax.xla_cpu.matmul_convs` up to float rounding, the pooling exactly);
    they only change what XLA compiles. On 2 CPU cores
    they made the training step of VGG-16 about 5× faster and of the
    ε-networks (``small_vgg``) about 1.3× (``benchmarks/fisher_speed.py``).
    ``fn``'s arguments must be pytrees of arrays; wrap it before ``jax.grad``.

    Args:
      fn: a function of arrays, typically a loss.
      max_output_positions: see :func:`ldnas_jax.xla_cpu.matmul_convs`
        (default: each layer shape's faster route, timed once, on CPU; off elsewhere).

    Example:
      >>> import flax.linen as nn, jax, jax.numpy as jnp
      >>> model = nn.Conv(2, (3, 3))
      >>> v = model.init(jax.random.key(0), jnp.ones((1, 2, 2, 1)))
      >>> loss = lambda v, x: jnp.sum(nn.max_pool(model.apply(v, x), (2, 2), (2, 2)))
      >>> g = jax.grad(fast_routes(loss))(v, jnp.ones((1, 2, 2, 1)))
      >>> jax.tree.map(jnp.shape, g)["params"]["kernel"]
      (3, 3, 1, 2)
    """

    def routed(*args):
        with matmul_convs(max_output_positions):
            return fn(*args)

    pooled = tiled_max_pooling(routed)

    @functools.wraps(fn)
    def for_backend(*args):
        # The mask derivative beats select_and_scatter on XLA:CPU only. On an H200 it made the
        # small CNN's batched gradient 1.37x slower (docs/fisher_speed_gpu_h200.json).
        return (pooled if jax.default_backend() == "cpu" else routed)(*args)

    return for_backend
