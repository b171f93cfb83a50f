"""Ground truth for "closest": how well each baseline's ε-network transfers to a target.

A task distance is only as good as its ranking of what transfers. For a target t
and every baseline b ≠ t, :func:`fine_tune` replaces N_b's classifier layer with
a fresh one of t's size, keeps every other weight, trains on a small budget of
t's training examples and measures accuracy on t's test split. Ranking the
baselines by that accuracy gives the ground truth a distance should reproduce.

Sign convention: a smaller distance should mean better transfer, so the score of
a distance for one target is Spearman's ρ between −d[b, t] and the transfer
accuracy of b (equivalently, between d[b, t] and the error). ρ = +1: the ranking
by distance is exactly the ranking by transfer; ρ = −1: exactly reversed.

Two references come with every target, outside the ranking:

* ``scratch_accuracy``: the same architecture from a fresh initialisation, same
  budget, which tells whether transfer helps at all;
* ``self_accuracy``: the target's own ε-network fine-tuned the same way (head
  reset), an upper reference; the target is never one of its own baselines.

The pieces live apart: rank statistics in :mod:`._ranks`, head surgery in
:mod:`._heads`, fine-tuning in :mod:`._fine_tune`; this module is the check itself.
"""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from ldnas_jax.data import TaskData
from ldnas_jax.distances import FULL_LOG_DET, log_det_distance, make_task_distances

# The rest of what the old module path ``ldnas_jax.transfer`` (an alias of this one) held.
from ldnas_jax.experiments._fine_tune import (
    FineTuneBudget,
    FineTuneResult,  # noqa: F401
    fine_tune,
    train_from_scratch,
)
from ldnas_jax.experiments._heads import head_paths, replace_head  # noqa: F401
from ldnas_jax.experiments._ranks import (
    average_ranks,
    bootstrap_interval,
    spearman,
    transfer_ranking,
)
from ldnas_jax.pipeline import distance_matrices
from ldnas_jax.tasks import DistanceOptions, TaskNetwork, column_distances, distance_options

SIGN_CONVENTION = (
    "spearman = rho(-d[b, t], transfer accuracy of b) over the baselines b != t of each "
    "target t: +1 means a smaller distance always goes with better transfer"
)

DistanceFn = Callable[[Any, Any], float]

# The distance every other one is compared with, unit by unit: the method's own.
REFERENCE_DISTANCE = "log_det"

# The paper's eq. 2 as written: no normalisation, absolute σ² = 1e-4 (σ = 1e-2).
PAPER_LOG_DET = "log_det_paper"
PAPER_SIGMA = 1e-2


def transfer_distances(options: DistanceOptions | None = None) -> dict[str, DistanceFn]:
    """The diagonal distances the check scores: the registry's, plus the paper's own eq. 2.

    ``"log_det"`` (and ``"task2vec"``) take ``options``' σ and normalisation (the library
    default: σ relative to the target's mean Fisher entry); ``"log_det_paper"`` is eq. 2
    unnormalised with σ = 1e-2 (σ² = 1e-4), on the same Fishers. ``"log_det_full"`` needs
    full Fishers; :func:`full_log_det_table` gives it.

    Example:
      >>> sorted(transfer_distances())
      ['cosine', 'frechet', 'log_det', 'log_det_paper', 'task2vec']
    """
    options = distance_options(options)
    return {
        **make_task_distances(sigma=options.sigma, normalize=options.normalize),
        PAPER_LOG_DET: functools.partial(log_det_distance, sigma=PAPER_SIGMA, normalize=None),
    }


