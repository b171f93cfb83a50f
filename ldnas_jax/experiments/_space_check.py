"""The premise of LD-NAS, measured: does the closest baseline's space give the better network?

For a target t, FUSE searches the space S_b of every baseline b of a zoo at one budget and
over several seeds, and each winner is trained the same way; controls search the full space
and random subsets of the operations of the same sizes. Then, for each distance of the
family, the check asks three things of the baseline spaces:

* ρ: Spearman's correlation of −d[b, t] with the mean accuracy of S_b (> 0: closer tasks
  give better spaces);
* regret: the best baseline space's mean accuracy minus the chosen space's (chosen:
  argmin_b d[b, t]); 0 when the distance picks the best space;
* the chosen space's rank among the baseline spaces (1: best).

The intervals resample the seeds (paired: one resample draws the same seeds for every
space), so they say how much the answer moves with other seeds of the search and the
final training, at the zoo and distances given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from ldnas_jax.checkpoint import CheckpointError, check_fingerprint, write_json_atomic
from ldnas_jax.data import TaskData
from ldnas_jax.experiments._ranks import bootstrap_interval, spearman
from ldnas_jax.experiments._scores import scores_on_test
from ldnas_jax.nas import SEARCHABLE_OPERATIONS, SearchSpace
from ldnas_jax.pipeline import (
    DistanceOptions,
    SearchBudget,
    distances_to_target,
    search_and_train,
)
from ldnas_jax.resumable import JsonCheckpoint, LoopState, Step, run_resumable
from ldnas_jax.zoo import ZooEntry

__all__ = [
    "SPACE_CHECK_DISTANCES",
    "control_contrasts",
    "control_spaces",
    "distance_contrasts",
    "distance_verdicts",
    "fuse_then_train",
    "space_check",
    "space_check_report",
    "space_check_rows",
    "space_check_so_far",
    "space_summary",
]

# The distances the check judges: the library's default, the paper's eq. 2 (absolute σ, no
# normalisation), Fréchet and Task2Vec, as (distance name, options).
SPACE_CHECK_DISTANCES = {
    "log_det": ("log_det", DistanceOptions()),
    "log_det_eq2": ("log_det", DistanceOptions(normalize=None)),
    "frechet": ("frechet", DistanceOptions()),
    "task2vec": ("task2vec", DistanceOptions()),
}


def control_spaces(
    baseline_spaces: Mapping[str, SearchSpace], *, count: int, seed: int
) -> dict[str, SearchSpace]:
    """``count`` random subsets of the searchable operations, sized like the baseline spaces.

    Subset i takes the size of baseline space i (cycling), so the controls match the
    baselines' sizes; cell structure as the first baseline space's.

    Example:
      >>> spaces = {"A": SearchSpace(("identity", "sep_conv_3x3"), shared_cells=True)}
      >>> controls = control_spaces(spaces, count=3, seed=0)
      >>> [len(s.operations) for s in controls.values()], list(controls)
      ([2, 2, 2], ['random_0', 'random_1', 'random_2'])
    """
    if count < 1 or not baseline_spaces:
        raise ValueError("control_spaces needs at least one baseline space and count >= 1")
    spaces = list(baseline_spaces.values())
    rng = np.random.default_rng(seed)
    controls = {}
    for i in range(count):
        size = len(spaces[i % len(spaces)].operations)
        picked = set(rng.choice(len(SEARCHABLE_OPERATIONS), size, replace=False).tolist())
        operations = tuple(op for k, op in enumerate(SEARCHABLE_OPERATIONS) if k in picked)
        controls[f"random_{i}"] = SearchSpace(
            operations, spaces[0].num_nodes, shared_cells=spaces[0].shared_cells
        )
    return controls


def space_check_rows(
    spaces: Mapping[str, SearchSpace],
    search_and_train: Callable[[SearchSpace, jax.Array], dict],
    *,
    key: jax.Array,
    seeds: Sequence[int],
    config: dict | None = None,
    store: JsonCheckpoint | None = None,
    extra: dict | None = None,
) -> list[dict]:
    """One row per (space, seed): ``search_and_train(space, key)``'s accuracies.

    The key of (space, seed) is ``fold_in(key, seed)``, the same for every space, so the
    spaces of one seed differ only in their operations. The rows run seed by seed, each
    seed's spaces in order, and ``store`` (with ``extra`` fields beside the rows) is
    rewritten after each one, so a rerun with the same ``store`` (``resume=True``) runs
    only the missing rows; one of another ``config`` (or other spaces or seeds) is refused.

    Example:
      >>> fake = lambda space, key: {"test_accuracy": len(space.operations) / 10,
      ...                            "balanced_accuracy": 0.5}
      >>> spaces = {"A": SearchSpace(("identity",)), "B": SearchSpace(("identity", "max_pool_3x3"))}
      >>> rows = space_check_rows(spaces, fake, key=jax.random.key(0), seeds=[0])
      >>> [(r["space"], r["test_accuracy"]) for r in rows]
      [('A', 0.1), ('B', 0.2)]
    """
    order = [(int(seed), name) for seed in seeds for name in spaces]
    fingerprint = {
        "spaces": {name: list(space.operations) for name, space in spaces.items()},
        "seeds": [int(seed) for seed in seeds],
        **(config or {}),
    }

    def row(index: int, state: LoopState) -> Step:
        seed, name = order[index]
        outcome = search_and_train(spaces[name], jax.random.fold_in(key, seed))
        return Step(None, {"space": name, "seed": seed, **outcome})

    final = run_resumable(
        row,
        LoopState(None, [], dict(extra or {})),
        steps=len(order),
        fingerprint=fingerprint,
        store=store,
        description="space check",
        unit="rows",
    )
    return final.history


def _complete_seeds(rows: Sequence[dict], names) -> list[int]:
    """The seeds, sorted, with a row for every space of ``names``."""
    done = {(row["space"], row["seed"]) for row in rows}
    return sorted(s for s in {row["seed"] for row in rows} if all((n, s) in done for n in names))


def _accuracy_table(rows: Sequence[dict], names: Sequence[str], metric: str):
    """(spaces, seeds) array of ``metric``; the seeds every space has a row for."""
    by = {(row["space"], row["seed"]): row[metric] for row in rows}
    seeds = _complete_seeds(rows, names)
    if not seeds:
        raise ValueError("no seed has a row for every space")
    return np.array([[by[(n, s)] for s in seeds] for n in names], np.float64), seeds


def space_summary(rows: Sequence[dict], *, seed: int = 0) -> dict:
    """Per space: mean test and balanced accuracy over seeds, with 95 % bootstrap intervals.

    Example:
      >>> rows = [{"space": "A", "seed": s, "test_accuracy": a, "balanced_accuracy": a}
      ...         for s, a in enumerate([0.5, 0.7])]
      >>> space_summary(rows)["A"]["test_accuracy"]["mean"]
      0.6
    """
    summary = {}
    for name in dict.fromkeys(row["space"] for row in rows):
        summary[name] = {}
        for metric in ("test_accuracy", "balanced_accuracy"):
            values = [row[metric] for row in rows if row["space"] == name]
            summary[name][metric] = {
                "mean": float(np.mean(values)),
                "interval_95": list(bootstrap_interval(values, seed=seed)),
                "n": len(values),
            }
    return summary


def distance_verdicts(
    rows: Sequence[dict],
    distances: Mapping[str, Mapping[str, float]],
    *,
    metric: str = "test_accuracy",
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Per distance: ρ(−d, accuracy of S_b), the regret of its choice and the chosen rank.

    Args:
      rows: rows of :func:`space_check_rows`; the baseline spaces are named by baseline.
      distances: ``{distance name: {baseline: d[b, t]}}``, the same baselines for each.
      metric: the accuracy compared.
      resamples, seed: the paired bootstrap over seeds.

    Returns:
      ``{distance: {"chosen", "rho", "rho_interval_95", "regret", "regret_interval_95",
      "chosen_rank", "baselines", "seeds"}}``; a ρ interval is None when fewer than 3
      resamples give a ρ (constant accuracies).

    Example:
      >>> rows = [{"space": b, "seed": s, "test_accuracy": a + 0.01 * s}
      ...         for s in range(3) for b, a in [("A", 0.9), ("B", 0.8), ("C", 0.7)]]
      >>> v = distance_verdicts(rows, {"d": {"A": 0.1, "B": 0.2, "C": 0.3}})["d"]
      >>> v["chosen"], v["rho"], v["regret"], v["chosen_rank"]
      ('A', 1.0, 0.0, 1)
    """
    verdicts = {}
    for name, column in distances.items():
        baselines = list(column)
        table, seeds = _accuracy_table(rows, baselines, metric)
        d = np.array([column[b] for b in baselines], np.float64)
        chosen = int(np.argmin(d))
        rho, regret, rhos, regrets = _measured(table, d, _seed_draws(len(seeds), resamples, seed))
        order = np.argsort(-table.mean(axis=1), kind="stable")
        finite = rhos[np.isfinite(rhos)]
        verdicts[name] = {
            "chosen": baselines[chosen],
            "rho": rho,
            "rho_interval_95": _percentiles(finite) if len(finite) >= 3 else None,
            "regret": regret,
            "regret_interval_95": _percentiles(regrets),
            "chosen_rank": int(np.where(order == chosen)[0][0]) + 1,
            "baselines": len(baselines),
            "seeds": seeds,
        }
    return verdicts


