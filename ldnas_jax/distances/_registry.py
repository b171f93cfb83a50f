"""The family of pair distances d(F_{b,t}, F_{t,t}) and the K×K matrices they fill.

Every distance here is a pure function of two diagonal Fishers, both on the target t's data:
F_{b,t} from the baseline network N_b and F_{t,t} from the target's own network. That is the
pair of LD-NAS eq. 2 and of the follow-up paper's Fisher task distance, so one stream of
Fishers serves all:

* ``"log_det"``: eq. 2, :func:`ldnas_jax.log_det_distance` (σ and normalisation chosen);
* ``"frechet"``: :func:`ldnas_jax.distances.frechet_task_distance` (Le et al. 2021/22);
* ``"task2vec"``: :func:`ldnas_jax.distances.task2vec_distance`, Task2Vec's symmetric d_sym;
* ``"cosine"``: :func:`ldnas_jax.distances.cosine_distance`.
"""

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ldnas_jax.distances._frechet import frechet_task_distance
from ldnas_jax.distances._log_det import (
    DEFAULT_NORMALIZE,
    DEFAULT_SIGMA,
    closest_task,
    log_det_distance,
)
from ldnas_jax.distances._task2vec import cosine_distance, task2vec_distance

PairDistance = Callable[[Any, Any], float]
FULL_LOG_DET = "log_det_full"


def make_task_distances(
    *, sigma: float = DEFAULT_SIGMA, normalize: str | None = DEFAULT_NORMALIZE
) -> dict[str, PairDistance]:
    """The registry of diagonal-Fisher distances, with eq. 2's σ and normalisation set.

    ``normalize`` also applies to ``"task2vec"``; ``"frechet"`` always divides by the trace
    (its definition) and ``"cosine"`` is scale-free.

    Example:
      >>> sorted(make_task_distances(sigma=0.01))
      ['cosine', 'frechet', 'log_det', 'task2vec']
    """
    return {
        "log_det": functools.partial(log_det_distance, sigma=sigma, normalize=normalize),
        "frechet": frechet_task_distance,
        "task2vec": functools.partial(task2vec_distance, normalize=normalize),
        "cosine": cosine_distance,
    }


TASK_DISTANCES: dict[str, PairDistance] = make_task_distances()


def family_distance_matrices(
    pairs: Iterable[tuple[int, int, Any]],
    num_tasks: int,
    *,
    distances: Mapping[str, PairDistance] | None = None,
) -> dict[str, np.ndarray]:
    """One K×K matrix per distance, ``D[b, t] = dist(F_{b,t}, F_{t,t})``, from streamed Fishers.

    Args:
      pairs: ``(b, t, F_{b,t})`` triples covering every pair once, in any order, e.g.
        :func:`ldnas_jax.tasks.pair_fishers`. The (t, t) triple is F_{t,t}.
      num_tasks: K.
      distances: name → ``f(F_{b,t}, F_{t,t})``; default :data:`TASK_DISTANCES`.

    Only scalars are kept, plus the Fishers of a column t that arrive before its F_{t,t}
    (none in ``pair_fishers``' order, which yields F_{t,t} first), and F_{t,t} until column
    t is complete.
    The diagonal is set to 0, the value of every distance here on equal Fishers.

    Returns:
      ``{name: K×K float64 array}``, rows sources b, columns targets t.

    Example:
      >>> F = {(0, 0): np.array([1.0, 1.0]), (1, 0): np.array([1.0, 3.0]),
      ...      (0, 1): np.array([2.0, 1.0]), (1, 1): np.array([1.0, 2.0])}
      >>> m = family_distance_matrices(((b, t, f) for (b, t), f in F.items()), 2,
      ...                              distances={"cosine": cosine_distance})
      >>> m["cosine"].round(4).tolist()
      [[0.0, 0.2], [0.1056, 0.0]]
    """
    distances = TASK_DISTANCES if distances is None else dict(distances)
    if not distances:
        raise ValueError("no distances to compute")
    k = _check_count(num_tasks)
    out = {name: np.zeros((k, k)) for name in distances}
    seen = np.zeros((k, k), bool)
    own: dict[int, Any] = {}
    pending: dict[int, list[tuple[int, Any]]] = {}

    def fill(b: int, t: int, fisher: Any) -> None:
        for name, fn in distances.items():
            value = float(fn(fisher, own[t]))
            if not np.isfinite(value):
                raise ValueError(f"distance {name!r} gave {value} for pair ({b}, {t})")
            out[name][b, t] = value

    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 3):
            raise TypeError(f"each pair must be a (b, t, fisher) triple, got {type(item).__name__}")
        b, t, fisher = item
        b, t = _index(b, k, "source"), _index(t, k, "target")
        if seen[b, t]:
            raise ValueError(f"pair ({b}, {t}) appears twice")
        seen[b, t] = True
        if b == t:
            own[t] = fisher
            for source, waiting in pending.pop(t, []):
                fill(source, t, waiting)
        elif t in own:
            fill(b, t, fisher)
        else:
            pending.setdefault(t, []).append((b, fisher))
        if seen[:, t].all():
            own.pop(t, None)  # column complete: its F_{t,t} is no longer needed
    if not seen.all():
        missing = [(int(b), int(t)) for b, t in zip(*np.nonzero(~seen))]
        raise ValueError(
            f"missing Fisher pairs (b, t): {missing[:8]}{' ...' if len(missing) > 8 else ''}"
        )
    return out


class FamilyDistances(NamedTuple):
    """K×K matrices of several distances over the same tasks (rows sources, columns targets)."""

    names: tuple[str, ...]
    matrices: dict[str, np.ndarray]

    def closest(self) -> dict[str, dict[str, str]]:
        """``{distance: {target: closest baseline}}``, b* = argmin_{b ≠ t} D[b, t] per column."""
        return closest_tasks(self.matrices, self.names)


def closest_tasks(
    matrices: Mapping[str, np.ndarray], names: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Which baseline each distance picks for each target (Algorithm 1, line 16).

    Example:
      >>> D = np.array([[0.0, 0.3, 0.9], [0.2, 0.0, 0.4], [0.5, 0.1, 0.0]])
      >>> closest_tasks({"d": D}, ["a", "b", "c"])
      {'d': {'a': 'b', 'b': 'c', 'c': 'b'}}
    """
    names = list(names)
    return {
        name: {t: closest_task(matrix, t, names=names) for t in names}
        for name, matrix in matrices.items()
    }


def _check_count(num_tasks: int) -> int:
    if not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
    return int(num_tasks)


def _index(i, k: int, what: str) -> int:
    if not isinstance(i, (int, np.integer)) or not 0 <= i < k:
        raise ValueError(f"{what} index {i!r} out of range for {k} tasks")
    return int(i)
