"""``python -m ldnas_jax distances``: the K×K task distance table over seeds.

Trains one ε-network per task and seed, computes d[b, t] for every pair (eq. 2, each
N_b's Fisher on t's training examples) and writes the mean and std over seeds as JSON
and a heatmap, with how sure each closest task is and which ε-networks missed ε:

* ``seed_shares[b, t]``: the share of seeds whose table puts b closest to t;
* ``bootstrap_shares[b, t]``: the share of ``--bootstrap`` resamples of t's Fisher examples
  in which b is closest to t *in the mean table over seeds*. The resamples are paired:
  resample r draws the same examples (:func:`ldnas_jax.tasks.bootstrap_log_dets`, chunks of
  them) for every baseline of the column, for F_{t,t} and for every seed, so the shares speak
  of the decision the report makes, the closest task of the seed-mean table;
* ``epsilon_networks`` / ``missed_epsilon``: every ε-network's test accuracy and whether it
  met accuracy >= 1 − ε; the report and the heatmap ("*") name those that missed.

Each product is saved under ``--out`` as it is made, so ``--resume`` continues a killed
run and ends with the results of an unbroken one::

    OUT/checkpoints/config.json                 the arguments a resumed run must repeat
    OUT/checkpoints/networks/seed_S/TASK/       ε-networks (or under --networks DIR)
    OUT/checkpoints/log_dets_seed_S.json        seed S's log-det table, filled pair by pair
    OUT/checkpoints/bootstrap_seed_S.json       seed S's resampled log-dets, column by column
"""

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from ldnas_jax.checkpoint import CheckpointError, write_json_atomic
from ldnas_jax.commands._epsilon_report import epsilon_line, epsilon_networks
from ldnas_jax.commands._networks import saved_or_trained_network
from ldnas_jax.commands._options import (
    DISTANCE_FLAGS,
    EPSILON_FLAGS,
    RUN_FLAGS,
    add_flags,
    check_tasks,
    count_or_zero,
    distance_options,
    epsilon_options,
    flag,
    positive_int,
)
from ldnas_jax.commands._resume import (
    add_networks_argument,
    add_resume_argument,
    check_run,
    open_run,
    resumable_log_dets,
    run_config,
)
from ldnas_jax.commands._text import format_table
from ldnas_jax.commands.sources import add_source_arguments, register_sources_from_args
from ldnas_jax.data import EMBEDDED_TASKS, TaskData, load_task
from ldnas_jax.distances import closest_shares, closest_task, distances_from_log_dets
from ldnas_jax.experiments import EpsilonOptions, train_epsilon_network
from ldnas_jax.plots import plot_distance_heatmap
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks import (
    DistanceOptions,
    TaskNetwork,
    bootstrap_column_log_dets,
    bootstrap_tables,
)

# Each seed's Fisher keys derive from fold_in(key(seed), FISHER_KEY), as in reproduce.
FISHER_KEY = 10_000
# The bootstrap's draws: fold_in(key(0), RESAMPLE_KEY), one for every seed (paired resamples).
RESAMPLE_KEY = 20_000


