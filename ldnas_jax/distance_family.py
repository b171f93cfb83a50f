"""A family of task distances beside eq. 2, their K×K matrices and the closest task of each.

Every distance of :data:`TASK_DISTANCES` is a function ``(F_{b,t}, F_{t,t}) -> float`` of two
diagonal Fishers, both on the target t's data: F_{b,t} from the baseline network N_b and
F_{t,t} from the target's own network. That is the pair of LD-NAS eq. 2 and also the pair
of the follow-up paper's Fisher task distance (its authors' code compares the source and
target networks' Fishers on the target's test data), so one stream of Fishers serves all:

* ``"log_det"``: eq. 2, :func:`ldnas_jax.log_det_distance` (σ and normalisation chosen);
* ``"frechet"``: :func:`ldnas_jax.frechet_task_distance` (Le et al. 2021/22);
* ``"task2vec"``: :func:`ldnas_jax.task2vec_distance`, Task2Vec's symmetric d_sym;
* ``"cosine"``: :func:`ldnas_jax.cosine_distance`.

Task2Vec itself compares one probe network's Fisher on two tasks' data; with these ε-networks
that would be the pair (F_{t,b}, F_{t,t}), which the K×K grid also holds (not used here).

The full-Fisher log-det (:mod:`ldnas_jax.full_fisher`) needs per-example gradients rather than
diagonals; :func:`full_log_det_task_distances` computes it task by task, one G at a time.
"""

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ldnas_jax.data import Split
from ldnas_jax.distance import (
    DEFAULT_NORMALIZE,
    DEFAULT_SIGMA,
    closest_task,
    distances_from_log_dets,
    log_det_distance,
)
from ldnas_jax.frechet import frechet_task_distance
from ldnas_jax.full_fisher import MAX_EXAMPLES, full_fisher_log_det, per_example_gradients
from ldnas_jax.task2vec import cosine_distance, task2vec_distance
from ldnas_jax.task_distance import (
    DEFAULT_LABEL_MODE,
    TaskDistances,
    shared_apply_fn,
    pair_fishers,
    task_inputs,
)
from ldnas_jax.task_networks import TaskNetwork

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
        :func:`ldnas_jax.task_distance.pair_fishers`. The (t, t) triple is F_{t,t}.
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


def task_family_distances(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    distances: Mapping[str, PairDistance] | None = None,
    sigma: float = DEFAULT_SIGMA,
    normalize: str | None = DEFAULT_NORMALIZE,
    full_fisher: bool = False,
    full_max_examples: int = 128,
    **fisher_options,
) -> FamilyDistances:
    """All family distances between K tasks through their ε-networks.

    Args:
      networks, targets, target_num_classes: as in :func:`ldnas_jax.task_distances`.
      distances: name → ``f(F_{b,t}, F_{t,t})``; default ``make_task_distances(sigma, normalize)``.
      sigma, normalize: eq. 2's σ and normalisation (also used by the full-Fisher log-det).
      full_fisher: also compute ``"log_det_full"`` from exact full empirical Fishers
        (:func:`full_log_det_task_distances`, empirical labels, ``label_mode`` shared).
      full_max_examples: examples per full Fisher (G is M × n).
      **fisher_options: ``estimator``, ``label_mode``, ``key``, ``max_examples``,
        ``chunk_size``, ``progress`` of :func:`ldnas_jax.task_distance.pair_fishers`.

    Example:
      >>> # fam = task_family_distances(nets, [d.train for d in datas], [d.num_classes ...])
      >>> # fam.closest()["frechet"]["E1"]
    """
    distances = (
        make_task_distances(sigma=sigma, normalize=normalize) if distances is None else distances
    )
    stream = pair_fishers(networks, targets, target_num_classes, **fisher_options)
    matrices = family_distance_matrices(stream, len(networks), distances=distances)
    if full_fisher:
        full = full_log_det_task_distances(
            networks,
            targets,
            target_num_classes,
            sigma=sigma,
            normalize=normalize,
            label_mode=fisher_options.get("label_mode", DEFAULT_LABEL_MODE),
            max_examples=full_max_examples,
            progress=fisher_options.get("progress", True),
        )
        matrices[FULL_LOG_DET] = full.matrix
    return FamilyDistances(tuple(n.task for n in networks), matrices)


