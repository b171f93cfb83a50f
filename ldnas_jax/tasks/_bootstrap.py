"""How sure the closest task is over the target's examples: a paired bootstrap of d[b, t].

Each F_{b,t} is a mean over the target's examples X_t, so the closest task depends on which
examples were drawn. A bootstrap repeats the table on resamples of X_t (with replacement)
and counts, with :func:`ldnas_jax.distances.closest_shares`, how often each baseline wins.

Recomputing K² Fishers per resample would cost R tables. Instead X_t is cut once into C
chunks (:func:`chunk_indices`) and each pair keeps its C chunk *sums* of squared gradients
(:func:`pair_chunk_sums`, as many per-example gradients as one Fisher). A resample draws
C chunks with replacement (:func:`resample_counts`); its Fisher is the drawn chunks' sum
over their examples (:func:`resampled_fisher`), which is exactly the Fisher of the resampled
examples, repeats included. The resample is **paired**: every F_{b,t} of a column, F_{t,t}
included, sees the same draw, so under ``normalize="target_mean"`` each resample takes σ
relative to its own resampled F_{t,t}. The log-dets and distances are the library's
(:func:`~ldnas_jax.distances.pair_reference`, :func:`~ldnas_jax.distances.mean_log_det`,
:func:`~ldnas_jax.distances.distances_from_log_dets`).

Chunks resample blocks of consecutive examples, so the bootstrap treats a chunk as the unit:
with few chunks the spread is coarse (C = 1 can only redraw the whole set, and every resample
gives the unresampled table).

With the ``"sampled"`` estimator each chunk draws its own labels (the pair's key folded with
the chunk), so the chunk sums are another draw than the table's Fisher; the ``"empirical"``
and ``"exact"`` estimators give the table's F_{b,t} as the mean of all chunks.
"""

import zlib
from collections.abc import Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from ldnas_jax._checks import check_int, check_key
from ldnas_jax.data import Split
from ldnas_jax.distances import (
    closest_shares,
    distances_from_log_dets,
    flatten_fisher,
    mean_log_det,
    pair_reference,
)
from ldnas_jax.fisher import fisher_diagonal
from ldnas_jax.tasks._networks import TaskNetwork
from ldnas_jax.tasks._on_task import shared_apply_fn, task_inputs
from ldnas_jax.tasks._options import DistanceOptions, FisherOptions, distance_options
from ldnas_jax.tasks._pairs import _check_tables, pair_key

DEFAULT_RESAMPLES = 200
DEFAULT_CHUNKS = 16
# Examples per batch handed to fisher_diagonal, as fisher_on_task does.
_BATCH = 256


def chunk_indices(num_examples: int, chunks: int) -> list[np.ndarray]:
    """The example indices of C chunks of consecutive examples, sizes differing by one at most.

    Example:
      >>> [c.tolist() for c in chunk_indices(5, 2)]
      [[0, 1, 2], [3, 4]]
    """
    num_examples = check_int(num_examples, name="num_examples")
    chunks = check_int(chunks, name="chunks")
    if chunks > num_examples:
        raise ValueError(
            f"cannot cut {num_examples} examples into {chunks} chunks: use at most "
            f"{num_examples} chunks (or more Fisher examples)"
        )
    return np.array_split(np.arange(num_examples), chunks)


def resample_counts(key: jax.Array, resamples: int, chunks: int) -> np.ndarray:
    """``counts[r, c]``: how often resample r draws chunk c, C draws with replacement.

    Every row sums to C.

    Example:
      >>> counts = resample_counts(jax.random.key(0), 3, 4)
      >>> counts.shape, counts.sum(axis=1).tolist()
      ((3, 4), [4, 4, 4])
    """
    check_key(key)
    resamples = check_int(resamples, name="resamples")
    chunks = check_int(chunks, name="chunks")
    drawn = np.asarray(jax.random.randint(key, (resamples, chunks), 0, chunks))
    return np.stack([np.bincount(row, minlength=chunks) for row in drawn])