_OPTIONS = {
    "--tasks": flag("task names, at least two", [t.name for t in EMBEDDED_TASKS], nargs="+"),
    "--out": flag("output directory", "runs/distances"),
    "--seeds": flag("initialisation seeds 0..N-1 of the ε-networks", 2, type=positive_int),
    **EPSILON_FLAGS,
    "--max-train": flag("cap on training examples per task (0: all)", 2000, type=count_or_zero),
    **DISTANCE_FLAGS,
    "--bootstrap": flag(
        "resamples of each target's Fisher examples behind each closest task's "
        "bootstrap share (0: none); costs one more Fisher per pair and seed",
        100,
        type=count_or_zero,
    ),
    "--bootstrap-chunks": flag(
        "chunks of each target's Fisher examples that the bootstrap resamples "
        "(at most the fewest Fisher examples of a task; fewer examples lower it)",
        16,
        type=positive_int,
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, _OPTIONS)
    add_networks_argument(parser)
    add_resume_argument(parser)
    add_flags(parser, RUN_FLAGS)
    add_source_arguments(parser)


class Plan(NamedTuple):
    """A checked ``distances`` run: what to compute, from which data, where."""

    args: argparse.Namespace
    out: Path
    datas: list[TaskData]
    epsilon: EpsilonOptions
    options: DistanceOptions


def check(args: argparse.Namespace) -> Plan:
    """Checks every argument and loads the tasks' data; writes nothing."""
    register_sources_from_args(args)
    tasks = check_tasks(args.tasks, minimum=2)
    options = distance_options(args)
    check_run(args.out, run_config(args), resume=args.resume)
    datas = [load_task(task, seed=0, max_train=args.max_train or None) for task in tasks]
    return Plan(args, Path(args.out), datas, epsilon_options(args), options)


def execute(plan: Plan) -> dict:
    """Networks, then the table of every seed, then the summary files."""
    args, out, datas = plan.args, plan.out, plan.datas
    checkpoints = open_run(out, run_config(args), resume=args.resume)
    progress = not args.no_progress
    names = [d.name for d in datas]
    matrices, accuracies, resampled = [], [], []
    for seed in range(args.seeds):
        networks = [_network(plan, d, i, seed, checkpoints) for i, d in enumerate(datas)]
        accuracies.append({n.task: float(n.test_accuracy) for n in networks})
        key = jax.random.fold_in(jax.random.key(seed), FISHER_KEY)
        log_dets = resumable_log_dets(
            checkpoints / f"log_dets_seed_{seed}.json",
            networks,
            datas,
            plan.options,
            key=key,
            progress=progress,
        )
        matrices.append(distances_from_log_dets(log_dets))
        if args.bootstrap:
            path = checkpoints / f"bootstrap_seed_{seed}.json"
            resampled.append(bootstrap_tables(_bootstrap(plan, networks, path, key=key)))
        print(
            f"seed {seed}: test accuracy "
            + ", ".join(f"{k}={v:.3f}" for k, v in accuracies[-1].items())
        )
    bootstrap = np.mean(resampled, axis=0) if resampled else None
    payload = _results(plan, names, np.stack(matrices), accuracies, bootstrap)
    _write(plan, payload)
    return payload


def run(args: argparse.Namespace) -> dict:
    """:func:`check`, then :func:`execute`."""
    return execute(check(args))


def _network(plan: Plan, data: TaskData, index: int, seed: int, checkpoints: Path) -> TaskNetwork:
    """The ε-network of one task and seed (:func:`saved_or_trained_network`)."""
    return saved_or_trained_network(
        plan.args.networks,
        checkpoints,
        seed,
        data,
        model=plan.epsilon.model_name,
        train=lambda: train_epsilon_network(
            data,
            plan.epsilon,
            key=jax.random.fold_in(jax.random.key(seed), index),
            progress=not plan.args.no_progress,
        ),
    )


def bootstrap_chunks(plan: Plan) -> int:
    """``--bootstrap-chunks``, lowered to the fewest Fisher examples of a task.

    Example:
      >>> from types import SimpleNamespace as S
      >>> from ldnas_jax.data import Split
      >>> data = S(train=Split(np.zeros((6, 2, 2, 1)), np.zeros(6, int)))
      >>> bootstrap_chunks(S(args=S(bootstrap_chunks=16), datas=[data],
      ...                    options=DistanceOptions(max_examples=4)))
      4
    """
    cap = plan.options.max_examples
    fewest = min(len(d.train.x) if cap is None else min(len(d.train.x), cap) for d in plan.datas)
    return min(plan.args.bootstrap_chunks, fewest)


def _bootstrap(plan: Plan, networks, path: Path, *, key: jax.Array) -> np.ndarray:
    """One seed's (R, K, K) resampled log-dets, each column saved to ``path`` when done.

    The draws come from ``RESAMPLE_KEY``, the same for every seed; the Fishers from the
    seed's ``key``, as its table's.
    """
    datas, resamples, chunks = plan.datas, plan.args.bootstrap, bootstrap_chunks(plan)
    names = [d.name for d in datas]
    header = {"names": names, "resamples": resamples, "chunks": chunks}
    saved = _saved_bootstrap(path, header) if path.exists() else {**header, "columns": {}}
    for t, name in enumerate(names):
        if name in saved["columns"]:
            continue
        column = bootstrap_column_log_dets(
            networks,
            [d.train for d in datas],
            [d.num_classes for d in datas],
            t,
            options=plan.options,
            key=key,
            resample_key=jax.random.fold_in(jax.random.key(0), RESAMPLE_KEY),
            resamples=resamples,
            chunks=chunks,
        )
        saved["columns"][name] = column.tolist()
        write_json_atomic(path, saved)
    return np.stack([np.array(saved["columns"][name]) for name in names], axis=2)


def _saved_bootstrap(path: Path, header: dict) -> dict:
    """The bootstrap columns a run saved at ``path``, checked against this run's."""
    try:
        saved = json.loads(path.read_text())
        found = {k: saved[k] for k in header}
        columns = saved["columns"]
        shape = (header["resamples"], len(header["names"]))
        if not isinstance(columns, dict) or any(np.shape(c) != shape for c in columns.values()):
            raise ValueError(f"columns are not {shape} tables")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"bootstrap checkpoint {path} is corrupt: {err}") from err
    if found != header:
        raise CheckpointError(f"{path} holds {found}, not {header}; use another --out")
    return saved