def full_log_det_table(
    networks: Sequence[TaskNetwork],
    datas: Sequence[TaskData],
    *,
    options: DistanceOptions | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``D[b, t]``: eq. 2 on full Fishers of N_b on t's train split (``options``' σ, labels).

    :func:`ldnas_jax.pipeline.distance_matrices`' ``"log_det_full"`` table, with
    ``options.max_examples`` examples per gradient matrix; its columns go to
    :func:`transfer_check` as ``tables``.

    Raises:
      ValueError: an estimator other than ``"empirical"`` (per-example gradients of labels).

    Example:
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> nets, split = toy_networks_and_split("AB")
      >>> datas = [TaskData(n.task, 2, split, split, split) for n in nets]
      >>> table = full_log_det_table(nets, datas)
      >>> table.shape, float(table[0, 0])
      ((2, 2), 0.0)
    """
    return distance_matrices(
        networks,
        [d.train for d in datas],
        [d.num_classes for d in datas],
        [FULL_LOG_DET],
        options=distance_options(options),
        progress=progress,
    )[FULL_LOG_DET]


class TargetTransfer(NamedTuple):
    """What :func:`transfer_check` finds for one target t.

    Attributes:
      target: t.
      baselines: the baseline tasks b ≠ t, in task order.
      accuracy: transfer accuracy of each baseline (mean over repeats).
      loss: transfer test cross-entropy of each baseline (mean over repeats); it
        seldom ties, so it still ranks when small test sets tie the accuracies.
      ranking: baselines from best to worst transfer (ties keep task order).
      best_sources: every baseline with the highest transfer accuracy.
      scratch_accuracy: the same budget from a fresh initialisation.
      self_accuracy: t's own ε-network fine-tuned the same way (not ranked).
      distances: ``{distance name: {b: d[b, t]}}``.
      spearman: ``{distance name: ρ(−d, accuracy)}``; NaN when either side is constant.
      spearman_loss: ``{distance name: ρ(−d, −loss)}``, the same sign convention.
      closest: ``{distance name: argmin_b d[b, t]}``.
      closest_is_best: ``{distance name: closest ∈ best_sources}``.
      closest_rank: ``{distance name: transfer rank of the closest task}`` (1 = best,
        average rank for ties).
      regret: ``{distance name: max accuracy − accuracy of the closest task}``.
    """

    target: str
    baselines: tuple[str, ...]
    accuracy: dict[str, float]
    loss: dict[str, float]
    ranking: tuple[str, ...]
    best_sources: tuple[str, ...]
    scratch_accuracy: float
    self_accuracy: float
    distances: dict[str, dict[str, float]]
    spearman: dict[str, float]
    spearman_loss: dict[str, float]
    closest: dict[str, str]
    closest_is_best: dict[str, bool]
    closest_rank: dict[str, float]
    regret: dict[str, float]


def transfer_targets(names: Sequence[str], targets: Sequence[str] | None = None) -> list[str]:
    """Validates the task set and returns the targets to rank baselines for (default: all).

    Raises:
      ValueError: fewer than 3 tasks (a target needs 2 baselines to rank), repeated
        task names, or a target that is not one of the tasks.

    Example:
      >>> transfer_targets(["E0", "E1", "E4"], ["E4"])
      ['E4']
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"task names repeat: {names}")
    if len(names) < 3:
        raise ValueError(
            f"transfer check needs at least 3 tasks so that each target has 2 baselines to "
            f"rank; got {len(names)}: {names}"
        )
    targets = names if targets is None else list(targets)
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise ValueError(f"unknown target task(s) {unknown}; the tasks are {names}")
    if not targets:
        raise ValueError("no target task given")
    return targets


def target_distances(
    networks: Sequence[TaskNetwork],
    datas: Sequence[TaskData],
    target: int,
    distances: Mapping[str, DistanceFn],
    *,
    options: DistanceOptions | None = None,
    key: jax.Array | None = None,
) -> dict[str, dict[str, float]]:
    """``{distance name: {b: fn(F_{b,t}, F_{t,t})}}`` for every baseline b ≠ t.

    The target's column of :func:`ldnas_jax.tasks.column_distances` on its train split,
    so with the same key ``log_det`` equals :func:`ldnas_jax.task_distances`' column t.
    Two Fishers are held at a time.

    Example:
      >>> from ldnas_jax.distances import make_task_distances
      >>> from ldnas_jax.tasks import toy_networks_and_split
      >>> nets, split = toy_networks_and_split("ABC")
      >>> datas = [TaskData(n.task, 2, split, split, split) for n in nets]
      >>> column = target_distances(nets, datas, 2, make_task_distances())
      >>> sorted(column["frechet"])
      ['A', 'B']
    """
    data = datas[target]
    return column_distances(
        [n for b, n in enumerate(networks) if b != target],
        networks[target],
        data.train,
        data.num_classes,
        distances=distances,
        options=options,
        key=key,
    )


