"""Candidate operations on the edges of a cell.

Every operation maps an NHWC tensor with ``channels`` channels to one with the same
number of channels. At stride 1 it keeps the spatial size; at stride 2 (edges leaving
the input of a reduction cell) it halves it, rounding up like ``"SAME"`` padding.

Convolutions use ``Conv2D`` and ``DepthwiseConv2D``: on the CPU backend slices and
matmuls rather than XLA's convolution op, which stay fast inside FUSE's ``lax.scan``;
on other backends XLA's own convolution (see ``convolution.py``).

Your own operation: :func:`register_operation` adds a named factory that every
part of the search honours (genotypes, search spaces, cells, FUSE, random search,
the zoo's saved architectures).

Normalisation: convolutions are ReLU-conv-norm with ``nn.GroupNorm(num_groups=1)``,
i.e. a layer norm over (H, W, C) of each example. It is stateless and independent
of the batch, so there are no ``batch_stats`` to thread through FUSE: both of its
steps stay pure functions of (params, alpha, batch), and train and eval behave alike.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldnas_jax.nas.convolution import Conv2D, DepthwiseConv2D, max_pool

__all__ = [
    "ALL_OPERATIONS",
    "PAPER_RELATED_OPERATIONS",
    "check_operation_names",
    "make_operation",
    "register_operation",
    "registered_operations",
    "unregister_operation",
]

# The eight DARTS operations plus ``zero`` (the "no edge" choice): the built-in set.
ALL_OPERATIONS: tuple[str, ...] = (
    "zero",
    "identity",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "conv_7x1_1x7",
    "max_pool_3x3",
    "avg_pool_3x3",
)

# Operations of the closest task's architecture in the paper's experiment (Sec. 4).
PAPER_RELATED_OPERATIONS: tuple[str, ...] = (
    "identity",
    "sep_conv_3x3",
    "conv_7x1_1x7",
    "max_pool_3x3",
)


def check_operation_names(names) -> tuple[str, ...]:
    """Validates a sequence of operation names and returns it as a tuple.

    Args:
      names: a sequence of operation names (not a single string).

    Returns:
      The names as a tuple of ``str``.

    Raises:
      TypeError: if ``names`` is a string or holds non-strings.
      ValueError: if a name is not a registered operation (see
        :func:`registered_operations`).

    Example:
      >>> check_operation_names(["identity", "max_pool_3x3"])
      ('identity', 'max_pool_3x3')
    """
    if isinstance(names, str):
        raise TypeError(f"operations must be a sequence of names, got the single string {names!r}")
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError(
            f"operations must be a sequence of names, got {type(names).__name__}"
        ) from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"operation names must be str, got {name!r}")
        if name not in _FACTORIES:
            raise ValueError(
                f"unknown operation {name!r}; known operations: {', '.join(_FACTORIES)} "
                "(add your own with ldnas_jax.nas.register_operation)"
            )
    return names


def _norm() -> nn.Module:
    return nn.GroupNorm(num_groups=1)


def _check_stride(stride: int) -> None:
    # `in (1, 2)` alone would accept True and 1.0, which then reach strided slicing.
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}")


class Zero(nn.Module):
    """Outputs zeros: the edge is absent."""

    stride: int = 1

    @nn.compact
    def __call__(self, x):
        # Strided slicing gives ceil(H / 2), the same size as "SAME" strided convs.
        # Multiplying rather than returning a constant keeps XLA from constant-folding
        # every pooling that follows a zero edge, which took seconds per op to compile.
        return x[:, :: self.stride, :: self.stride, :] * 0.0


class FactorizedReduce(nn.Module):
    """Halves the spatial size without losing every other pixel.

    Two strided 1x1 convolutions look at the input and at the input shifted by one
    pixel, each producing half of the channels.
    """

    channels: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(x)
        # Pad the shifted copy back to H x W so both halves have ceil(H / 2) rows.
        shifted = jnp.pad(x[:, 1:, 1:, :], ((0, 0), (0, 1), (0, 1), (0, 0)))
        first = self.channels // 2
        halves = [(x, self.channels - first), (shifted, first)]  # one channel: no shift
        outputs = [
            Conv2D(features, 1, strides=2)(inputs) for inputs, features in halves if features > 0
        ]
        return _norm()(jnp.concatenate(outputs, axis=-1))


class Identity(nn.Module):
    """Identity at stride 1; a ``FactorizedReduce`` at stride 2."""

    channels: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        if self.stride == 1:
            return x
        return FactorizedReduce(self.channels)(x)


class SeparableConv(nn.Module):
    """Two stacked ReLU-depthwise-pointwise-norm blocks (the DARTS ``sep_conv``)."""

    channels: int
    kernel_size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        for stride in (self.stride, 1):
            x = nn.relu(x)
            x = DepthwiseConv2D(self.kernel_size, stride)(x)
            x = Conv2D(self.channels)(x)
            x = _norm()(x)
        return x


class DilatedConv(nn.Module):
    """ReLU, depthwise conv with dilation 2, pointwise conv, norm."""

    channels: int
    kernel_size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        x = nn.relu(x)
        x = DepthwiseConv2D(self.kernel_size, self.stride, dilation=2)(x)
        x = Conv2D(self.channels)(x)
        return _norm()(x)


class AsymmetricConv(nn.Module):
    """ReLU, a 1xK then a Kx1 convolution, norm (``conv_7x1_1x7`` for K = 7)."""

    channels: int
    length: int = 7
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        x = nn.relu(x)
        x = Conv2D(self.channels, (1, self.length), strides=(1, self.stride))(x)
        x = Conv2D(self.channels, (self.length, 1), strides=(self.stride, 1))(x)
        return _norm()(x)


class Pool(nn.Module):
    """3x3 max or average pooling (average excludes the padding).

    Max pooling is :func:`ldnas_jax.nas.max_pool`: ``nn.max_pool``'s values and gradients,
    without the ``select_and_scatter`` that XLA:CPU runs slowly (``nn.max_pool`` itself
    off the CPU).
    """

    kind: str
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        strides = (self.stride, self.stride)
        if self.kind == "max":
            return max_pool(x, 3, strides)
        return nn.avg_pool(x, (3, 3), strides=strides, padding="SAME", count_include_pad=False)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "zero": lambda c, s, **kw: Zero(s, **kw),
    "identity": lambda c, s, **kw: Identity(c, s, **kw),
    "sep_conv_3x3": lambda c, s, **kw: SeparableConv(c, 3, s, **kw),
    "sep_conv_5x5": lambda c, s, **kw: SeparableConv(c, 5, s, **kw),
    "dil_conv_3x3": lambda c, s, **kw: DilatedConv(c, 3, s, **kw),
    "dil_conv_5x5": lambda c, s, **kw: DilatedConv(c, 5, s, **kw),
    "conv_7x1_1x7": lambda c, s, **kw: AsymmetricConv(c, 7, s, **kw),
    "max_pool_3x3": lambda c, s, **kw: Pool("max", s, **kw),
    "avg_pool_3x3": lambda c, s, **kw: Pool("avg", s, **kw),
}
assert tuple(_FACTORIES) == ALL_OPERATIONS
_generation = [0]  # bumped when a name changes meaning, so compiled searches are not reused


def registered_operations() -> tuple[str, ...]:
    """Every operation name a genotype may use: the built-in ones, then the registered ones.

    Example:
      >>> registered_operations()[:3]
      ('zero', 'identity', 'sep_conv_3x3')
    """
    return tuple(_FACTORIES)


def registry_generation() -> int:
    """A counter that changes whenever a registered name is replaced or removed."""
    return _generation[0]


def register_operation(
    name: str, factory: Callable[..., nn.Module], *, replace: bool = False
) -> None:
    """Adds an operation that genotypes, search spaces, FUSE, random search and the zoo accept.

    Args:
      name: the operation's name in genotypes and JSON; not a built-in name.
      factory: ``factory(channels, stride, **module_kwargs) -> linen module``. The
        module maps (B, H, W, channels) to (B, ceil(H / stride), ceil(W / stride),
        channels) for stride 1 and 2, and must pass ``module_kwargs`` (e.g.
        ``name=``) on to the module's constructor. It is checked on a small input
        (shapes only, nothing runs) before it is registered.
      replace: allow replacing an operation registered earlier under ``name``.

    Raises:
      TypeError: ``name`` not a string or ``factory`` not callable.
      ValueError: ``name`` empty, built in, or already registered without
        ``replace``; the factory's module breaks the shape contract.

    Example:
      >>> class Negate(nn.Module):
      ...     stride: int = 1
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         return -x[:, :: self.stride, :: self.stride, :]
      >>> register_operation("negate", lambda channels, stride, **kw: Negate(stride, **kw))
      >>> "negate" in registered_operations()
      True
      >>> unregister_operation("negate")
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"operation name must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if name in ALL_OPERATIONS:
        raise ValueError(f"{name!r} is a built-in operation and cannot be replaced")
    if name in _FACTORIES and not replace:
        raise ValueError(f"operation {name!r} is already registered; pass replace=True")
    _check_factory(name, factory)
    if name in _FACTORIES:
        _generation[0] += 1
    _FACTORIES[name] = factory


