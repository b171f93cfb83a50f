"""The one pair loop: from ε-networks to F_{b,t} to d[b, t], with one key rule.

Every task distance of the library comes from :func:`pair_fishers`:

* :func:`task_distances`: the K×K log-det table of eq. 2;
* :func:`column_distances`: one target's column, for any pair distances (Algorithm 1's
  :func:`ldnas_jax.pipeline.distances_to_target` and the transfer check use it);
* :func:`pair_log_dets`: the per-parameter log-dets L[b, t], one pair at a time (the
  commands' resumable tables and :func:`task_distances` use it);
* :func:`ldnas_jax.tasks.task_family_distances`: every family distance of the K×K grid.

**The key rule.** F_{b,t} is estimated with :func:`pair_key`: the caller's key folded with
stable hashes of the *names* of b and t. It depends on nothing else (not on the other
tasks of the table, their order, nor on which function asks), so with the ``"sampled"``
estimator one pair gives one number whether it comes from a table, a column, a resumed
command or the pipeline, given the same key. The ``"empirical"`` and ``"exact"``
estimators ignore the key.
"""

import functools
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from ldnas_jax._checks import check_key
from ldnas_jax.data import Split
from ldnas_jax.distances import (
    PAIR_NORMALIZATIONS,
    distances_from_log_dets,
    log_det_distance,
    mean_log_det,
    pair_reference,
)
from ldnas_jax.tasks._networks import TaskNetwork

# Names the old module path ``ldnas_jax.task_distance`` (an alias of this module) held.
from ldnas_jax.tasks._on_task import _check_network, fisher_on_task, shared_apply_fn, task_inputs  # noqa: F401
from ldnas_jax.tasks._options import (  # noqa: F401
    DEFAULT_LABEL_MODE,
    LABEL_MODES,
    DistanceOptions,
    FisherOptions,
    distance_options,
    fisher_options,
)

PairDistance = Callable[[Any, Any], float]


class TaskDistances(NamedTuple):
    """A K×K distance table: ``matrix[b, t]`` = d[b, t], rows sources, columns targets.

    Attributes:
      names: the K task names, in row and column order.
      matrix: d[b, t] (eq. 2); zero diagonal, in general not symmetric.
      log_dets: L[b, t] = (1/n_b) log det(F_{b,t} + σ² I).
    """

    names: tuple[str, ...]
    matrix: np.ndarray
    log_dets: np.ndarray


def pair_key(key: jax.Array, source: str, target: str) -> jax.Array:
    """The PRNG key of pair (b, t): ``key`` folded with stable hashes of both task names.

    CRC-32 of the UTF-8 name is the hash: the same in every process and Python version
    (Python's own ``hash`` of a string is salted per process). The order matters, so
    (b, t) and (t, b) get different keys.

    Example:
      >>> key = jax.random.key(0)
      >>> bool((jax.random.key_data(pair_key(key, "E0", "E7"))
      ...       == jax.random.key_data(pair_key(key, "E7", "E0"))).all())
      False
    """
    for name in (source, target):
        if not isinstance(name, str):
            raise TypeError(f"task names are strings, got {name!r}")
    folded = jax.random.fold_in(key, zlib.crc32(source.encode("utf-8")))
    return jax.random.fold_in(folded, zlib.crc32(target.encode("utf-8")))


def pair_fisher(
    source: TaskNetwork,
    target: str,
    split: Split,
    num_classes: int,
    *,
    options: FisherOptions = FisherOptions(),
    key: jax.Array,
):
    """F_{b,t}: N_b's diagonal Fisher on target ``target``'s data, with the pair's key.

    Args:
      source: N_b.
      target: the name of task t (for the key; ``split`` holds its data).
      split: X_t (and its labels, for the empirical estimator).
      num_classes: task t's number of classes.
      options: the estimator, label route, examples and engine.
      key: the run's key; the pair's own is ``pair_key(key, source.task, target)``.
    """
    return fisher_on_task(
        source,
        split,
        num_classes,
        estimator=options.estimator,
        label_mode=options.label_mode,
        key=pair_key(key, source.task, target),
        chunk_size=options.chunk_size,
        max_examples=options.max_examples,
        method=options.method,
    )


def every_pair(k: int) -> list[tuple[int, int]]:
    """All K² pairs (b, t), column by column, F_{t,t} first in each column.

    Example:
      >>> every_pair(2)
      [(0, 0), (1, 0), (1, 1), (0, 1)]
    """
    return [pair for t in range(k) for pair in column_pairs(k, t)]


def column_pairs(k: int, t: int) -> list[tuple[int, int]]:
    """The pairs of column t: (t, t) first, then (b, t) for every b ≠ t.

    Example:
      >>> column_pairs(3, 1)
      [(1, 1), (0, 1), (2, 1)]
    """
    return [(t, t), *((b, t) for b in range(k) if b != t)]