def resampled_fisher(sums: np.ndarray, sizes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The Fisher of one resample: the drawn chunks' sums over the drawn examples.

    Args:
      sums: (C, n) each chunk's sum of squared per-example gradients.
      sizes: (C,) examples per chunk.
      counts: (C,) how often the resample draws each chunk.

    Example:
      >>> sums, sizes = np.array([[2.0, 4.0], [3.0, 0.0]]), np.array([2, 1])
      >>> resampled_fisher(sums, sizes, np.array([0, 2])).tolist()   # chunk 1 twice
      [3.0, 0.0]
      >>> resampled_fisher(sums, sizes, np.array([1, 1])).tolist()   # all three examples
      [1.6666666666666667, 1.3333333333333333]
    """
    counts = np.asarray(counts, dtype=np.float64)
    examples = float(counts @ np.asarray(sizes, dtype=np.float64))
    if examples <= 0:
        raise ValueError("a resample must draw at least one example")
    return counts @ sums / examples


def resampled_references(
    sums: np.ndarray, sizes: np.ndarray, counts: np.ndarray, *, normalize
) -> list[float | None]:
    """Each resample's pair reference, from its resampled F_{t,t} (None if ``normalize`` has none).

    Example:
      >>> resampled_references(np.array([[2.0, 4.0]]), np.array([2]), np.array([[1]]),
      ...                      normalize="target_mean")
      [1.5]
    """
    return [
        pair_reference(resampled_fisher(sums, sizes, row), normalize=normalize) for row in counts
    ]


def resampled_log_dets(
    sums: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
    references: Sequence[float | None],
    *,
    sigma: float,
    normalize,
) -> np.ndarray:
    """(R,) L_r = (1/n) log det(F_r + σ²I) of each resample r, with its reference.

    Example:
      >>> resampled_log_dets(np.array([[0.0, 0.0]]), np.array([1]), np.array([[1], [1]]),
      ...                    [None, None], sigma=1.0, normalize=None).tolist()
      [0.0, 0.0]
    """
    return np.array(
        [
            mean_log_det(
                resampled_fisher(sums, sizes, row),
                sigma=sigma,
                normalize=normalize,
                reference=reference,
            )
            for row, reference in zip(counts, references, strict=True)
        ]
    )


def pair_chunk_sums(
    source: TaskNetwork,
    target: str,
    split: Split,
    num_classes: int,
    *,
    options: FisherOptions,
    key: jax.Array,
    chunks: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(sums, sizes)``: N_b's squared per-example gradients on X_t, summed per chunk.

    The examples, labels and head padding are :func:`fisher_on_task`'s (the first
    ``max_examples``, the label route); ``sums[c] / sizes[c]`` is the Fisher of chunk c,
    flattened as :func:`ldnas_jax.distances.flatten_fisher` does (float64).

    Example:
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> (net,), split = toy_networks_and_split("A", examples=5)
      >>> sums, sizes = pair_chunk_sums(net, "A", split, 2,
      ...                               options=FisherOptions(), key=jax.random.key(0), chunks=2)
      >>> sums.shape[0], sizes.tolist()
      (2, [3, 2])
    """
    x, y, extra = task_inputs(
        source,
        split,
        num_classes,
        label_mode=options.label_mode,
        max_examples=options.max_examples,
        uses_labels=options.estimator == "empirical",
    )
    apply_fn = shared_apply_fn(source.model_name, source.num_classes, extra)
    pair = pair_key(key, source.task, target)
    sums, sizes = [], []
    for c, index in enumerate(chunk_indices(len(x), chunks)):
        xc, yc = x[index], y[index]
        fisher = fisher_diagonal(
            apply_fn,
            source.variables,
            [(xc[i : i + _BATCH], yc[i : i + _BATCH]) for i in range(0, len(xc), _BATCH)],
            estimator=options.estimator,
            key=jax.random.fold_in(pair, c),
            chunk_size=options.chunk_size,
            method=options.method,
        )
        sums.append(flatten_fisher(fisher["params"]) * len(index))
        sizes.append(len(index))
    return np.stack(sums), np.array(sizes)


def column_resample_counts(
    resample_key: jax.Array, target: str, resamples: int, chunks: int
) -> np.ndarray:
    """The (R, C) draw of column ``target``: ``resample_key`` folded with the target's name.

    One draw per target, shared by every pair of its column; it depends on the name only,
    not on the other tasks of the table.

    Example:
      >>> key = jax.random.key(0)
      >>> bool((column_resample_counts(key, "E3", 5, 4)
      ...       == column_resample_counts(key, "E3", 5, 4)).all())
      True
    """
    check_key(resample_key)
    folded = jax.random.fold_in(resample_key, zlib.crc32(target.encode("utf-8")))
    return resample_counts(folded, resamples, chunks)


def bootstrap_column_log_dets(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    t: int,
    *,
    options: DistanceOptions | None = None,
    key: jax.Array | None = None,
    resample_key: jax.Array | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    chunks: int = DEFAULT_CHUNKS,
) -> np.ndarray:
    """(R, K) L_r[b, t] of column t for each resample r: F_{t,t} first, two pairs held at a time.

    Arguments as :func:`bootstrap_log_dets`; ``t`` is the column's index.
    """
    options = distance_options(options)
    names = _check_tables(networks, targets, target_num_classes)
    t = check_int(t, name="t", minimum=0)
    if t >= len(names):
        raise ValueError(f"column {t} out of range for {len(names)} tasks")
    key, resample_key = _keys(key, resample_key)
    counts = column_resample_counts(resample_key, names[t], resamples, chunks)

    def sums(b):
        return pair_chunk_sums(
            networks[b],
            names[t],
            targets[t],
            target_num_classes[t],
            options=options.fisher,
            key=key,
            chunks=chunks,
        )

    own_sums, sizes = sums(t)
    references = resampled_references(own_sums, sizes, counts, normalize=options.normalize)
    column = np.zeros((len(counts), len(names)))
    for b in [t, *(b for b in range(len(names)) if b != t)]:
        chunk_sums, _ = (own_sums, sizes) if b == t else sums(b)
        column[:, b] = resampled_log_dets(
            chunk_sums,
            sizes,
            counts,
            references,
            sigma=options.sigma,
            normalize=options.normalize,
        )
    return column


def bootstrap_log_dets(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    options: DistanceOptions | None = None,
    key: jax.Array | None = None,
    resample_key: jax.Array | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    chunks: int = DEFAULT_CHUNKS,
    progress: bool = False,
) -> np.ndarray:
    """(R, K, K) per-parameter log-dets L_r[b, t] on R paired resamples of each target's examples.

    Args:
      networks, targets, target_num_classes, options: as :func:`task_distances`.
      key: the run's Fisher key (default ``key(0)``); pair (b, t) uses :func:`pair_key`,
        folded with the chunk index.
      resample_key: the key of the draws (default ``key(0)``); column t's draw is
        :func:`column_resample_counts`. Keep it fixed across seeds of the ε-networks to
        resample the same examples for every seed.
      resamples: R, the number of resamples.
      chunks: C, the chunks each target's examples are cut into (at most the examples).
      progress: a tqdm bar over columns.

    Returns:
      float64 (R, K, K); :func:`ldnas_jax.distances.distances_from_log_dets` of each
      ``[r]`` gives resample r's distance table.

    Example:
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> nets, split = toy_networks_and_split("AB", examples=6)
      >>> bootstrap_log_dets(nets, [split, split], [2, 2], resamples=5, chunks=3).shape
      (5, 2, 2)
    """
    options = distance_options(options)
    names = _check_tables(networks, targets, target_num_classes)
    _check_sizes(targets, options, resamples, chunks)  # before any Fisher
    columns = [
        bootstrap_column_log_dets(
            networks,
            targets,
            target_num_classes,
            t,
            options=options,
            key=key,
            resample_key=resample_key,
            resamples=resamples,
            chunks=chunks,
        )
        for t in tqdm(range(len(names)), desc="bootstrap columns", disable=not progress)
    ]
    return np.stack(columns, axis=2)


def bootstrap_tables(log_dets: np.ndarray) -> np.ndarray:
    """(R, K, K) distance tables from (R, K, K) resampled log-dets, each by eq. 2.

    Example:
      >>> bootstrap_tables(np.array([[[-2.0, -1.0], [-3.0, -4.0]]])).tolist()
      [[[0.0, 3.0], [1.0, 0.0]]]
    """
    log_dets = np.asarray(log_dets, dtype=np.float64)
    if log_dets.ndim != 3:
        raise ValueError(f"log_dets must be (resamples, K, K), got shape {log_dets.shape}")
    return np.stack([distances_from_log_dets(table) for table in log_dets])


def bootstrap_closest_shares(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    options: DistanceOptions | None = None,
    key: jax.Array | None = None,
    resample_key: jax.Array | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    chunks: int = DEFAULT_CHUNKS,
    progress: bool = False,
) -> np.ndarray:
    """``share[b, t]``: the share of resamples of t's examples in which b is closest to t.

    The (K, K) :func:`ldnas_jax.distances.closest_shares` of the R resampled tables of
    :func:`bootstrap_log_dets` (arguments as there); every column sums to 1.

    Example:
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> nets, _ = toy_networks_and_split("ABC")
      >>> rng = np.random.default_rng(0)
      >>> splits = [Split(rng.uniform(size=(4, 8, 8, 3)).astype(np.float32),
      ...                 np.array([0, 1, 0, 1])) for _ in range(3)]
      >>> shares = bootstrap_closest_shares(nets, splits, [2, 2, 2], resamples=10, chunks=2)
      >>> shares.shape, shares.sum(axis=0).tolist()
      ((3, 3), [1.0, 1.0, 1.0])
    """
    log_dets = bootstrap_log_dets(
        networks,
        targets,
        target_num_classes,
        options=options,
        key=key,
        resample_key=resample_key,
        resamples=resamples,
        chunks=chunks,
        progress=progress,
    )
    return closest_shares(bootstrap_tables(log_dets))


def _check_sizes(targets, options: DistanceOptions, resamples, chunks) -> None:
    """Refuses R < 1, and C beyond any target's Fisher examples, before any Fisher."""
    check_int(resamples, name="resamples")
    for split in targets:
        if not isinstance(split, Split):
            continue  # fisher_on_task's check names it
        examples = len(split.x)
        if options.max_examples is not None:
            examples = min(examples, options.max_examples)
        chunk_indices(examples, chunks)


def _keys(key, resample_key) -> tuple[jax.Array, jax.Array]:
    for k in (key, resample_key):
        if k is not None:
            check_key(k)
    default = jax.random.key(0)
    return (default if key is None else key), (default if resample_key is None else resample_key)
