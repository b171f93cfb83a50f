"""The distance family over K tasks' ε-networks: every pair distance, and the full-Fisher log-det.

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

The full-Fisher log-det (:mod:`ldnas_jax.distances._full_log_det`) needs per-example gradients rather than
diagonals; :func:`full_log_det_task_distances` computes it task by task, one G at a time.
"""

import functools
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from ldnas_jax.data import Split
from ldnas_jax.distances import (
    DEFAULT_NORMALIZE,
    DEFAULT_SIGMA,
    MAX_EXAMPLES,
    PAIR_NORMALIZATIONS,
    FamilyDistances,
    PairDistance,
    distances_from_log_dets,
    family_distance_matrices,
    full_fisher_log_det,
    gradient_reference,
    make_task_distances,
)
from ldnas_jax.fisher import per_example_gradients
from ldnas_jax.tasks._networks import TaskNetwork
from ldnas_jax.tasks._on_task import shared_apply_fn, task_inputs
from ldnas_jax.tasks._options import DEFAULT_LABEL_MODE, DistanceOptions, distance_options
from ldnas_jax.tasks._pairs import TaskDistances, every_pair, pair_fishers

FULL_LOG_DET = "log_det_full"


def task_family_distances(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    distances: Mapping[str, PairDistance] | None = None,
    options: DistanceOptions | None = None,
    key: jax.Array | None = None,
    full_fisher: bool = False,
    full_max_examples: int = 128,
    progress: bool = True,
    **fields,
) -> FamilyDistances:
    """All family distances between K tasks through their ε-networks.

    Args:
      networks, targets, target_num_classes: as in :func:`ldnas_jax.task_distances`.
      distances: name → ``f(F_{b,t}, F_{t,t})``; default ``make_task_distances`` with the
        options' σ and normalisation.
      options: the Fisher fields, σ and normalisation (default
        :class:`~ldnas_jax.tasks.DistanceOptions`).
      key: the run's key; pair (b, t) uses :func:`ldnas_jax.tasks.pair_key`.
      full_fisher: also compute ``"log_det_full"`` from exact full empirical Fishers
        (:func:`full_log_det_task_distances`, empirical labels, ``label_mode`` shared).
      full_max_examples: examples per full Fisher (G is M × n).
      progress: show tqdm bars.
      **fields: overrides of :class:`~ldnas_jax.tasks.DistanceOptions` fields.

    Example:
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> nets, split = toy_networks_and_split("AB")
      >>> family = task_family_distances(nets, [split, split], [2, 2], progress=False)
      >>> family.names, family.closest()["frechet"]
      (('A', 'B'), {'A': 'B', 'B': 'A'})
    """
    options = distance_options(options, **fields)
    if distances is None:
        distances = make_task_distances(sigma=options.sigma, normalize=options.normalize)
    stream = pair_fishers(
        networks, targets, target_num_classes, options=options.fisher, key=key, progress=progress
    )
    matrices = family_distance_matrices(stream, len(networks), distances=distances)
    if full_fisher:
        full = full_log_det_task_distances(
            networks,
            targets,
            target_num_classes,
            sigma=options.sigma,
            normalize=options.normalize,
            label_mode=options.label_mode,
            max_examples=full_max_examples,
            progress=progress,
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
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> (net,), _ = toy_networks_and_split("A")
      >>> x = np.zeros((4, 8, 8, 3), np.float32)
      >>> g = gradients_on_task(net, Split(x, np.array([0, 1, 2, 3])), 4)
      >>> g.shape   # M examples × n parameters (BatchNorm statistics excluded)
      (4, 27986)
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
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> nets, split = toy_networks_and_split("AB")
      >>> full = full_log_det_task_distances(nets, [split, split], [2, 2], progress=False)
      >>> full.matrix.shape, float(full.matrix[0, 0])
      ((2, 2), 0.0)
    """
    k = len(networks)
    if k == 0 or len(targets) != k or len(target_num_classes) != k:
        raise ValueError(
            f"need one target split and class count per network; got {k} networks, "
            f"{len(targets)} splits, {len(target_num_classes)} class counts"
        )
    log_dets = np.zeros((k, k))
    references = {}  # r_t of each column, for normalize="target_mean"
    with tqdm(total=k * k, desc="full Fishers", disable=not progress, leave=False) as bar:
        for b, t in every_pair(k):  # the order of pair_fishers (G_tt first); empirical labels
            g = gradients_on_task(
                networks[b],
                targets[t],
                target_num_classes[t],
                label_mode=label_mode,
                max_examples=max_examples,
                chunk_size=chunk_size,
            )
            if b == t and normalize in PAIR_NORMALIZATIONS:
                references[t] = gradient_reference(g)
            log_dets[b, t] = full_fisher_log_det(
                g,
                sigma=sigma,
                normalize=normalize,
                max_examples=_memory_guard(max_examples),
                reference=references.get(t),
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
    """The guard on M: :data:`ldnas_jax.distances._full_log_det.MAX_EXAMPLES`, or more if asked for explicitly."""
    return MAX_EXAMPLES if max_examples is None else max(MAX_EXAMPLES, max_examples)