def _score(
    accuracy: dict[str, float], loss: dict[str, float], distances: dict[str, dict[str, float]]
) -> dict[str, dict]:
    """Spearman, closest task, its rank and regret for each distance."""
    baselines = list(accuracy)
    acc = np.array([accuracy[b] for b in baselines])
    neg_loss = -np.array([loss[b] for b in baselines])
    best = acc.max()
    ranks = average_ranks(-acc)  # 1 = best transfer
    keys = ("spearman", "spearman_loss", "closest", "closest_is_best", "closest_rank", "regret")
    out = {k: {} for k in keys}
    for name, column in distances.items():
        d = np.array([column[b] for b in baselines])
        closest = baselines[int(np.argmin(d))]  # first of equals, as closest_task
        i = baselines.index(closest)
        out["spearman"][name] = spearman(-d, acc)
        out["spearman_loss"][name] = spearman(-d, neg_loss)
        out["closest"][name] = closest
        out["closest_is_best"][name] = bool(acc[i] == best)
        out["closest_rank"][name] = float(ranks[i])
        out["regret"][name] = float(best - acc[i])
    return out


def transfer_check(
    networks: Sequence[TaskNetwork],
    datas: Sequence[TaskData],
    *,
    key: jax.Array,
    distances: Mapping[str, DistanceFn] | None = None,
    targets: Sequence[str] | None = None,
    budget: FineTuneBudget | None = None,
    repeats: int = 1,
    options: DistanceOptions | None = None,
    tables: Mapping[str, np.ndarray] | None = None,
    progress: bool = True,
) -> dict[str, TargetTransfer]:
    """Ranks the baselines of each target by transfer and scores each distance against it.

    For each target t: every other task's ε-network is fine-tuned on t
    (:func:`fine_tune`), plus the from-scratch and self references; accuracies
    are averaged over ``repeats`` keys (each shared by all sources of a repeat).
    Each distance is computed from F_{b,t} and F_{t,t} (:func:`target_distances`).

    Args:
      networks: one ε-network per task, in the order of ``datas``.
      datas: the tasks' data.
      key: PRNG key; fine-tuning of target t, repeat r uses ``fold_in(fold_in(key, t), r)``
        and the Fishers keys derived from ``fold_in(key, 10_000)``.
      distances: ``{name: fn(F_{b,t}, F_{t,t}) -> float}``; default
        :func:`transfer_distances` (log-det eq. 2 at ``options``' σ and normalisation, the
        paper's unnormalised eq. 2, Fréchet, Task2Vec, cosine).
      targets: names of the targets (default: every task).
      budget: the fine-tuning budget (default :class:`FineTuneBudget`).
      repeats: fine-tuning keys to average accuracy over.
      options: Fisher estimator, label mode, σ, normalisation, Fisher examples
        (default :class:`ldnas_jax.DistanceOptions`).
      tables: ``{name: K×K D[b, t]}`` of further distances computed elsewhere (e.g.
        :func:`full_log_det_table`), scored like the others from their column t.
      progress: show tqdm bars.

    Returns:
      ``{target name: TargetTransfer}``; see :data:`SIGN_CONVENTION`.

    Example:
      Three tiny tasks with random ε-networks, one target, one epoch on 8 examples:

      >>> from ldnas_jax.data import Split
      >>> from ldnas_jax.models import make_model
      >>> rng = np.random.default_rng(0)
      >>> split = lambda: Split(rng.uniform(size=(8, 8, 8, 3)).astype(np.float32),
      ...                       np.arange(8) % 2)
      >>> datas = [TaskData(name, 2, split(), split(), split()) for name in "ABC"]
      >>> nets = [TaskNetwork(d.name, "small_vgg", 2, dict(make_model("small_vgg", 2).init(
      ...     jax.random.key(i), d.train.x[:1])), 1.0, 0.1) for i, d in enumerate(datas)]
      >>> results = transfer_check(nets, datas, key=jax.random.key(0), targets=["C"],
      ...                          budget=FineTuneBudget(max_examples=8, epochs=1, batch_size=4),
      ...                          progress=False)
      >>> results["C"].baselines, sorted(results["C"].spearman)
      (('A', 'B'), ['cosine', 'frechet', 'log_det', 'log_det_paper', 'task2vec'])
      >>> summary = summarize_transfer(results)
      >>> summary["targets"], sorted(summary["distances"]["log_det"])[:3]
      (1, ['closest_is_best', 'mean_closest_rank', 'mean_regret'])
    """
    if len(networks) != len(datas):
        raise ValueError(f"need one network per task: {len(networks)} networks, {len(datas)} tasks")
    names = [d.name for d in datas]
    mismatch = [(n.task, d) for n, d in zip(networks, names) if n.task != d]
    if mismatch:
        raise ValueError(
            f"networks and tasks are out of order (network task, data task): {mismatch}"
        )
    chosen = transfer_targets(names, targets)
    budget = FineTuneBudget() if budget is None else budget
    options = distance_options(options)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if distances is None:
        distances = transfer_distances(options)
    tables = _check_tables(tables, len(names), distances)
    if not distances and not tables:
        raise ValueError("no distance to check")
    tune = dict(budget._asdict())
    fisher_key = jax.random.fold_in(key, 10_000)  # apart from the targets' fine-tuning keys
    results = {}
    runs = len(chosen) * repeats * (len(names) + 1)
    with tqdm(total=runs, desc="transfer", disable=not progress, leave=False) as bar:
        for name in chosen:
            t = names.index(name)
            data = datas[t]
            column = (
                target_distances(networks, datas, t, distances, options=options, key=fisher_key)
                if distances
                else {}
            )
            for table_name, table in tables.items():
                column[table_name] = {n: float(table[b, t]) for b, n in enumerate(names) if b != t}
            accuracy = {n: 0.0 for n in names if n != name}
            loss = dict(accuracy)
            scratch = own = 0.0
            for r in range(repeats):
                k = jax.random.fold_in(jax.random.fold_in(key, t), r)
                for b, net in enumerate(networks):
                    result = fine_tune(net, data, key=k, **tune)
                    if b == t:
                        own += result.test_accuracy / repeats
                    else:
                        accuracy[net.task] += result.test_accuracy / repeats
                        loss[net.task] += result.test_loss / repeats
                    bar.update(1)
                scratch += (
                    train_from_scratch(networks[t].model_name, data, key=k, **tune).test_accuracy
                    / repeats
                )
                bar.update(1)
            best = max(accuracy.values())
            results[name] = TargetTransfer(
                target=name,
                baselines=tuple(accuracy),
                accuracy=accuracy,
                loss=loss,
                ranking=transfer_ranking(accuracy),
                best_sources=tuple(b for b, a in accuracy.items() if a == best),
                scratch_accuracy=scratch,
                self_accuracy=own,
                distances=column,
                **_score(accuracy, loss, column),
            )
    return results


