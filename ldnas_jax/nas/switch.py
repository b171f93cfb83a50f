"""Genotype as data: networks whose edges select their operation by index.

A :class:`SwitchSkeleton` is built for a search space, not for a genotype. Each
edge holds the weights of every operation of the space and runs only the one a
genotype picks, through ``lax.switch``. The genotype is an integer array
(:func:`genotype_choices`), an argument of the network rather than part of its
structure, so one compiled program serves every genotype of the space. A cell
runs its edges in two ``lax.scan`` loops, the edges from its input node then the
inner ones, so each operation is traced and compiled twice per cell, not once
per edge.

Parameters are laid out as a :class:`~ldnas_jax.nas.Skeleton`'s, except that
each edge ``edge_i_j`` holds one entry ``branches_k`` per operation k of the
space. :func:`genotype_params` selects a genotype's weights, which are exactly
the parameters of its ``Skeleton`` (same tree, same shapes, same function);
:func:`switch_init` draws every branch from its module's own initialisers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldnas_jax.nas.cell import (
    Skeleton,
    cell_body,
    cell_input,
    check_reduction_positions,
    skeleton_body,
)
from ldnas_jax.nas.genotype import Genotype, cell_edges, num_cell_edges
from ldnas_jax.nas.operations import check_operation_names, make_operation, registry_generation

__all__ = [
    "SwitchCell",
    "SwitchEdge",
    "SwitchSkeleton",
    "genotype_choices",
    "genotype_params",
    "switch_init",
    "switch_network",
]


def _switch_vjp(branches, index, params, x):
    """``lax.switch(index, branches, params, x)``, differentiated by recomputing the branch.

    JAX's own derivative of ``switch`` makes every branch return the residuals
    of all branches, zero-filled, and XLA:CPU then runs the backward pass about
    3x slower than the chosen operation alone. Here the forward pass keeps only
    its inputs, and the backward pass reruns the chosen branch under ``jax.vjp``.
    """

    @jax.custom_vjp
    def run(params, x, index):
        return jax.lax.switch(index, branches, params, x)

    def forward(params, x, index):
        return run(params, x, index), (params, x, index)

    def backward(saved, cotangent):
        params, x, index = saved

        def pullback(branch):
            return lambda p, x, g: jax.vjp(branch, p, x)[1](g)

        d_params, d_x = jax.lax.switch(index, [pullback(b) for b in branches], params, x, cotangent)
        return d_params, d_x, None

    run.defvjp(forward, backward)
    return run(params, x, index)


def _apply_branch(module: nn.Module, key: str):
    def branch(params, x):
        own = params.get(key)
        return module.apply({"params": own} if own else {}, x)

    return branch


class SwitchEdge(nn.Module):
    """One edge holding every operation of a space; ``index`` picks the one that runs.

    Only the chosen operation runs, forward and backward (``lax.switch``).

    Example:
      >>> edge = SwitchEdge(("identity", "max_pool_3x3"), channels=2)
      >>> x = jnp.arange(9.0).reshape(1, 3, 3, 1).repeat(2, axis=-1)
      >>> v = edge.init(jax.random.key(0), x, 0)
      >>> float(edge.apply(v, x, jnp.int32(1))[0, 0, 0, 0])  # max of the corner window
      4.0
    """

    operations: tuple[str, ...]
    channels: int
    stride: int = 1

    def setup(self):
        self.branches = [make_operation(op, self.channels, self.stride) for op in self.operations]

    def __call__(self, x, index):
        if self.is_initializing():  # every branch creates its parameters
            outputs = [branch(x) for branch in self.branches]
            return outputs[0]
        # A pure function of this edge's weights: the branches run unbound.
        params = dict(self.variables.get("params", {}))
        modules = [  # unbound (parent=None): applied to explicit weights
            make_operation(op, self.channels, self.stride, parent=None) for op in self.operations
        ]
        branches = [_apply_branch(m, f"branches_{k}") for k, m in enumerate(modules)]
        return _switch_vjp(branches, jnp.asarray(index, jnp.int32), params, x)


class SwitchCell(nn.Module):
    """A :class:`~ldnas_jax.nas.Cell` whose operations are an integer array.

    Attributes:
      operations: the search space's operations; ``choice[e]`` indexes them.
      channels: channels of every node.
      num_nodes: nodes of the cell, the input included.
      stride: 2 for a reduction cell.

    Example:
      >>> cell = SwitchCell(("identity", "sep_conv_3x3"), channels=4, num_nodes=3)
      >>> x = jnp.ones((1, 8, 8, 3))
      >>> choice = jnp.array([1, 0, 1])
      >>> cell.apply(cell.init(jax.random.key(0), x, choice), x, choice).shape
      (1, 8, 8, 4)
    """

    operations: tuple[str, ...]
    channels: int
    num_nodes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, choice):
        ops = check_operation_names(self.operations)
        if self.is_initializing():  # every edge creates the weights of every branch

            def edge(index, i, j, node):
                stride = self.stride if i == 0 else 1
                edge = SwitchEdge(ops, self.channels, stride, name=f"edge_{i}_{j}")
                return edge(node, choice[index])

            return cell_body(x, self.channels, self.num_nodes, edge)
        node = cell_input(x, self.channels)
        params = self.variables.get("params", {})
        return _scan_cell_edges(
            ops, self.channels, self.stride, self.num_nodes, params, node, choice
        )


def _scan_cell_edges(operations, channels, stride, num_nodes, params, node, choice) -> jax.Array:
    """A switch cell's DAG from its node 0, in two ``lax.scan`` loops over its edges.

    Edges of one shape and stride share a loop body, so the program holds each
    operation twice per cell (edges from node 0, then the inner edges) rather than
    once per edge: a third of the code to trace and compile for 4-node cells.
    The edges from node 0 all read it; the inner edges run in order of their
    source, each adding into its target, so every node is complete before an edge
    reads it, and every node sums its inputs in the order of :func:`cell_body`.
    ``params`` hold ``edge_i_j/branches_k`` as :class:`SwitchEdge` creates them.
    """
    edges = cell_edges(num_nodes)
    position = {ij: index for index, ij in enumerate(edges)}
    first = [(0, j) for j in range(1, num_nodes)]
    inner = sorted(ij for ij in edges if ij[0] > 0)

    def group(members):
        weights = [params.get(f"edge_{i}_{j}", {}) for i, j in members]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *weights)
        indices = jnp.asarray(choice, jnp.int32)[np.array([position[ij] for ij in members])]
        return stacked, indices

    def branches(edge_stride):
        modules = [make_operation(op, channels, edge_stride, parent=None) for op in operations]
        return [_apply_branch(m, f"branches_{k}") for k, m in enumerate(modules)]

    from_input = branches(stride)

    def input_edge(_, slot):
        weights, index = slot
        return None, _switch_vjp(from_input, index, weights, node)

    _, nodes = jax.lax.scan(input_edge, None, group(first))  # nodes 1.. hold their node-0 edge
    if inner:
        within = branches(1)
        sources, targets = (np.array([ij[k] - 1 for ij in inner]) for k in (0, 1))

        def inner_edge(nodes, slot):
            weights, index, source, target = slot
            output = _switch_vjp(within, index, weights, nodes[source])
            return nodes.at[target].add(output), None

        nodes, _ = jax.lax.scan(inner_edge, nodes, (*group(inner), sources, targets))
    return nodes[-1]


class SwitchSkeleton(nn.Module):
    """A :class:`~ldnas_jax.nas.Skeleton` for every genotype of a space at once.

    ``__call__(x, choices)`` takes ``choices`` of shape (2, num_edges), the
    normal cell's operation indices then the reduction cell's
    (:func:`genotype_choices`), and equals ``Skeleton(genotype)`` on the weights
    :func:`genotype_params` selects.

    Attributes:
      operations: the search space's operations.
      num_classes: size of the logits.
      num_nodes: nodes per cell.
      channels, num_cells, reduction_positions: as in ``Skeleton``.

    Example:
      >>> net = SwitchSkeleton(("identity", "max_pool_3x3"), 3, num_nodes=2, channels=4,
      ...                      num_cells=1)
      >>> x = jnp.ones((2, 8, 8, 3)); choices = jnp.array([[1], [0]])
      >>> net.apply(net.init(jax.random.key(0), x, choices), x, choices).shape
      (2, 3)
    """

    operations: tuple[str, ...]
    num_classes: int
    num_nodes: int = 4
    channels: int = 16
    num_cells: int = 3
    reduction_positions: Sequence[int] | None = None

    @nn.compact
    def __call__(self, x, choices, train: bool = False):
        del train  # as in Skeleton: nothing depends on it

        def cell(index, channels, stride):
            row = choices[1 if stride == 2 else 0]
            module = SwitchCell(
                self.operations, channels, self.num_nodes, stride, name=f"cell_{index}"
            )
            return lambda h: module(h, row)

        return skeleton_body(
            x, self.num_classes, self.channels, self.num_cells, self.reduction_positions, cell
        )


def switch_network(
    operations: Sequence[str],
    num_classes: int,
    *,
    num_nodes: int = 4,
    channels: int = 16,
    num_cells: int = 3,
    reduction_positions: Sequence[int] | None = None,
) -> SwitchSkeleton:
    """A hashable :class:`SwitchSkeleton`: names checked, positions as a tuple.

    Equal arguments give equal networks, so compiled programs cached per network
    are shared by every search of the space.

    Example:
      >>> switch_network(["identity"], 2, num_nodes=2, num_cells=3).reduction_positions
      (1, 2)
    """
    return SwitchSkeleton(
        check_operation_names(operations),
        num_classes,
        num_nodes,
        channels,
        num_cells,
        check_reduction_positions(reduction_positions, num_cells),
    )


def genotype_choices(genotype: Genotype, operations: Sequence[str]) -> np.ndarray:
    """The (2, num_edges) int32 array of a genotype: indices into ``operations``.

    Example:
      >>> g = Genotype(("identity", "zero", "identity"), num_nodes=3)
      >>> genotype_choices(g, ("zero", "identity")).tolist()
      [[1, 0, 1], [1, 0, 1]]
    """
    if not isinstance(genotype, Genotype):
        raise TypeError(f"expected a Genotype, got {type(genotype).__name__}")
    index = {op: k for k, op in enumerate(operations)}
    missing = sorted(set(genotype.operations) - set(index))
    if missing:
        raise ValueError(f"genotype uses {missing}, not among the operations {tuple(operations)}")
    return np.array(
        [[index[op] for op in genotype.normal], [index[op] for op in genotype.reduce]], np.int32
    )


def _cell_kinds(network: SwitchSkeleton) -> dict[str, str]:
    """``cell_<i>`` -> ``"normal"`` or ``"reduce"``."""
    reductions = check_reduction_positions(network.reduction_positions, network.num_cells)
    return {
        f"cell_{i}": "reduce" if i in reductions else "normal" for i in range(network.num_cells)
    }


def genotype_params(network: SwitchSkeleton, params, genotype: Genotype) -> dict:
    """The weights of ``genotype`` in switch ``params``: the parameters of its ``Skeleton``.

    Example:
      >>> g = Genotype(("identity", "sep_conv_3x3", "max_pool_3x3"), num_nodes=3)
      >>> net = switch_network(g.operations, 2, num_nodes=3, channels=4, num_cells=1)
      >>> x = jnp.ones((1, 8, 8, 3))
      >>> chosen = genotype_params(net, switch_init(net, jax.random.key(0), x), g)
      >>> static = Skeleton(g, 2, 4, 1).init(jax.random.key(0), x)["params"]
      >>> jax.tree.structure(chosen) == jax.tree.structure(static)
      True
    """
    choices = genotype_choices(genotype, network.operations)
    kinds = _cell_kinds(network)
    edges = [f"edge_{i}_{j}" for i, j in cell_edges(network.num_nodes)]
    selected = {}
    for name, value in params.items():
        if name not in kinds:
            selected[name] = value
            continue
        row = choices[1 if kinds[name] == "reduce" else 0]
        cell = {k: v for k, v in value.items() if k not in edges}
        for edge, k in zip(edges, row):
            branch = value.get(edge, {}).get(f"branches_{k}")
            if branch is not None:  # operations without weights have no entry
                cell[edge] = branch
        selected[name] = cell
    return selected


def _edge_instances(
    network: SwitchSkeleton, example_shape
) -> dict[tuple, list[tuple[str, str, int]]]:
    """Every edge branch, grouped by what fixes its weights' initialisation.

    Maps ``(operation, channels, stride, input shape)`` to the ``(cell, edge, k)``
    places of that branch, walking the skeleton as :func:`skeleton_body` does.
    """
    reductions = check_reduction_positions(network.reduction_positions, network.num_cells)
    height, width = example_shape[1:3]
    channels = network.channels
    groups: dict[tuple, list[tuple[str, str, int]]] = {}
    for index in range(network.num_cells):
        stride = 2 if index in reductions else 1
        channels *= stride
        out_hw = (-(-height // stride), -(-width // stride))
        for i, j in cell_edges(network.num_nodes):
            hw, edge_stride = ((height, width), stride) if i == 0 else (out_hw, 1)
            for k, op in enumerate(network.operations):
                group = (op, channels, edge_stride, (1, *hw, channels))
                groups.setdefault(group, []).append((f"cell_{index}", f"edge_{i}_{j}", k))
        height, width = out_hw
    return groups


def _init_one(network: SwitchSkeleton, example_shape, key):
    """Switch weights of one network: every branch drawn from its own initialisers.

    Weights that are not an edge's come from the ``Skeleton`` of an all-``zero``
    genotype (which has none on its edges). Branches are drawn per kind of
    module, vmapped over the places that kind fills, so the program compiles
    one initialiser per kind rather than one per edge and operation.
    """
    outer_key, edges_key = jax.random.split(_initialiser_key(key))
    edges = num_cell_edges(network.num_nodes)
    empty = Skeleton(
        Genotype(("zero",) * edges, None, network.num_nodes),
        network.num_classes,
        network.channels,
        network.num_cells,
        network.reduction_positions,
    )
    params = _lazy_params(empty, outer_key, example_shape)
    params = {name: dict(value) for name, value in params.items()}
    for g, ((op, channels, stride, shape), places) in enumerate(
        sorted(_edge_instances(network, example_shape).items())
    ):
        module = make_operation(op, channels, stride, parent=None)
        if not _has_params(module, shape):
            continue  # an operation without weights
        keys = jax.random.split(jax.random.fold_in(edges_key, g), len(places))
        drawn = jax.vmap(lambda k, m=module, s=shape: _lazy_params(m, k, s))(keys)
        for n, (cell, edge, k) in enumerate(places):
            branch = jax.tree.map(lambda a, n=n: a[n], drawn)
            params[cell].setdefault(edge, {})[f"branches_{k}"] = branch
    return params


def _initialiser_key(key: jax.Array) -> jax.Array:
    """An ``unsafe_rbg`` key drawn from ``key``, for the initialisers only.

    Flax derives one key per weight with ``fold_in``; with threefry each of those
    hashes is unrolled into the program and XLA:CPU took minutes to compile the
    initialisation of a search space. ``unsafe_rbg`` keys fold cheaply and draw
    with one ``RngBitGenerator``: the same distributions, compiled in seconds.
    Deterministic for a given ``key`` on a given backend.
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)  # a legacy raw uint32 key
    seed = jax.random.bits(key, (4,), jnp.uint32)
    return jax.random.wrap_key_data(seed, impl="unsafe_rbg")


