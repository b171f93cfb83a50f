"""Genotype: the operations on the edges of a normal and a reduction cell.

A cell with ``num_nodes`` nodes is a densely connected DAG with an edge i -> j for
every i < j. Edges are listed grouped by their target node, in increasing order:

    (0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3), ...

so that, read in order, all inputs of node j come before any edge into node j + 1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers

from ldnas_jax.nas.operations import check_operation_names

__all__ = ["Genotype", "cell_edges", "num_cell_edges", "num_nodes_for_edges"]


def check_num_nodes(num_nodes) -> int:
    """Returns ``num_nodes`` as an int, or raises if it is not an int >= 2."""
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, numbers.Integral):
        raise TypeError(f"num_nodes must be an int, got {num_nodes!r}")
    if num_nodes < 2:
        raise ValueError(f"num_nodes must be >= 2 (an input and an output node), got {num_nodes}")
    return int(num_nodes)


def num_cell_edges(num_nodes: int) -> int:
    """Number of edges of a densely connected DAG of ``num_nodes`` nodes.

    Example:
      >>> num_cell_edges(4)
      6
    """
    num_nodes = check_num_nodes(num_nodes)
    return num_nodes * (num_nodes - 1) // 2


def num_nodes_for_edges(num_edges: int) -> int:
    """Inverse of ``num_cell_edges``: nodes of a dense DAG with ``num_edges`` edges.

    Raises:
      ValueError: if ``num_edges`` is not n (n - 1) / 2 for some n >= 2.

    Example:
      >>> num_nodes_for_edges(6)
      4
    """
    if isinstance(num_edges, bool) or not isinstance(num_edges, numbers.Integral):
        raise TypeError(f"num_edges must be an int, got {num_edges!r}")
    num_nodes = (1 + math.isqrt(1 + 8 * max(int(num_edges), 0))) // 2
    if num_nodes < 2 or num_nodes * (num_nodes - 1) // 2 != num_edges:
        raise ValueError(
            f"{num_edges} edges do not form a densely connected cell; "
            "expected 1, 3, 6, 10, ... (n (n - 1) / 2 for n nodes)"
        )
    return num_nodes


def cell_edges(num_nodes: int) -> tuple[tuple[int, int], ...]:
    """The (source, target) edges of a cell, in the order genotypes list them.

    Example:
      >>> cell_edges(3)
      ((0, 1), (0, 2), (1, 2))
    """
    num_nodes = check_num_nodes(num_nodes)
    return tuple((i, j) for j in range(1, num_nodes) for i in range(j))


def _check_cell_ops(ops, num_nodes: int, cell: str) -> tuple[str, ...]:
    try:
        ops = check_operation_names(ops)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{cell} cell: {error}") from None
    expected = num_cell_edges(num_nodes)
    if len(ops) != expected:
        raise ValueError(
            f"{cell} cell has {len(ops)} operations, but a cell of {num_nodes} nodes "
            f"has {expected} edges"
        )
    return ops


@dataclasses.dataclass(frozen=True)
class Genotype:
    """An architecture: one operation per edge of the normal and reduction cells.

    Attributes:
      normal: operation names of the normal cell, one per edge in ``cell_edges`` order.
      reduce: operation names of the reduction cell; defaults to ``normal``.
      num_nodes: nodes per cell, the input node included (4 nodes => 6 edges).

    Example:
      >>> g = Genotype(("identity", "sep_conv_3x3", "max_pool_3x3",
      ...               "identity", "conv_7x1_1x7", "identity"))
      >>> g == Genotype.from_json(g.to_json())
      True
    """

    normal: tuple[str, ...]
    reduce: tuple[str, ...] | None = None
    num_nodes: int = 4

    def __post_init__(self):
        num_nodes = check_num_nodes(self.num_nodes)
        normal = _check_cell_ops(self.normal, num_nodes, "normal")
        reduce = (
            normal if self.reduce is None else _check_cell_ops(self.reduce, num_nodes, "reduce")
        )
        # Frozen: store canonical tuples so equal genotypes hash equally.
        object.__setattr__(self, "num_nodes", num_nodes)
        object.__setattr__(self, "normal", normal)
        object.__setattr__(self, "reduce", reduce)

    def edges(self, cell: str = "normal") -> tuple[tuple[int, int, str], ...]:
        """The (source, target, operation) triples of one cell.

        Args:
          cell: ``"normal"`` or ``"reduce"``.

        Example:
          >>> Genotype(("identity",), num_nodes=2).edges()
          ((0, 1, 'identity'),)
        """
        if cell not in ("normal", "reduce"):
            raise ValueError(f"cell must be 'normal' or 'reduce', got {cell!r}")
        ops = self.normal if cell == "normal" else self.reduce
        return tuple((i, j, op) for (i, j), op in zip(cell_edges(self.num_nodes), ops))

    @property
    def operations(self) -> tuple[str, ...]:
        """The distinct operations used by either cell, in first-use order."""
        return tuple(dict.fromkeys(self.normal + self.reduce))

    def to_json(self) -> str:
        """Serialises to a compact JSON object with keys num_nodes, normal, reduce.

        Example:
          >>> Genotype(("zero",), num_nodes=2).to_json()
          '{"num_nodes": 2, "normal": ["zero"], "reduce": ["zero"]}'
        """
        return json.dumps(
            {"num_nodes": self.num_nodes, "normal": list(self.normal), "reduce": list(self.reduce)}
        )

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        """Parses the output of ``to_json``.

        Raises:
          ValueError: invalid JSON, missing or unexpected keys, wrong edge counts or
            unknown operations.
          TypeError: ``text`` is not a string or bytes.

        Example:
          >>> text = '{"num_nodes": 2, "normal": ["zero"], "reduce": ["identity"]}'
          >>> Genotype.from_json(text).reduce
          ('identity',)
        """
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError(f"genotype JSON must be a string, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"genotype JSON is not valid JSON: {error}") from None
        except RecursionError:  # absurdly deep nesting: not a genotype either way
            raise ValueError("genotype JSON is nested too deeply to be a genotype") from None
        if not isinstance(data, dict):
            raise ValueError(f"genotype JSON must be an object, got {type(data).__name__}")  # noqa: TRY004 - bad JSON content is a ValueError (documented)
        expected = {"num_nodes", "normal", "reduce"}
        if set(data) != expected:
            missing, extra = sorted(expected - set(data)), sorted(set(data) - expected)
            raise ValueError(f"genotype JSON keys: missing {missing}, unexpected {extra}")
        for cell in ("normal", "reduce"):
            if not isinstance(data[cell], list):
                raise ValueError(f"genotype JSON {cell!r} must be a list of operation names")  # noqa: TRY004
        try:
            return cls(tuple(data["normal"]), tuple(data["reduce"]), data["num_nodes"])
        except TypeError as error:  # e.g. num_nodes "4" or a number among the ops
            raise ValueError(f"invalid genotype JSON: {error}") from None

    def __str__(self) -> str:
        def describe(cell):
            return ", ".join(f"{i}->{j}: {op}" for i, j, op in self.edges(cell))

        return f"normal: {describe('normal')}\nreduce: {describe('reduce')}"