def unregister_operation(name: str) -> None:
    """Removes an operation added by :func:`register_operation` (built-in ones stay).

    Example:
      >>> unregister_operation("sep_conv_3x3")
      Traceback (most recent call last):
      ...
      ValueError: 'sep_conv_3x3' is a built-in operation and cannot be removed
    """
    if name in ALL_OPERATIONS:
        raise ValueError(f"{name!r} is a built-in operation and cannot be removed")
    if name not in _FACTORIES:
        raise ValueError(f"no registered operation {name!r}")
    del _FACTORIES[name]
    _generation[0] += 1


def _check_factory(name: str, factory) -> None:
    """The module of each stride keeps the channels and maps H to ceil(H / stride)."""
    channels, size = 4, 7
    x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
    for stride in (1, 2):
        try:
            module = factory(channels, stride)
            out = jax.eval_shape(lambda x, m=module: m.init_with_output(jax.random.key(0), x)[0], x)
        except Exception as error:
            raise ValueError(
                f"operation {name!r}: factory(channels={channels}, stride={stride}) failed on a "
                f"{x.shape} input: {type(error).__name__}: {error}"
            ) from error
        expected = (2, -(-size // stride), -(-size // stride), channels)
        if getattr(out, "shape", None) != expected:
            raise ValueError(
                f"operation {name!r} at stride {stride} must map {x.shape} to {expected}, "
                f"got {getattr(out, 'shape', type(out).__name__)}"
            )


def make_operation(operation: str, channels: int, stride: int = 1, **module_kwargs) -> nn.Module:
    """Builds the linen module of one named operation.

    Args:
      operation: a registered name (``ALL_OPERATIONS`` or :func:`register_operation`).
      channels: number of input and output channels.
      stride: 1 keeps the spatial size, 2 halves it.
      **module_kwargs: forwarded to the module (e.g. ``name=`` inside a parent).

    Returns:
      A linen module mapping (B, H, W, channels) to (B, H', W', channels).

    Raises:
      ValueError: unknown operation, non-positive channels or a stride other than 1 or 2.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> op = make_operation("sep_conv_3x3", channels=4, stride=2)
      >>> x = jnp.ones((1, 8, 8, 4))
      >>> op.apply(op.init(jax.random.key(0), x), x).shape
      (1, 4, 4, 4)
    """
    (operation,) = check_operation_names((operation,))
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    _check_stride(stride)
    return _FACTORIES[operation](channels, stride, **module_kwargs)