def pair_fishers(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    options: FisherOptions | DistanceOptions | None = None,
    key: jax.Array | None = None,
    pairs: Iterable[tuple[int, int]] | None = None,
    progress: bool = True,
    **fields,
) -> Iterator[tuple[int, int, Any]]:
    """Yields ``(b, t, F_{b,t})`` for the pairs of K tasks, one Fisher at a time.

    Streaming keeps one Fisher in memory at a time (a VGG-16 Fisher is 59 MB). In the
    default order (:func:`every_pair`) F_{t,t} comes first in each column, so a consumer
    that compares each F_{b,t} with F_{t,t} holds two Fishers at most.

    Args:
      networks: N_0..N_{K-1}; their ``task`` names must be distinct (they make the keys).
      targets: X_0..X_{K-1}, the data each column's Fishers are evaluated on. Only the
        columns ``pairs`` asks for are read.
      target_num_classes: each task's number of classes.
      options: :class:`FisherOptions` (or the Fisher fields of :class:`DistanceOptions`).
      key: the run's key (default ``key(0)``); pair (b, t) uses :func:`pair_key`.
      pairs: the (b, t) to compute, in order (default :func:`every_pair`).
      progress: show a tqdm bar.
      **fields: overrides of :class:`FisherOptions` fields, e.g. ``estimator="sampled"``.

    Raises:
      TypeError, ValueError: bad options, key, networks or pairs, checked before any Fisher.

    Example:
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> nets, split = toy_networks_and_split("AB")
      >>> [(b, t) for b, t, _ in pair_fishers(nets, [split, split], [2, 2], progress=False)]
      [(0, 0), (1, 0), (1, 1), (0, 1)]
    """
    options = fisher_options(options, **fields)
    names = _check_tables(networks, targets, target_num_classes)
    k = len(names)
    pairs = every_pair(k) if pairs is None else _check_pairs(pairs, k)
    if key is not None:
        check_key(key)
    key = jax.random.key(0) if key is None else key
    return _stream(networks, names, targets, target_num_classes, options, key, pairs, progress)


def _stream(networks, names, targets, classes, options, key, pairs, progress):
    with tqdm(total=len(pairs), desc="Fisher pairs", disable=not progress, leave=False) as bar:
        for b, t in pairs:
            fisher = pair_fisher(
                networks[b], names[t], targets[t], classes[t], options=options, key=key
            )
            yield b, t, fisher
            bar.update(1)


def pair_log_dets(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    options: DistanceOptions | None = None,
    key: jax.Array | None = None,
    pairs: Iterable[tuple[int, int]] | None = None,
    progress: bool = True,
    **fields,
) -> Iterator[tuple[int, int, float]]:
    """Yields ``(b, t, L[b, t])``, L = (1/n) log det(F_{b,t} + σ²I), from :func:`pair_fishers`.

    One number per pair is all eq. 2 needs (d[b, t] = |L[b, t] − L[t, t]|), so a table of
    them can be saved and resumed. Under ``normalize="target_mean"`` σ is taken relative to
    F_{t,t} (:func:`ldnas_jax.distances.pair_reference`) for the whole column t. Arguments
    as :func:`pair_fishers`; ``options`` are :class:`DistanceOptions`, checked (σ included)
    before any Fisher.

    Example:
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> (net,), split = toy_networks_and_split("A")
      >>> [(b, t, L < 0) for b, t, L in pair_log_dets([net], [split], [2], progress=False)]
      [(0, 0, True)]
    """
    options = distance_options(options, **fields)
    wanted = every_pair(len(networks)) if pairs is None else _check_pairs(pairs, len(networks))
    stream = pair_fishers(
        networks,
        targets,
        target_num_classes,
        options=options.fisher,
        key=key,
        pairs=_with_references(wanted, options.normalize),
        progress=progress,
    )
    return _log_dets(stream, set(wanted), options)


def _with_references(pairs: list[tuple[int, int]], normalize) -> list[tuple[int, int]]:
    """``pairs``, with each column's (t, t) first where ``normalize`` takes σ from F_{t,t}.

    Under ``"target_mean"`` L[b, t] needs r_t, the mean entry of F_{t,t}: a column whose
    F_{t,t} is not asked for (a resumed table) computes it again, with its own key.
    """
    if normalize not in PAIR_NORMALIZATIONS:
        return pairs
    ordered, seen = [], set()
    for b, t in pairs:
        if t not in seen:
            seen.add(t)
            ordered.append((t, t))
        if b != t:
            ordered.append((b, t))
    return ordered


def _log_dets(stream, wanted: set, options: DistanceOptions):
    references = {}
    for b, t, fisher in stream:
        if b == t:
            references[t] = pair_reference(fisher, normalize=options.normalize)
        if (b, t) in wanted:
            log_det = mean_log_det(
                fisher,
                sigma=options.sigma,
                normalize=options.normalize,
                reference=references.get(t),
            )
            yield b, t, log_det


