"""``python -m ldnas_jax demo``: Algorithm 1 end to end on the embedded default.

Builds a small zoo of baseline tasks, computes the K×K table of the ``--distance``
of the family and the target's column, picks the closest task, searches its space
with FUSE, trains the winner and writes ``results.json`` plus pictures to ``--out``.
With ``--seeds N`` the target gets N ε-networks and one column each: the closest
task is the argmin of their mean, reported with the share of seeds each baseline wins.

Every stage saves its product under ``--out`` as it goes, so ``--resume``
continues a killed run and ends with the results of an unbroken one::

    OUT/zoo/                          baselines, one entry at a time
    OUT/checkpoints/config.json       the arguments a resumed run must repeat
    OUT/checkpoints/target_network/   the target's ε-network (seed i > 0: target_network_seed_i/)
    OUT/checkpoints/log_dets.json     the log-det table, filled pair by pair (other
                                      distances: NAME.json, once the table is done)
    OUT/checkpoints/distances_seed_i.json   the target's column of seed i > 0
    OUT/checkpoints/ld_nas/           FUSE iterations and final-training epochs
    OUT/checkpoints/<method>/         the same for each --compare baseline
    OUT/checkpoints/timing.json       seconds per stage of each part (run, then resumes)

``results.json`` times the stages over all parts: ``stage_seconds`` sums each stage over
the first run and every ``--resume``, ``total_seconds`` is their sum and ``this_run_seconds``
the last process alone (``timing_note`` says so in the file).
"""

import argparse
import functools
import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ldnas_jax.checkpoint import write_json_atomic
from ldnas_jax.commands._epsilon_report import epsilon_line, epsilon_networks
from ldnas_jax.commands._options import (
    DISTANCE_FLAGS,
    FAMILY_FLAGS,
    RUN_FLAGS,
    SEARCH_FLAGS,
    ZOO_FLAGS,
    add_flags,
    architecture_options,
    check_tasks,
    distance_options,
    flag,
    positive_int,
    search_budget,
)
from ldnas_jax.commands._resume import (
    TIMING_NOTE,
    StageClock,
    add_resume_argument,
    check_run,
    open_run,
    resumable_log_dets,
    resumable_pairs,
    run_config,
)
from ldnas_jax.data import TaskData, load_task
from ldnas_jax.distances import closest_shares, distances_from_log_dets
from ldnas_jax.nas import Genotype
from ldnas_jax.pipeline import (
    LDNASResult,
    SearchBudget,
    check_distance,
    distance_matrices,
    distances_to_target,
    full_space_fuse_baseline,
    random_search_baseline,
    resumable_distances,
    search_architecture,
    seed_key,
    train_or_load_task_network,
)
from ldnas_jax.plots import (
    plot_accuracy_vs_params,
    plot_alpha_curves,
    plot_cells,
    plot_distance_heatmap,
)
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks import DistanceOptions
from ldnas_jax.zoo import ArchitectureOptions, ZooEntry, build_zoo, load_zoo, prebuilt_zoo_tasks

# Keys of the stages: fold_in(key(seed), STAGE).
ZOO_KEY, TARGET_KEY, SEARCH_KEY, COMPARE_KEY = 1, 2, 3, 4
FISHER_KEY = 10_000  # as the distances command's


_OPTIONS = {
    "--out": flag("output directory", "runs/demo"),
    "--seed": flag("seed of every random choice", 0, type=int),
    "--target": flag("target task (E6 is the paper's T6)", "E6"),
    "--baselines": flag(
        "baseline tasks (two per embedded domain, so it runs in minutes)",
        ["E1", "E3", "E5", "E7"],
        nargs="+",
    ),
    "--max-train": flag("training examples per task", 1200, type=positive_int),
    "--epochs": flag("ε-network epochs", 3, type=positive_int),
    **DISTANCE_FLAGS,
    **FAMILY_FLAGS,
    "--seeds": flag(
        "ε-networks of the target (seed i: the run's key folded with i); the closest task "
        "is the argmin of their mean distance, reported with each baseline's share of wins",
        1,
        type=positive_int,
    ),
    **SEARCH_FLAGS,
    "--final-epochs": flag(
        "final training epochs (E6 is 70%% 'other': fewer epochs stay at that majority rate)",
        24,
        type=positive_int,
    ),
    **ZOO_FLAGS,
    "--rebuild-zoo": flag(
        "build the baselines' zoo in this run (ε-networks on --max-train examples and "
        "--epochs, architectures by --zoo-samples x --zoo-steps random search) instead of "
        "loading the prebuilt zoo that ships with the package",
        False,
        action="store_true",
    ),
    "--compare": flag(
        "also run random search and full-space FUSE with the same budget",
        False,
        action="store_true",
    ),
}