def gradients_on_task(
    network: TaskNetwork,
    target: Split,
    target_num_classes: int,
    *,
    label_mode: str = DEFAULT_LABEL_MODE,
    max_examples: int | None = 128,
    chunk_size: int = 32,
) -> np.ndarray:
    """G of network N_b on the target's data: per-example gradients of log p w.r.t. its params.

    Labels are handled as in :func:`ldnas_jax.fisher_on_task` (empirical estimator):
    ``"pad"`` zero-pads a smaller head's logits up to the target's classes, ``"predicted"``
    uses N_b's own predicted labels. BatchNorm statistics are inputs, not parameters.

    Example:
      >>> # g = gradients_on_task(nets["E3"], data["E7"].train, 10, max_examples=64)
    """
    x, y, extra = task_inputs(
        network,
        target,
        target_num_classes,
        label_mode=label_mode,
        max_examples=max_examples,
    )
    state = {k: v for k, v in network.variables.items() if k != "params"}
    return per_example_gradients(
        _params_apply(network.model_name, network.num_classes, extra),
        network.variables["params"],
        x,
        y,
        state=state,
        chunk_size=chunk_size,
        max_examples=_memory_guard(max_examples),
    )


def full_log_det_task_distances(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    sigma: float = DEFAULT_SIGMA,
    normalize: str | None = DEFAULT_NORMALIZE,
    label_mode: str = DEFAULT_LABEL_MODE,
    max_examples: int | None = 128,
    chunk_size: int = 32,
    progress: bool = True,
) -> TaskDistances:
    """Eq. 2 with exact full empirical Fishers: ``L[b, t]`` = full log-det of N_b on X_t.

    One G (M × n) is held at a time; only the scalar L[b, t] is kept.

    Example:
      >>> # full = full_log_det_task_distances(nets, [d.train for d in datas], [2, 10, 10])
    """
    k = len(networks)
    if k == 0 or len(targets) != k or len(target_num_classes) != k:
        raise ValueError(
            f"need one target split and class count per network; got {k} networks, "
            f"{len(targets)} splits, {len(target_num_classes)} class counts"
        )
    log_dets = np.zeros((k, k))
    with tqdm(total=k * k, desc="full Fishers", disable=not progress, leave=False) as bar:
        for t in range(k):
            for b in range(k):
                g = gradients_on_task(
                    networks[b],
                    targets[t],
                    target_num_classes[t],
                    label_mode=label_mode,
                    max_examples=max_examples,
                    chunk_size=chunk_size,
                )
                log_dets[b, t] = full_fisher_log_det(
                    g, sigma=sigma, normalize=normalize, max_examples=_memory_guard(max_examples)
                )
                bar.update(1)
    names = tuple(n.task for n in networks)
    return TaskDistances(names, distances_from_log_dets(log_dets), log_dets)


@functools.lru_cache(maxsize=32)
def _params_apply(model_name: str, num_classes: int, extra_logits: int):
    """``apply(params, x, state)`` for one architecture, cached so compilations are shared."""
    shared = shared_apply_fn(model_name, num_classes, extra_logits)
    return lambda params, x, state: shared({"params": params, **state}, x)


def _memory_guard(max_examples: int | None) -> int:
    """The guard on M: :data:`ldnas_jax.full_fisher.MAX_EXAMPLES`, or more if asked for explicitly."""
    return MAX_EXAMPLES if max_examples is None else max(MAX_EXAMPLES, max_examples)


def _check_count(num_tasks: int) -> int:
    if not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
    return int(num_tasks)


def _index(i, k: int, what: str) -> int:
    if not isinstance(i, (int, np.integer)) or not 0 <= i < k:
        raise ValueError(f"{what} index {i!r} out of range for {k} tasks")
    return int(i)