def _results(plan: Plan, names, stack: np.ndarray, accuracies, bootstrap) -> dict:
    """The JSON of the run; ``bootstrap`` is the (R, K, K) seed-mean tables, or None."""
    mean, std = stack.mean(0), stack.std(0)
    closest = {t: closest_task(mean, t, names=names) for t in names}
    seed_shares = closest_shares(stack)
    boot_shares = None if bootstrap is None else closest_shares(bootstrap)
    epsilon = plan.epsilon.epsilon
    networks = epsilon_networks(accuracies, epsilon)
    return {
        **run_record(vars(plan.args), range(plan.args.seeds)),
        "names": names,
        "mean": mean,
        "std": std,
        "per_seed": stack,
        "closest": closest,
        "seed_shares": seed_shares,
        "bootstrap_shares": boot_shares,
        "bootstrap": {
            "resamples": plan.args.bootstrap,
            "chunks": bootstrap_chunks(plan) if plan.args.bootstrap else None,
            "of": "the seed-mean table; resample r draws the same chunks of each target's "
            "Fisher examples for every baseline, F_tt and every seed",
        },
        "summary": {
            t: {
                "closest": closest[t],
                "distance": float(mean[names.index(closest[t]), names.index(t)]),
                "seed_share": float(seed_shares[names.index(closest[t]), names.index(t)]),
                "bootstrap_share": None
                if boot_shares is None
                else float(boot_shares[names.index(closest[t]), names.index(t)]),
            }
            for t in names
        },
        "test_accuracy": accuracies,
        "epsilon": epsilon,
        "epsilon_approximation": [
            {t: a >= 1 - epsilon for t, a in acc.items()} for acc in accuracies
        ],
        "epsilon_networks": networks,
        "missed_epsilon": [n for n in networks if not n["met_epsilon"]],
    }


def closest_line(target: str, summary: dict, seeds: int) -> str:
    """The report's line for one target: its closest baseline and how sure that is.

    Example:
      >>> closest_line("E3", {"closest": "E1", "distance": 0.0123, "seed_share": 2 / 3,
      ...                     "bootstrap_share": 0.71}, 3)
      'closest baseline to E3: E1 (d = 0.0123; wins 2/3 seeds, 71% of resamples)'
    """
    wins = summary["seed_share"] * seeds
    count = f"{round(wins)}" if abs(wins - round(wins)) < 1e-9 else f"{wins:.1f}"
    sure = f"wins {count}/{seeds} seed{'s' if seeds > 1 else ''}"
    if summary["bootstrap_share"] is not None:
        sure += f", {100 * summary['bootstrap_share']:.0f}% of resamples"
    d = f"d = {summary['distance']:.4g}"
    return f"closest baseline to {target}: {summary['closest']} ({d}; {sure})"


def _write(plan: Plan, payload: dict) -> None:
    out, args, names = plan.out, plan.args, payload["names"]
    write_json_atomic(out / "distances.json", payload)
    shares = {"seeds": payload["seed_shares"]}
    if payload["bootstrap_shares"] is not None:
        shares["resamples"] = payload["bootstrap_shares"]
    plot_distance_heatmap(
        payload["mean"],
        names,
        std=payload["std"],
        path=str(out / "distances.png"),
        title=f"d[b,t] mean ± std over {args.seeds} seeds ({args.estimator}, σ={args.sigma})",
        shares=shares,
        missed_epsilon=sorted({m["task"] for m in payload["missed_epsilon"]}),
    )
    print(format_table(payload["mean"], names))
    for t in names:
        print(closest_line(t, payload["summary"][t], args.seeds))
    print(epsilon_line(payload["missed_epsilon"], payload["epsilon"]))
    print(f"wrote {out / 'distances.json'} and {out / 'distances.png'}")