# Listed after --resume, in the order the demo's --help has always shown.
_RUN_OPTIONS = {
    "--checkpoint-every": flag(
        "checkpoint interval: epochs of final training, FUSE iterations, distance pairs",
        1,
        type=positive_int,
    ),
    **RUN_FLAGS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, _OPTIONS)
    add_resume_argument(parser)
    add_flags(parser, _RUN_OPTIONS)


class Plan(NamedTuple):
    """A checked demo run: its data, configs and where it writes."""

    args: argparse.Namespace
    out: Path
    key: jax.Array
    baselines: list[TaskData]
    target: TaskData
    distance: str
    options: DistanceOptions
    budget: SearchBudget
    architecture: ArchitectureOptions


def check(args: argparse.Namespace) -> Plan:
    """Checks every argument and loads the tasks' data; writes nothing."""
    target_task = check_tasks([args.target], what="target")[0]
    names = [t.name for t in check_tasks(args.baselines, what="baseline tasks")]
    if target_task.name in names:
        raise ValueError(
            f"the target cannot be its own baseline: drop {target_task.name} from --baselines"
        )
    distance, options = check_distance(args.distance, distance_options(args))
    check_run(args.out, run_config(args), resume=args.resume)
    if not args.rebuild_zoo:
        missing = sorted(set(names) - set(prebuilt_zoo_tasks()))
        if missing:
            raise ValueError(
                f"baselines {missing} are not in the prebuilt zoo ({prebuilt_zoo_tasks()}); "
                "pass --rebuild-zoo to build a zoo for them"
            )
    load = lambda name: load_task(name, seed=args.seed, max_train=args.max_train)
    return Plan(
        args,
        Path(args.out),
        jax.random.key(args.seed),
        [load(name) for name in names],
        load(target_task.name),
        distance,
        options,
        search_budget(args),
        architecture_options(args),
    )


def execute(plan: Plan) -> dict:
    """The four stages, each timed, then the results and pictures."""
    checkpoints = open_run(plan.out, run_config(plan.args), resume=plan.args.resume)
    clock = StageClock(checkpoints / "timing.json", out=plan.out, resume=plan.args.resume)
    clock.stage("zoo")
    print(
        f"[1/4] zoo: ε-networks and random-search architectures for {_names(plan.baselines)}"
        + ("" if plan.args.rebuild_zoo else " (prebuilt)")
    )
    zoo = _zoo(plan)
    clock.stage("distances")
    print(
        f"[2/4] distances ({plan.distance}): F_b,t for every pair of the {len(zoo) + 1} tasks"
        + (
            f", then the target's column for {plan.args.seeds - 1} more seeds"
            if plan.args.seeds > 1
            else ""
        )
    )
    target_nets, matrix, columns = _distances(plan, zoo, checkpoints)
    clock.stage("search_and_final_training")
    print(f"[3/4] search: FUSE in the closest task's space for target {plan.target.name}")
    result = _search(plan, zoo, target_nets, columns, checkpoints)
    comparisons = {}
    if plan.args.compare:
        clock.stage("compare")
        comparisons = _compare(plan, checkpoints)
    clock.stop()
    print("[4/4] writing results")
    payload = _results(plan, zoo, matrix, result, target_nets, comparisons, clock)
    _write(plan, payload, result, comparisons)
    return payload


def run(args: argparse.Namespace) -> dict:
    """:func:`check`, then :func:`execute`."""
    return execute(check(args))


def _names(datas) -> str:
    return ", ".join(d.name for d in datas)


def _zoo(plan: Plan) -> dict[str, ZooEntry]:
    if not plan.args.rebuild_zoo:
        shipped = load_zoo()
        return {data.name: shipped[data.name] for data in plan.baselines}
    return build_zoo(
        plan.baselines,
        key=jax.random.fold_in(plan.key, ZOO_KEY),
        epochs=plan.args.epochs,
        architecture=plan.architecture,
        directory=plan.out / "zoo",
        progress=not plan.args.no_progress,
    )


def _distances(plan: Plan, zoo, checkpoints: Path):
    """N_t per seed; seed 0's K×K table (the baselines, then the target); each seed's column.

    Seed 0's column is the table's last column; seed i > 0 has its own N_t and column, with
    the target key and the Fisher key folded with i (:func:`ldnas_jax.pipeline.seed_key`).
    """
    target_key = jax.random.fold_in(plan.key, TARGET_KEY)
    fisher_key = jax.random.fold_in(plan.key, FISHER_KEY)
    target_nets = [
        train_or_load_task_network(
            plan.target,
            checkpoints / ("target_network" if seed == 0 else f"target_network_seed_{seed}"),
            key=seed_key(target_key, seed),
            epochs=plan.args.epochs,
            progress=not plan.args.no_progress,
        )
        for seed in range(plan.args.seeds)
    ]
    networks = [e.network for e in zoo.values()] + [target_nets[0]]
    matrix = _table(plan, networks, checkpoints, fisher_key)
    columns = [{name: float(matrix[i, -1]) for i, name in enumerate(zoo)}]
    for seed in range(1, plan.args.seeds):
        compute = functools.partial(
            distances_to_target,
            plan.target,
            zoo,
            target_nets[seed],
            options=plan.options,
            distance=plan.distance,
            key=seed_key(fisher_key, seed),
        )
        path = checkpoints / f"distances_seed_{seed}.json"
        columns.append(resumable_distances(path, list(zoo), compute, distance=plan.distance))
    return target_nets, matrix, columns


