"""Search space: the operations allowed on each edge and the cell structure."""

from __future__ import annotations

import dataclasses
import numbers

import jax
import numpy as np

from ldnas_jax._checks import check_key
from ldnas_jax.nas.genotype import Genotype, check_num_nodes, num_cell_edges
from ldnas_jax.nas.operations import ALL_OPERATIONS, check_operation_names, registered_operations

__all__ = ["SEARCHABLE_OPERATIONS", "SearchSpace", "search_space_from_genotype"]

# The operations a searched architecture may hold: every built-in one but ``zero``. A
# ``zero`` edge cuts its path, so a genotype of zeros can output a constant; DARTS drops
# ``none`` when it derives a genotype, and the paper's space has no zero either.
SEARCHABLE_OPERATIONS: tuple[str, ...] = tuple(op for op in ALL_OPERATIONS if op != "zero")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """All genotypes whose edges carry operations from ``operations``.

    Attributes:
      operations: the distinct operation names allowed on any edge.
      num_nodes: nodes per cell (4 => 6 edges), shared by every genotype.
      shared_cells: one cell for normal and reduction positions (the paper's
        "4 nodes and 6 operations"), so a genotype is ``num_edges`` choices;
        False searches the two cells independently.

    Example:
      >>> space = SearchSpace(("identity", "max_pool_3x3"), num_nodes=3)
      >>> space.num_edges, space.size
      (3, 64)
      >>> SearchSpace(("identity", "max_pool_3x3"), num_nodes=3, shared_cells=True).size
      8
    """

    operations: tuple[str, ...]
    num_nodes: int = 4
    shared_cells: bool = False

    def __post_init__(self):
        operations = check_operation_names(self.operations)
        if not operations:
            raise ValueError("search space is empty: give at least one operation")
        duplicates = sorted({op for op in operations if operations.count(op) > 1})
        if duplicates:
            raise ValueError(f"search space lists operations more than once: {duplicates}")
        object.__setattr__(self, "operations", operations)
        object.__setattr__(self, "num_nodes", check_num_nodes(self.num_nodes))
        if not isinstance(self.shared_cells, bool):
            raise TypeError(f"shared_cells must be a bool, got {self.shared_cells!r}")

    @property
    def num_edges(self) -> int:
        """Edges per cell."""
        return num_cell_edges(self.num_nodes)

    @property
    def size(self) -> int:
        """Number of distinct genotypes: |ops| ** edges per searched cell."""
        cells = 1 if self.shared_cells else 2
        return len(self.operations) ** (cells * self.num_edges)

    def __contains__(self, genotype) -> bool:
        return (
            isinstance(genotype, Genotype)
            and genotype.num_nodes == self.num_nodes
            and set(genotype.operations) <= set(self.operations)
            and (not self.shared_cells or genotype.reduce == genotype.normal)
        )

    def sample(self, key: jax.Array, num: int) -> tuple[Genotype, ...]:
        """Draws ``num`` genotypes uniformly (with replacement) from the space.

        Args:
          key: a JAX PRNG key; the same key gives the same genotypes.
          num: how many genotypes to draw, >= 1.

        Returns:
          A tuple of ``num`` genotypes.

        Example:
          >>> space = SearchSpace(("identity", "sep_conv_3x3"))
          >>> a = space.sample(jax.random.key(0), 3)
          >>> a == space.sample(jax.random.key(0), 3)
          True
        """
        check_key(key)
        if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}")
        choices = np.asarray(
            jax.random.randint(key, (int(num), 2, self.num_edges), 0, len(self.operations))
        )
        ops = np.asarray(self.operations, dtype=object)
        if self.shared_cells:
            return tuple(
                Genotype(tuple(ops[normal]), None, self.num_nodes) for normal, _ in choices
            )
        return tuple(
            Genotype(tuple(ops[normal]), tuple(ops[reduce]), self.num_nodes)
            for normal, reduce in choices
        )


def search_space_from_genotype(genotype: Genotype) -> SearchSpace:
    """The search space S_b of a baseline architecture (Algorithm 1, line 18).

    It keeps the baseline's cell structure (``num_nodes``, and one shared cell
    when its normal and reduction cells are the same) and the set of operations
    used by either of its cells, listed in :func:`registered_operations` order
    (the built-in ``ALL_OPERATIONS`` first). ``zero`` never enters a derived
    space (see :data:`SEARCHABLE_OPERATIONS`).

    Raises:
      ValueError: the genotype uses no operation but ``zero``.

    Example:
      >>> g = Genotype(("identity", "max_pool_3x3", "zero"), num_nodes=3)
      >>> search_space_from_genotype(g)
      SearchSpace(operations=('identity', 'max_pool_3x3'), num_nodes=3, shared_cells=True)
    """
    if not isinstance(genotype, Genotype):
        raise TypeError(f"expected a Genotype, got {type(genotype).__name__}")
    used = set(genotype.operations) - {"zero"}
    if not used:
        raise ValueError(f"genotype has only zero edges, so it derives no search space:\n{genotype}")
    return SearchSpace(
        tuple(op for op in registered_operations() if op in used),
        genotype.num_nodes,
        shared_cells=genotype.reduce == genotype.normal,
    )