def _seed_draws(num_seeds: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, num_seeds) indices of seeds drawn with replacement; the same for every distance."""
    return np.random.default_rng(seed).integers(0, num_seeds, (resamples, num_seeds))


def _measured(table: np.ndarray, d: np.ndarray, draws: np.ndarray):
    """ρ(−d, mean accuracy) and the regret of argmin d: on the seeds' means, then per resample."""
    chosen = int(np.argmin(d))
    means = table.mean(axis=1)
    rhos, regrets = [], []
    for draw in draws:
        resampled = table[:, draw].mean(axis=1)
        rhos.append(spearman(-d, resampled))
        regrets.append(resampled.max() - resampled[chosen])
    rho, regret = spearman(-d, means), float(means.max() - means[chosen])
    return rho, regret, np.array(rhos, np.float64), np.array(regrets, np.float64)


def distance_contrasts(
    rows: Sequence[dict],
    distances: Mapping[str, Mapping[str, float]],
    *,
    reference: str = "log_det",
    metric: str = "test_accuracy",
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Each distance minus ``reference`` in ρ and regret, paired on the same seed resamples.

    The intervals of :func:`distance_verdicts` overlap easily with few seeds; whether one
    distance picks better spaces than another is the paired question: on every resample of
    the seeds both are computed on the same accuracies, and the difference is kept.

    Returns:
      ``{distance: {"rho_minus_reference", "rho_interval_95", "regret_minus_reference",
      "regret_interval_95"}}`` for every distance but ``reference`` (a positive ρ difference
      and a negative regret difference favour the distance); a ρ interval is None when fewer
      than 3 resamples define both ρ.

    Example:
      >>> rows = [{"space": b, "seed": s, "test_accuracy": a + 0.01 * s}
      ...         for s in range(3) for b, a in [("A", 0.9), ("B", 0.8), ("C", 0.7)]]
      >>> c = distance_contrasts(rows, {"ref": {"A": 0.3, "B": 0.2, "C": 0.1},
      ...                               "d": {"A": 0.1, "B": 0.2, "C": 0.3}}, reference="ref")
      >>> c["d"]["rho_minus_reference"], round(c["d"]["regret_minus_reference"], 6)
      (2.0, -0.2)
    """
    baselines = list(_reference_column(distances, reference))
    table, seeds = _accuracy_table(rows, baselines, metric)
    draws = _seed_draws(len(seeds), resamples, seed)

    def measured(column):
        return _measured(table, np.array([column[b] for b in baselines], np.float64), draws)

    rho_ref, regret_ref, rhos_ref, regrets_ref = measured(distances[reference])
    contrasts = {}
    for name, column in distances.items():
        if name == reference:
            continue
        rho, regret, rhos, regrets = measured(column)
        rho_diffs = rhos - rhos_ref
        rho_diffs = rho_diffs[np.isfinite(rho_diffs)]
        contrasts[name] = {
            "rho_minus_reference": float(rho - rho_ref),
            "rho_interval_95": _percentiles(rho_diffs) if len(rho_diffs) >= 3 else None,
            "regret_minus_reference": float(regret - regret_ref),
            "regret_interval_95": _percentiles(regrets - regrets_ref),
        }
    return contrasts


def _reference_column(distances: Mapping[str, Mapping[str, float]], reference: str):
    if reference not in distances:
        raise ValueError(f"reference {reference!r} is not one of the distances {list(distances)}")
    return distances[reference]


def control_contrasts(
    rows: Sequence[dict],
    distances: Mapping[str, Mapping[str, float]],
    *,
    reference: str = "log_det",
    metric: str = "test_accuracy",
    seed: int = 0,
) -> dict:
    """The space ``reference`` picks minus every control space, seed by seed.

    The controls are the spaces with rows that are no baseline of ``distances`` (the full
    space and the random subsets). Only seeds with a row for both spaces are paired; the
    interval is :func:`~ldnas_jax.experiments._ranks.bootstrap_interval` of the differences.

    Returns:
      ``{"chosen": baseline, "minus": {control: {"seeds", "differences", "mean",
      "interval_95"}}}``; a positive mean favours the chosen space.

    Example:
      >>> rows = [{"space": n, "seed": s, "test_accuracy": a + 0.01 * s}
      ...         for s in range(2) for n, a in [("A", 0.9), ("B", 0.8), ("full", 0.85)]]
      >>> c = control_contrasts(rows, {"log_det": {"A": 0.1, "B": 0.2}})
      >>> c["chosen"], [round(x, 6) for x in c["minus"]["full"]["differences"]]
      ('A', [0.05, 0.05])
    """
    column = _reference_column(distances, reference)
    chosen = min(column, key=column.__getitem__)
    by = {(row["space"], row["seed"]): row[metric] for row in rows}
    minus = {}
    for control in dict.fromkeys(row["space"] for row in rows):
        if control in column:
            continue
        seeds = sorted(s for (n, s) in by if n == control and (chosen, s) in by)
        if not seeds:
            continue
        differences = [by[(chosen, s)] - by[(control, s)] for s in seeds]
        minus[control] = {
            "seeds": seeds,
            "differences": differences,
            "mean": float(np.mean(differences)),
            "interval_95": list(bootstrap_interval(differences, seed=seed)),
        }
    return {"chosen": chosen, "minus": minus}


def _percentiles(values) -> list[float]:
    low, high = np.quantile(np.asarray(values, np.float64), [0.025, 0.975])
    return [float(low), float(high)]


def fuse_then_train(
    target: TaskData, budget: SearchBudget, *, progress: bool = False
) -> Callable[[SearchSpace, jax.Array], dict]:
    """:func:`~ldnas_jax.pipeline.search_and_train` (stage 4 of Algorithm 1) as a space scorer.

    The returned ``run(space, key)`` gives the winner's test accuracy, balanced accuracy,
    genotype and parameter count, as every space of the check is searched and trained.
    """

    def run(space: SearchSpace, key: jax.Array) -> dict:
        final = search_and_train(target, space, key=key, budget=budget, progress=progress).final
        scores = {
            **scores_on_test(final.model, final.variables, target),
            "genotype": final.genotype.to_json(),
            "num_params": final.num_params,
        }
        # Every winner is a new network with its own compiled programs, which JAX keeps for
        # the life of the process: an E6 check died after 22 rows with LLVM's "Cannot
        # allocate memory" (the host's memory-map limit). Dropping them per row bounds it.
        jax.clear_caches()
        return scores

    return run


def space_check(
    target: TaskData,
    zoo: Mapping[str, ZooEntry],
    *,
    key: jax.Array,
    target_network=None,
    budget: SearchBudget = SearchBudget(),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    controls: int = 3,
    path: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Searches the space of every baseline of ``zoo`` (and the controls) for ``target``.

    Args:
      target: the target task t.
      zoo: the baselines b (an entry named like the target is its own ε-network, not a
        baseline).
      key: PRNG key; seed s searches every space with ``fold_in(key, s)``.
      target_network: N_t; default the zoo's entry for the target.
      budget: the search and final-training budget of every space.
      seeds: the seeds of the search and final training.
      controls: random operation subsets of the baseline spaces' sizes (>= 3 advised).
      path: a JSON file the rows are saved to after each one; a rerun resumes from it
        and refuses one of another configuration.
      progress: show progress bars.

    Returns:
      :func:`space_check_report`: ``{"config", "distances", "rows", "seeds_reported",
      "complete", "summary", "verdicts", "contrasts", "controls"}``: d[b, t] per distance
      of :data:`SPACE_CHECK_DISTANCES`, the (space, seed) rows, :func:`space_summary`,
      :func:`distance_verdicts`, :func:`distance_contrasts` against the default ``log_det``,
      and :func:`control_contrasts` (the default's pick minus each control), each for test
      and balanced accuracy.
    """
    baselines = {name: entry for name, entry in zoo.items() if name != target.name}
    if len(baselines) < 2:
        raise ValueError(f"the space check needs at least 2 baselines, got {list(baselines)}")
    if target_network is None:
        if target.name not in zoo:
            raise ValueError(f"no ε-network for target {target.name!r}: pass target_network")
        target_network = zoo[target.name].network
    distances = {
        label: distances_to_target(
            target, baselines, target_network, options=options, distance=name, key=key
        )
        for label, (name, options) in SPACE_CHECK_DISTANCES.items()
    }
    spaces = {name: entry.space for name, entry in baselines.items()}
    spaces["full"] = SearchSpace(
        SEARCHABLE_OPERATIONS,
        next(iter(spaces.values())).num_nodes,
        shared_cells=budget.shared_cells,
    )
    spaces.update(
        control_spaces({b: e.space for b, e in baselines.items()}, count=controls, seed=0)
    )
    return space_check_of_spaces(
        target,
        spaces,
        distances,
        key=key,
        budget=budget,
        seeds=seeds,
        path=path,
        progress=progress,
    )


def space_check_of_spaces(
    target: TaskData,
    spaces: Mapping[str, SearchSpace],
    distances: Mapping[str, Mapping[str, float]],
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    path: str | Path | None = None,
    progress: bool = True,
    earlier: Mapping | None = None,
) -> dict:
    """:func:`space_check` over given spaces at given distances, with no zoo.

    The rows depend on the spaces, the target, the budget and the key alone; the zoo gives
    only the spaces and d[b, t]. So an earlier check's record (its JSON's ``"check"``
    spaces and ``"distances"``) suffices to add seeds to it, or to finish it, once its zoo
    is gone.

    Args:
      target, key, budget, seeds, path, progress: as :func:`space_check`.
      spaces: every space of the check by name: the baselines (the names of
        ``distances``' columns) and the controls.
      distances: ``{distance name: {baseline: d[b, t]}}``.
      earlier: an earlier check's record (its JSON's ``"check"`` and ``"rows"``), whose
        configuration must be this one's but for the seeds. Its rows of ``seeds`` are
        written to ``path`` when it holds no run yet, so only the missing rows run; they
        must be the first rows of the check's order (seed by seed, the spaces in order).

    Returns:
      :func:`space_check_report` of the rows.

    Raises:
      CheckpointError: ``earlier`` ran another configuration (the message names the fields).
      ValueError: ``earlier`` without ``path``, or its rows are not the check's first rows.
    """
    config = {
        "target": target.name,
        "train_shape": list(target.train.x.shape),
        "key": np.asarray(jax.random.key_data(key)).ravel().tolist(),
        "budget": budget.record(),
        "spaces": {name: list(space.operations) for name, space in spaces.items()},
        "seeds": list(seeds),
    }
    if earlier is not None:
        if path is None:
            raise ValueError("an earlier check needs a path to write its rows to")
        if not Path(path).exists():
            _write_earlier_rows(path, config, distances, earlier)
    store = None if path is None else JsonCheckpoint(path, True, "config", "rows")
    rows = space_check_rows(
        spaces,
        fuse_then_train(target, budget, progress=progress),
        key=key,
        seeds=seeds,
        config=config,
        store=store,
        extra={"distances": dict(distances)},
    )
    return space_check_report(config, distances, rows)


def _write_earlier_rows(path, config: dict, distances: Mapping, earlier: Mapping) -> None:
    """Starts ``path`` with the earlier rows of ``config``'s seeds, as a resumed run reads it."""
    check_fingerprint({**earlier["check"], "seeds": config["seeds"]}, config, "the earlier check")
    kept = [row for row in earlier["rows"] if row["seed"] in config["seeds"]]
    order = [(seed, name) for seed in config["seeds"] for name in config["spaces"]]
    if [(row["seed"], row["space"]) for row in kept] != order[: len(kept)]:
        raise ValueError(
            "the earlier rows are not the first rows of this check (seed by seed, spaces in "
            f"the order {list(config['spaces'])}): pass seeds that begin with the earlier ones"
        )
    record = {"config": config, "distances": dict(distances), "rows": kept}
    write_json_atomic(path, {**record, "stopped": False, "seconds": 0.0})


def space_check_report(config: dict, distances: Mapping, rows: Sequence[dict]) -> dict:
    """The statistics of :func:`space_check` over the seeds with a row for every space.

    A run still going (or stopped) has some seeds only partly done; the statistics leave
    those out, so every space is compared on the same seeds. ``"seeds_reported"`` lists the
    seeds used and ``"complete"`` says whether they are all of ``config["seeds"]``.

    Example:
      >>> config = {"spaces": {"A": ["identity"], "B": ["max_pool_3x3"]}, "seeds": [0, 1]}
      >>> rows = [{"space": n, "seed": s, "test_accuracy": 0.5, "balanced_accuracy": 0.5}
      ...         for s, n in [(0, "A"), (0, "B"), (1, "A")]]
      >>> report = space_check_report(config, {"log_det": {"A": 0.1, "B": 0.2}}, rows)
      >>> report["seeds_reported"], report["complete"], report["summary"]["A"]["test_accuracy"]["n"]
      ([0], False, 1)
    """
    complete = set(_complete_seeds(rows, config["spaces"]))
    reported = [s for s in config["seeds"] if s in complete]
    if not reported:
        raise ValueError("no seed has a row for every space yet: nothing to report")
    used = [row for row in rows if row["seed"] in reported]
    metrics = ("test_accuracy", "balanced_accuracy")
    return {
        "config": config,
        "distances": dict(distances),
        "rows": list(rows),
        "seeds_reported": reported,
        "complete": reported == list(config["seeds"]),
        "summary": space_summary(used),
        "verdicts": {m: distance_verdicts(used, distances, metric=m) for m in metrics},
        "contrasts": {m: distance_contrasts(used, distances, metric=m) for m in metrics},
        "controls": {m: control_contrasts(used, distances, metric=m) for m in metrics},
    }


def space_check_so_far(path: str | Path) -> dict:
    """:func:`space_check_report` of the rows saved in ``path`` (a run's ``rows.json``),
    running nothing: the report of a run still going or stopped.

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: the file is not a space check's rows.
    """
    try:
        saved = json.loads(Path(path).read_text())
        return space_check_report(saved["config"], saved["distances"], saved["rows"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} holds no space check rows: {err!r}") from err