def _table(plan: Plan, networks, checkpoints: Path, key: jax.Array) -> np.ndarray:
    """The K×K table of the chosen distance: eq. 2 resumable pair by pair, others whole."""
    datas = plan.baselines + [plan.target]
    progress = not plan.args.no_progress
    if plan.distance == "log_det":
        log_dets = resumable_log_dets(
            checkpoints / "log_dets.json",
            networks,
            datas,
            plan.options,
            key=key,
            every=plan.args.checkpoint_every,
            progress=progress,
        )
        return distances_from_log_dets(log_dets)

    def fill(pairs):
        if not pairs:  # a resumed run: the saved table is complete
            return
        table = distance_matrices(
            networks,
            [d.train for d in datas],
            [d.num_classes for d in datas],
            [plan.distance],
            options=plan.options,
            key=key,
            progress=progress,
        )[plan.distance]
        for b, t in pairs:
            yield b, t, table[b, t]

    k = len(datas)
    return resumable_pairs(
        checkpoints / f"{plan.distance}.json", [d.name for d in datas], fill, every=k * k
    )


def _search(plan: Plan, zoo, target_nets, columns, checkpoints: Path) -> LDNASResult:
    """Algorithm 1 from the seeds' columns: closest task, FUSE, final training."""
    result = search_architecture(
        plan.target,
        zoo,
        key=jax.random.fold_in(plan.key, SEARCH_KEY),
        budget=plan.budget,
        distance=plan.distance,
        distance_options=plan.options,
        seeds=plan.args.seeds,
        target_network=target_nets,
        distances=columns,
        progress=not plan.args.no_progress,
        checkpoint_dir=checkpoints / "ld_nas",
        checkpoint_every=plan.args.checkpoint_every,
        resume=plan.args.resume,
    )
    print(format_closest(result))
    print(f"search space {list(result.space.operations)}; winner:\n{result.search.genotype}")
    return result


def format_closest(result: LDNASResult) -> str:
    """Each baseline's mean distance and share of seeds won, then the closest task.

    Example:
      >>> r = LDNASResult("T", ("A", "B"), np.array([0.3, 0.2]), "B", *[None] * 5,
      ...                 distance="cosine", seed_distances=np.array([[0.1, 0.3], [0.5, 0.1]]),
      ...                 win_shares=np.array([0.5, 0.5]))
      >>> print(format_closest(r))
      distance cosine to T, mean over 2 seeds:
        A  0.3  wins 1/2 seeds
        B  0.2  wins 1/2 seeds
      closest baseline: B (wins 1/2 seeds)
    """
    seeds = len(result.seed_distances)
    wins = {
        b: f"{share * seeds:g}/{seeds}" for b, share in zip(result.baselines, result.win_shares)
    }
    width = max(len(b) for b in result.baselines)
    lines = [
        f"distance {result.distance} to {result.target}, mean over {seeds} seed"
        + ("s:" if seeds > 1 else ":")
    ]
    lines += [
        f"  {b:<{width}}  {d:.6g}  wins {wins[b]} seed{'s' if seeds > 1 else ''}"
        for b, d in zip(result.baselines, result.distances)
    ]
    lines.append(
        f"closest baseline: {result.closest_task} (wins {wins[result.closest_task]} "
        f"seed{'s' if seeds > 1 else ''})"
    )
    return "\n".join(lines)


def _compare(plan: Plan, checkpoints: Path) -> dict[str, dict[str, Any]]:
    """Random search and full-space FUSE with the same budget and final training."""
    print("[3b] baselines with the same budget: random search, full-space FUSE")
    comparisons = {}
    for run_baseline in (random_search_baseline, full_space_fuse_baseline):
        r = run_baseline(
            plan.target,
            key=jax.random.fold_in(plan.key, COMPARE_KEY),
            budget=plan.budget,
            progress=not plan.args.no_progress,
            checkpoint_dir=checkpoints / run_baseline.__name__,
            resume=plan.args.resume,
        )
        comparisons[r.method] = {
            "genotype": json.loads(r.final.genotype.to_json()),
            "test_accuracy": r.final.test_accuracy,
            "num_params": r.final.num_params,
            "search_seconds": r.search_seconds,
        }
    return comparisons


