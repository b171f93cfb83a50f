"""Cell and Skeleton: the networks a genotype describes.

A ``Cell`` is a densely connected DAG. Node 0 is the cell input after a
ReLU-1x1 conv-norm that brings it to ``channels``; node j is the sum over i < j of
``op_ij(node_i)``; the cell outputs its last node. Because every node feeds every
later node, the last node already aggregates all paths, so no concatenation is
needed (and a cell whose edges into the last node are all ``zero`` outputs zeros,
which is what that genotype means).

A ``Skeleton`` stacks a stem, ``num_cells`` cells and a classifier head.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldnas_jax.nas.convolution import Conv2D
from ldnas_jax.nas.genotype import Genotype, cell_edges, num_nodes_for_edges
from ldnas_jax.nas.operations import check_operation_names, make_operation

__all__ = [
    "Cell",
    "Skeleton",
    "cell_body",
    "check_reduction_positions",
    "count_params",
    "default_reduction_positions",
    "skeleton_body",
]


def _check_images(x) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected NHWC images (B, H, W, C), got shape {x.shape}")


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class Cell(nn.Module):
    """A densely connected cell.

    Attributes:
      ops: one operation name per edge, in ``cell_edges`` order (6 ops => 4 nodes).
      channels: channels of every node.
      stride: 2 for a reduction cell: edges leaving node 0 halve the spatial size.

    Example:
      >>> cell = Cell(("identity", "sep_conv_3x3", "max_pool_3x3"), channels=4, stride=2)
      >>> x = jnp.ones((1, 8, 8, 3))
      >>> cell.apply(cell.init(jax.random.key(0), x), x).shape
      (1, 4, 4, 4)
    """

    ops: tuple[str, ...]
    channels: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        ops = check_operation_names(self.ops)
        num_nodes = num_nodes_for_edges(len(ops))

        def edge(index, i, j, node):
            # Only edges leaving the cell input downsample: later nodes are already
            # at the output resolution.
            stride = self.stride if i == 0 else 1
            return make_operation(ops[index], self.channels, stride, name=f"edge_{i}_{j}")(node)

        return cell_body(x, self.channels, num_nodes, edge)


def cell_input(x, channels: int) -> jax.Array:
    """Node 0 of a cell, inside a linen ``compact`` method: ReLU, 1x1 ``preprocess`` conv, norm."""
    _check_images(x)
    _check_positive_int(channels, "channels")
    node = Conv2D(channels, name="preprocess")(nn.relu(x))
    return nn.GroupNorm(num_groups=1, name="preprocess_norm")(node)


def cell_body(x, channels: int, num_nodes: int, edge) -> jax.Array:
    """The DAG of a cell, inside a linen ``compact`` method; ``edge(index, i, j, node_i)``.

    Node 0 is ``x`` after ReLU, a 1x1 ``preprocess`` conv and its norm; node j sums
    ``edge(index, i, j, node_i)`` over i < j, edges indexed in ``cell_edges`` order.
    """
    nodes = [cell_input(x, channels)]
    index_of = {ij: index for index, ij in enumerate(cell_edges(num_nodes))}
    for j in range(1, num_nodes):
        inputs = [edge(index_of[i, j], i, j, nodes[i]) for i in range(j)]
        nodes.append(sum(inputs[1:], inputs[0]))
    return nodes[-1]


def default_reduction_positions(num_cells: int) -> tuple[int, ...]:
    """Reduction cells at 1/3 and 2/3 of the depth, as in DARTS.

    Example:
      >>> default_reduction_positions(3), default_reduction_positions(6)
      ((1, 2), (2, 4))
    """
    return tuple(sorted({num_cells // 3, 2 * num_cells // 3}))


class Skeleton(nn.Module):
    """Stem, stacked cells, global average pool and a dense head.

    Reduction cells use ``genotype.reduce`` with stride 2 and double the channels;
    the others use ``genotype.normal``. There is no dropout and no BatchNorm, so
    ``train`` changes nothing; it exists for the shared training-loop signature.

    Attributes:
      genotype: the architecture.
      num_classes: size of the logits.
      channels: channels after the stem (doubled at each reduction cell).
      num_cells: number of stacked cells.
      reduction_positions: indices of the reduction cells; default
        ``default_reduction_positions(num_cells)``. Use ``()`` for none.

    Example:
      >>> g = Genotype(("identity", "sep_conv_3x3", "max_pool_3x3"), num_nodes=3)
      >>> net = Skeleton(g, num_classes=10, channels=4, num_cells=1)
      >>> x = jnp.ones((2, 8, 8, 3))
      >>> net.apply(net.init(jax.random.key(0), x), x, train=True).shape
      (2, 10)
    """

    genotype: Genotype
    num_classes: int
    channels: int = 16
    num_cells: int = 3
    reduction_positions: Sequence[int] | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # No train-dependent layers (see class docstring).
        if not isinstance(self.genotype, Genotype):
            raise TypeError(f"genotype must be a Genotype, got {type(self.genotype).__name__}")

        def cell(index, channels, stride):
            ops = self.genotype.reduce if stride == 2 else self.genotype.normal
            return Cell(ops, channels, stride=stride, name=f"cell_{index}")

        return skeleton_body(
            x, self.num_classes, self.channels, self.num_cells, self.reduction_positions, cell
        )


def check_reduction_positions(reduction_positions, num_cells: int) -> tuple[int, ...]:
    """The reduction cells' indices as a tuple (default: :func:`default_reduction_positions`)."""
    reductions = (
        default_reduction_positions(num_cells)
        if reduction_positions is None
        else tuple(reduction_positions)
    )
    if any(isinstance(p, bool) or not isinstance(p, numbers.Integral) for p in reductions):
        raise TypeError(f"reduction_positions must be ints, got {reductions!r}")
    if any(not 0 <= p < num_cells for p in reductions):
        raise ValueError(f"reduction_positions {reductions} must lie in [0, {num_cells})")
    return tuple(int(p) for p in reductions)


def skeleton_body(x, num_classes, channels, num_cells, reduction_positions, cell) -> jax.Array:
    """Stem, cells, pooling and head inside a linen ``compact`` method.

    ``cell(index, channels, stride)`` returns the module of cell ``index``; a
    reduction cell has stride 2 and doubles the channels.
    """
    _check_images(x)
    for name, value in (
        ("num_classes", num_classes),
        ("channels", channels),
        ("num_cells", num_cells),
    ):
        _check_positive_int(value, name)
    reductions = check_reduction_positions(reduction_positions, num_cells)
    h = Conv2D(channels, 3, name="stem")(x)
    h = nn.GroupNorm(num_groups=1, name="stem_norm")(h)
    for index in range(num_cells):
        if index in reductions:
            channels *= 2
            h = cell(index, channels, 2)(h)
        else:
            h = cell(index, channels, 1)(h)
    h = jnp.mean(nn.relu(h), axis=(1, 2))
    return nn.Dense(num_classes, name="head")(h)


def count_params(params) -> int:
    """Total number of scalars in a parameter pytree.

    Example:
      >>> count_params({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)})
      9
    """
    leaves = jax.tree_util.tree_leaves(params)
    for leaf in leaves:
        if not hasattr(leaf, "size") or not hasattr(leaf, "dtype"):
            raise TypeError(f"params must hold arrays, got a {type(leaf).__name__} leaf")
    return int(sum(leaf.size for leaf in leaves))