def _check_tables(tables, k: int, distances: Mapping) -> dict[str, np.ndarray]:
    """``tables`` as float arrays, each K×K and finite, none named like a distance."""
    out = {}
    for name, table in (tables or {}).items():
        if name in distances:
            raise ValueError(f"table {name!r} is also one of the distances")
        table = np.asarray(table, np.float64)
        if table.shape != (k, k) or not np.all(np.isfinite(table)):
            raise ValueError(f"table {name!r} must be a finite {k}×{k} array, got {table.shape}")
        out[name] = table
    return out


def summarize_transfer(results: Mapping[str, TargetTransfer]) -> dict[str, Any]:
    """Per distance over all targets: mean ρ, how often closest = best source, mean regret.

    Targets whose ρ is undefined (constant accuracies or distances) are left out of
    the mean and counted in ``spearman_undefined``. A target whose baselines all
    transfer equally well ranks nothing, and any closest task would "be the best":
    ``closest_is_best``, ``mean_closest_rank`` and ``mean_regret`` count only the
    ``targets_ranked`` targets with at least two different accuracies.

    Returns:
      ``{"distances": {name: {...}}, "targets": K_t, "targets_ranked": ...,
      "best_transfer_beats_scratch": ...}``.

    Example: see :func:`transfer_check`.
    """
    if not results:
        raise ValueError("no transfer results to summarise")
    everything = list(results.values())
    ranked = [r for r in everything if len(set(r.accuracy.values())) > 1]
    mean = lambda values: float(np.mean(values)) if len(values) else None
    per_distance = {}
    for name in everything[0].spearman:
        rhos = [r.spearman[name] for r in everything]
        defined = [x for x in rhos if np.isfinite(x)]
        by_loss = [r.spearman_loss[name] for r in everything]
        per_distance[name] = {
            "mean_spearman": mean(defined),
            "spearman_defined": len(defined),
            "spearman_undefined": len(rhos) - len(defined),
            "mean_spearman_loss": mean([x for x in by_loss if np.isfinite(x)]),
            "closest_is_best": sum(r.closest_is_best[name] for r in ranked),
            "mean_closest_rank": mean([r.closest_rank[name] for r in ranked]),
            "mean_regret": mean([r.regret[name] for r in ranked]),
        }
    return {
        "distances": per_distance,
        "targets": len(everything),
        "targets_ranked": len(ranked),
        "best_transfer_beats_scratch": sum(
            max(r.accuracy.values()) > r.scratch_accuracy for r in everything
        ),
    }