def _has_params(module, shape) -> bool:
    out = jax.eval_shape(
        lambda: module.lazy_init(jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
    )
    return bool(jax.tree.leaves(out.get("params", {})))


def _lazy_params(module, key, example_shape) -> dict:
    shape = jax.ShapeDtypeStruct((1, *example_shape[1:]), jnp.float32)
    return module.lazy_init(key, shape).get("params", {})


@functools.lru_cache(maxsize=64)
def _jitted_init(
    network: SwitchSkeleton, slots: int | None, example_shape: tuple[int, ...], generation: int
):
    del generation  # keys out operations replaced since (see register_operation)
    init = functools.partial(_init_one, network, example_shape)
    if slots is None:
        return jax.jit(init)
    return jax.jit(lambda key: jax.vmap(init)(jax.random.split(key, slots)))


def switch_init(network: SwitchSkeleton, key: jax.Array, example_x, *, slots: int | None = None):
    """Switch parameters: every operation of every edge drawn from its own initialisers.

    Each weight follows the initialiser its module declares, as in
    ``Skeleton.init``, so :func:`genotype_params` of the result is distributed as
    a fresh ``Skeleton`` of that genotype (the random streams differ). With
    ``slots``, the result holds that many independent networks stacked on a
    leading axis, the candidates of a FUSE mixture. One program per network,
    slot count and input shape is compiled and reused.

    Args:
      network: the switch network.
      key: PRNG key, as for ``Skeleton.init``.
      example_x: NHWC images fixing the input shape (values unused).
      slots: None for one network, else the number of mixture candidates.

    Example:
      >>> net = switch_network(("identity", "sep_conv_3x3"), 2, num_nodes=2, channels=4,
      ...                      num_cells=1)
      >>> p = switch_init(net, jax.random.key(0), jnp.ones((1, 8, 8, 3)), slots=3)
      >>> p["cell_0"]["edge_0_1"]["branches_1"]["Conv2D_0"]["kernel"].shape
      (3, 1, 1, 8, 8)
    """
    if np.ndim(example_x) != 4:
        raise ValueError(
            f"example_x must be NHWC images (B, H, W, C), got shape {np.shape(example_x)}"
        )
    example_shape = (1, *(int(d) for d in np.shape(example_x)[1:]))
    network = switch_network(  # hashable, as the cache of compiled initialisers needs
        network.operations,
        network.num_classes,
        num_nodes=network.num_nodes,
        channels=network.channels,
        num_cells=network.num_cells,
        reduction_positions=network.reduction_positions,
    )
    return _jitted_init(network, slots, example_shape, registry_generation())(key)