def _results(plan: Plan, zoo, matrix, result: LDNASResult, target_nets, comparisons, clock) -> dict:
    names = [d.name for d in plan.baselines] + [plan.target.name]
    networks = [e.network for e in zoo.values()] + [target_nets[0]]
    # The target's column is the one b* was picked from: the mean over its ε-network seeds.
    matrix = np.array(matrix, dtype=np.float64)
    matrix[:-1, -1] = result.distances
    note = (
        "rows source b, columns target t; the target's column is the mean over its "
        f"{len(result.seed_distances)} ε-network seed(s), the other columns use seed 0's"
    )
    return {
        **run_record(vars(plan.args), [plan.args.seed]),
        "target": plan.target.name,
        "distance": result.distance,
        "seeds": len(result.seed_distances),
        "distances": {"names": names, "matrix": matrix, "note": note},
        "distances_to_target": dict(zip(result.baselines, result.distances)),
        "distances_to_target_per_seed": {
            b: result.seed_distances[:, i] for i, b in enumerate(result.baselines)
        },
        "win_shares": dict(zip(result.baselines, result.win_shares)),
        "closest_task": result.closest_task,
        # Each baseline's architecture and its quality gate (docs/results/zoo.md).
        "zoo": {
            "prebuilt": not plan.args.rebuild_zoo,
            "baselines": {
                name: {
                    "architecture": list(entry.genotype.normal),
                    "space": list(entry.space.operations),
                    "quality": entry.quality,
                }
                for name, entry in zoo.items()
            },
        },
        "search_space": list(result.space.operations),
        "genotype": json.loads(result.search.genotype.to_json()),
        "test_accuracy": result.final.test_accuracy,
        "num_params": result.final.num_params,
        "search_seconds": result.search_seconds,
        "search_history": result.search.history,
        "epsilon_networks": {n.task: n.test_accuracy for n in networks},
        "target_epsilon_networks_per_seed": [n.test_accuracy for n in target_nets],
        "epsilon": networks[0].epsilon,
        # Baselines' networks are the zoo's (seed 0); the target has one network per seed.
        "missed_epsilon": [
            record
            for record in epsilon_networks(
                [{n.task: n.test_accuracy for n in networks}]
                + [{plan.target.name: n.test_accuracy} for n in target_nets[1:]],
                networks[0].epsilon,
            )
            if not record["met_epsilon"]
        ],
        "comparisons": comparisons,
        "seed": plan.args.seed,
        # Over every part of the run (the first and each --resume): see TIMING_NOTE.
        "stage_seconds": clock.stage_seconds(),
        "total_seconds": clock.total_seconds(),
        "this_run_seconds": clock.this_run_seconds(),
        "run_parts": len(clock.parts),
        "timing_note": TIMING_NOTE,
    }


def _write(plan: Plan, payload: dict, result: LDNASResult, comparisons: dict) -> None:
    """``results.json`` and the pictures: distances, α per round, the cell, accuracy."""
    out = plan.out
    write_json_atomic(out / "results.json", payload)
    distances = payload["distances"]
    seeds = payload["seeds"]
    title = f"{payload['distance']} d[b, t]: rows source b, columns target t"
    shares = None
    if seeds > 1:  # the box of the target's column: the share of seeds its baseline wins
        shares = closest_shares(np.asarray(distances["matrix"])[None])
        shares[:-1, -1] = result.win_shares
        title += f"\ncolumn {plan.target.name}: mean over {seeds} seeds (others: seed 0)"
    plot_distance_heatmap(
        distances["matrix"],
        distances["names"],
        path=str(out / "distances.png"),
        title=title,
        shares=None if shares is None else {"seeds": shares},
        missed_epsilon=sorted({m["task"] for m in payload["missed_epsilon"]}),
    )
    print(epsilon_line(payload["missed_epsilon"], payload["epsilon"]))
    last = result.search.history[-1]
    plot_alpha_curves(
        np.array(last["alpha_history"]),
        genotypes=[Genotype.from_json(g) for g in last["candidates"]],
        winner=last["candidates"].index(last["winner"]),
        path=str(out / "alpha.png"),
        title=f"FUSE, last iteration: softmax(α) per round ({plan.target.name})",
    )
    plot_cells(result.search.genotype, path=str(out / "cell.png"))
    points = {"ld-nas": [(result.final.test_accuracy, result.final.num_params)]}
    points.update({m: [(c["test_accuracy"], c["num_params"])] for m, c in comparisons.items()})
    plot_accuracy_vs_params(points, path=str(out / "accuracy_vs_params.png"))
    print(
        f"test accuracy {result.final.test_accuracy:.4f}, {result.final.num_params} parameters, "
        f"search {result.search_seconds:.1f} s; wrote {out / 'results.json'}"
    )