BOOTSTRAP_UNIT = (
    "one (target, seed) pair: its Spearman rho over the target's baselines, or its "
    "closest-is-best hit; units are resampled with replacement, the mean taken over each "
    "resample, and the percentile interval read off"
)


def transfer_statistics(
    runs: Mapping[Any, Mapping[str, TargetTransfer]],
    *,
    domains: Mapping[str, str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Per distance over every (target, seed) unit: mean ρ with a bootstrap interval, and rates.

    Args:
      runs: ``{seed: {target: TargetTransfer}}``, one :func:`transfer_check` per seed, each
        with the same distances.
      domains: ``{task: domain}``; the same-domain rate of the closest task is given when
        the targets' baselines span more than one domain (None: not given).
      resamples, seed, level: of :func:`ldnas_jax.experiments._ranks.bootstrap_interval`;
        one seed for every distance, so distances with the same defined units are
        resampled alike.

    Returns:
      ``{"unit": BOOTSTRAP_UNIT, "resamples", "level", "bootstrap_seed", "seeds", "units",
      "distances": {name: {...}}}``, per distance:

      * ``mean_spearman``, ``spearman_interval`` (``[low, high]``, None when no unit has a
        defined ρ), over ``spearman_defined`` units (``spearman_undefined`` left out: constant
        accuracies or distances); ``mean_spearman_by_seed``;
      * ``mean_spearman_loss`` and ``spearman_loss_interval``, the same for ρ(−d, −loss);
      * ``closest_is_best``: hits over the ``ranked_units`` whose baselines do not all tie,
        ``closest_is_best_rate`` and its ``closest_is_best_interval``; ``mean_regret``;
      * ``same_domain``, ``same_domain_rate`` over all units (None without domains);
      * ``seed_agreement``: targets whose closest task is the same in every seed;
      * ``minus_reference_mean`` and ``minus_reference_interval``: the paired difference
        ρ(this distance) − ρ(``reference``) over the units where both are defined, with its
        bootstrap interval: whether one distance ranks transfer better than the reference
        on the same units, not only whether their separate intervals overlap.

    Example:
      >>> from ldnas_jax.experiments._transfer import TargetTransfer
      >>> def unit(t, rho, closest, best):
      ...     return TargetTransfer(t, ("a", "b"), {"a": 0.9, "b": 0.5}, {"a": 0.3, "b": 0.6},
      ...         ("a", "b"), ("a",), 0.5, 1.0, {"d": {"a": 0.1, "b": 0.2}}, {"d": rho},
      ...         {"d": rho}, {"d": closest}, {"d": best}, {"d": 1.0}, {"d": 0.0})
      >>> s = transfer_statistics({0: {"x": unit("x", 1.0, "a", True)},
      ...                          1: {"x": unit("x", -1.0, "b", False)}})
      >>> s["distances"]["d"]["mean_spearman"], s["distances"]["d"]["spearman_interval"]
      (0.0, [-1.0, 1.0])
      >>> s["distances"]["d"]["closest_is_best_rate"], s["distances"]["d"]["seed_agreement"]
      (0.5, 0)
    """
    units = [(s, t, r) for s, by_target in runs.items() for t, r in by_target.items()]
    if not units:
        raise ValueError("no (target, seed) units to summarise")
    names = list(units[0][2].spearman)
    if any(list(r.spearman) != names for _, _, r in units):
        raise ValueError("every unit must score the same distances")
    spanned = domains is not None and any(
        len({domains[b] for b in r.baselines}) > 1 for _, _, r in units
    )
    ranked = [(s, t, r) for s, t, r in units if len(set(r.accuracy.values())) > 1]
    interval = lambda values: (
        list(bootstrap_interval(values, seed=seed, resamples=resamples, level=level))
        if len(values)
        else None
    )
    mean = lambda values: float(np.mean(values)) if len(values) else None
    finite = lambda values: [float(v) for v in values if np.isfinite(v)]
    reference = REFERENCE_DISTANCE if REFERENCE_DISTANCE in names else names[0]
    per_distance = {}
    for name in names:
        rho = finite([r.spearman[name] for _, _, r in units])
        paired = finite([r.spearman[name] - r.spearman[reference] for _, _, r in units])
        by_loss = finite([r.spearman_loss[name] for _, _, r in units])
        hits = [float(r.closest_is_best[name]) for _, _, r in ranked]
        same = (
            [float(domains[r.closest[name]] == domains[t]) for _, t, r in units] if spanned else []
        )
        closest_by_target: dict[str, set] = {}
        for _, t, r in units:
            closest_by_target.setdefault(t, set()).add(r.closest[name])
        per_distance[name] = {
            "mean_spearman": mean(rho),
            "spearman_interval": interval(rho),
            "spearman_defined": len(rho),
            "spearman_undefined": len(units) - len(rho),
            "mean_spearman_by_seed": {
                str(s): mean(finite([r.spearman[name] for r in by_target.values()]))
                for s, by_target in runs.items()
            },
            "mean_spearman_loss": mean(by_loss),
            "spearman_loss_interval": interval(by_loss),
            "closest_is_best": int(sum(hits)),
            "ranked_units": len(ranked),
            "closest_is_best_rate": mean(hits),
            "closest_is_best_interval": interval(hits),
            "mean_regret": mean([r.regret[name] for _, _, r in ranked]),
            "same_domain": int(sum(same)) if spanned else None,
            "same_domain_rate": mean(same) if spanned else None,
            "seed_agreement": sum(len(c) == 1 for c in closest_by_target.values()),
            "minus_reference_mean": mean(paired),
            "minus_reference_interval": interval(paired),
        }
    return {
        "unit": BOOTSTRAP_UNIT,
        "reference": reference,
        "resamples": resamples,
        "level": level,
        "bootstrap_seed": seed,
        "seeds": len(runs),
        "units": len(units),
        "targets": len({t for _, t, _ in units}),
        "distances": per_distance,
    }


def transfer_from_json(record: Mapping[str, Any]) -> TargetTransfer:
    """A :class:`TargetTransfer` back from its JSON form (null ρ → NaN, lists → tuples).

    Example:
      >>> r = transfer_from_json({**{f: {} for f in TargetTransfer._fields}, "target": "t",
      ...     "baselines": ["a"], "ranking": ["a"], "best_sources": ["a"],
      ...     "scratch_accuracy": 0.5, "self_accuracy": 0.9, "spearman": {"d": None}})
      >>> r.baselines, r.spearman
      (('a',), {'d': nan})
    """
    missing = [f for f in TargetTransfer._fields if f not in record]
    if missing:
        raise ValueError(f"transfer record lacks {missing}")
    fields = {f: record[f] for f in TargetTransfer._fields}
    for f in ("baselines", "ranking", "best_sources"):
        fields[f] = tuple(fields[f])
    for f in ("spearman", "spearman_loss"):
        fields[f] = {k: float("nan") if v is None else v for k, v in fields[f].items()}
    return TargetTransfer(**fields)