def task_distances(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    options: DistanceOptions | None = None,
    key: jax.Array | None = None,
    progress: bool = True,
    **fields,
) -> TaskDistances:
    """Computes d[b, t] for every pair of K tasks (Algorithm 1, ``Distance``).

    Args:
      networks: N_0..N_{K-1}, one trained network per task (distinct task names).
      targets: X_0..X_{K-1}, the data each Fisher is evaluated on (e.g. test splits).
      target_num_classes: number of classes of each task.
      options: estimator, label route, Fisher examples, σ and normalisation
        (default :class:`DistanceOptions`).
      key: the run's key; pair (b, t) uses :func:`pair_key` (matters for ``"sampled"``).
      progress: show a tqdm bar.
      **fields: overrides of :class:`DistanceOptions` fields, e.g. ``sigma=1e-2``.

    Returns:
      :class:`TaskDistances` with the K×K matrix; only one number per pair is kept.

    Raises:
      ValueError: σ ≤ 0, an unknown ``normalize``, duplicate task names or
        mismatched lengths (checked before any Fisher is computed), and the
        errors of :func:`fisher_on_task`.

    Example:
      >>> from ldnas_jax.distances import closest_task
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> nets, _ = toy_networks_and_split("ABC")
      >>> rng = np.random.default_rng(0)
      >>> splits = [Split(rng.uniform(size=(4, 8, 8, 3)).astype(np.float32),
      ...                 np.array([0, 1, 0, 1])) for _ in range(3)]
      >>> d = task_distances(nets, splits, [2, 2, 2], estimator="sampled", progress=False)
      >>> d.matrix.shape, d.names, closest_task(d.matrix, "C", names=d.names) in ("A", "B")
      ((3, 3), ('A', 'B', 'C'), True)
    """
    options = distance_options(options, **fields)  # a bad σ before K² Fishers, not after
    k = len(networks)
    log_dets = np.zeros((k, k))
    stream = pair_log_dets(
        networks, targets, target_num_classes, options=options, key=key, progress=progress
    )
    for b, t, log_det in stream:
        log_dets[b, t] = log_det
    names = tuple(n.task for n in networks)
    return TaskDistances(names, distances_from_log_dets(log_dets), log_dets)


def column_distances(
    sources: Sequence[TaskNetwork],
    target: TaskNetwork,
    split: Split,
    num_classes: int,
    *,
    distances: Mapping[str, PairDistance] | None = None,
    options: DistanceOptions | None = None,
    key: jax.Array | None = None,
    progress: bool = False,
    **fields,
) -> dict[str, dict[str, float]]:
    """One target's column: ``{distance: {b: dist(F_{b,t}, F_{t,t})}}`` for every source b.

    The Fishers are those of :func:`pair_fishers` with the same key, so ``"log_det"``
    equals :func:`task_distances`' column t exactly. F_{t,t} is computed first and two
    Fishers are held at a time.

    Args:
      sources: the baselines' networks N_b (their task names distinct, t not among them).
      target: the target's own network N_t (its ``task`` names t).
      split: X_t, the data every Fisher of the column is evaluated on.
      num_classes: task t's number of classes.
      distances: name → ``f(F_{b,t}, F_{t,t})``; default ``{"log_det": eq. 2}`` with the
        options' σ and normalisation.
      options, key, progress, **fields: as :func:`task_distances`.

    Example:
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> (a, b, t), split = toy_networks_and_split("ABT")
      >>> column = column_distances([a, b], t, split, 2)
      >>> sorted(column["log_det"])
      ['A', 'B']
    """
    options = distance_options(options, **fields)
    if distances is None:
        distances = {
            "log_det": functools.partial(
                log_det_distance, sigma=options.sigma, normalize=options.normalize
            )
        }
    if not distances:
        raise ValueError("no distance to compute")
    _check_network(target)
    networks = [*sources, target]
    k = len(networks)
    stream = pair_fishers(
        networks,
        [split] * k,
        [num_classes] * k,
        options=options.fisher,
        key=key,
        pairs=column_pairs(k, k - 1),
        progress=progress,
    )
    _, _, own = next(stream)
    values = {name: {} for name in distances}
    for b, _, fisher in stream:
        for name, fn in distances.items():
            value = float(fn(fisher, own))
            if not np.isfinite(value):
                raise ValueError(f"distance {name!r} gave {value} for {networks[b].task!r}")
            values[name][networks[b].task] = value
    return values


def _check_tables(networks, targets, target_num_classes) -> tuple[str, ...]:
    """The task names, after checking one network, split and class count per task."""
    networks, targets, classes = list(networks), list(targets), list(target_num_classes)
    k = len(networks)
    if k == 0 or len(targets) != k or len(classes) != k:
        raise ValueError(
            f"need one target split and class count per network; got {k} networks, "
            f"{len(targets)} splits, {len(classes)} class counts"
        )
    for network in networks:
        _check_network(network)
    names = tuple(n.task for n in networks)
    if len(set(names)) != k:
        raise ValueError(f"task names must be distinct (they key each pair), got {list(names)}")
    return names


def _check_pairs(pairs, k: int) -> list[tuple[int, int]]:
    checked = []
    for pair in pairs:
        if (
            not isinstance(pair, tuple)
            or len(pair) != 2
            or not all(isinstance(i, (int, np.integer)) and 0 <= i < k for i in pair)
        ):
            raise ValueError(f"each pair must be (b, t) with 0 <= b, t < {k}, got {pair!r}")
        checked.append((int(pair[0]), int(pair[1])))
    return checked
