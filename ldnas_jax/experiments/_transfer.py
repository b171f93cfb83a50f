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

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from ldnas_jax.data import TaskData
from ldnas_jax.distances._registry import make_task_distances
from ldnas_jax.experiments._fine_tune import FineTuneBudget, fine_tune, train_from_scratch
from ldnas_jax.experiments._ranks import average_ranks, spearman, transfer_ranking

# The rest of what the old module path ``ldnas_jax.transfer`` (an alias of this one) held.
from ldnas_jax.experiments._fine_tune import FineTuneResult  # noqa: F401
from ldnas_jax.experiments._heads import head_paths, replace_head  # noqa: F401
from ldnas_jax.tasks._networks import TaskNetwork
from ldnas_jax.tasks._options import DistanceOptions, distance_options
from ldnas_jax.tasks._pairs import column_distances

SIGN_CONVENTION = (
    "spearman = rho(-d[b, t], transfer accuracy of b) over the baselines b != t of each "
    "target t: +1 means a smaller distance always goes with better transfer"
)

DistanceFn = Callable[[Any, Any], float]


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
      >>> from ldnas_jax.data import Split
      >>> from ldnas_jax.models import make_model
      >>> from ldnas_jax.distances import make_task_distances
      >>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
      >>> split = Split(x, np.array([0, 1, 0, 1]))
      >>> datas = [TaskData(name, 2, split, split, split) for name in "ABC"]
      >>> nets = [TaskNetwork(d.name, "small_vgg", 2, dict(make_model("small_vgg", 2).init(
      ...     jax.random.key(i), x[:1])), 1.0, 0.1) for i, d in enumerate(datas)]
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
      distances: ``{name: fn(F_{b,t}, F_{t,t}) -> float}``; default every distance of
        :func:`ldnas_jax.distances.make_task_distances` (log-det eq. 2, Fréchet,
        Task2Vec, cosine) with ``options.sigma`` and ``options.normalize``.
      targets: names of the targets (default: every task).
      budget: the fine-tuning budget (default :class:`FineTuneBudget`).
      repeats: fine-tuning keys to average accuracy over.
      options: Fisher estimator, label mode, σ, normalisation, Fisher examples
        (default :class:`ldnas_jax.DistanceOptions`).
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
      (('A', 'B'), ['cosine', 'frechet', 'log_det', 'task2vec'])
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
        distances = make_task_distances(sigma=options.sigma, normalize=options.normalize)
    if not distances:
        raise ValueError("no distance to check")
    tune = dict(budget._asdict())
    fisher_key = jax.random.fold_in(key, 10_000)  # apart from the targets' fine-tuning keys
    results = {}
    runs = len(chosen) * repeats * (len(names) + 1)
    with tqdm(total=runs, desc="transfer", disable=not progress, leave=False) as bar:
        for name in chosen:
            t = names.index(name)
            data = datas[t]
            column = target_distances(
                networks, datas, t, distances, options=options, key=fisher_key
            )
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
