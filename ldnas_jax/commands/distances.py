"""``python -m ldnas_jax distances``: the K×K task distance table over seeds.

Trains one ε-network per task and seed, computes d[b, t] for every pair (eq. 2, each
N_b's Fisher on t's training examples) and writes the mean and std over seeds as JSON
and a heatmap. Each product is saved under ``--out`` as it is made, so ``--resume``
continues a killed run and ends with the results of an unbroken one::

    OUT/checkpoints/config.json                 the arguments a resumed run must repeat
    OUT/checkpoints/networks/seed_S/TASK/       ε-networks (or under --networks DIR)
    OUT/checkpoints/log_dets_seed_S.json        seed S's log-det table, filled pair by pair
"""

import argparse
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from ldnas_jax.checkpoint import write_json_atomic
from ldnas_jax.commands._options import (
    DISTANCE_FLAGS,
    EPSILON_FLAGS,
    RUN_FLAGS,
    add_flags,
    check_tasks,
    count_or_zero,
    distance_options,
    epsilon_options,
    positive_int,
)
from ldnas_jax.commands._resume import (
    add_networks_argument,
    add_resume_argument,
    check_run,
    network_directory,
    open_run,
    resumable_log_dets,
    run_config,
    saved_network,
)
from ldnas_jax.commands._text import format_table
from ldnas_jax.commands.sources import add_source_arguments, register_sources_from_args
from ldnas_jax.data import EMBEDDED_TASKS, TaskData, load_task
from ldnas_jax.distances._log_det import closest_task, distances_from_log_dets
from ldnas_jax.experiments._reproduce import EpsilonOptions
from ldnas_jax.plots import plot_distance_heatmap
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks._networks import TaskNetwork, save_task_network, train_task_network
from ldnas_jax.tasks._options import DistanceOptions

# Each seed's Fisher keys derive from fold_in(key(seed), FISHER_KEY), as in reproduce.
FISHER_KEY = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[t.name for t in EMBEDDED_TASKS],
        help="task names, at least two",
    )
    parser.add_argument("--out", default="runs/distances", help="output directory")
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=2,
        help="initialisation seeds 0..N-1 of the ε-networks",
    )
    add_flags(parser, EPSILON_FLAGS)
    parser.add_argument(
        "--max-train",
        type=count_or_zero,
        default=2000,
        help="cap on training examples per task (0: all)",
    )
    add_flags(parser, DISTANCE_FLAGS)
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
    matrices, accuracies = [], []
    for seed in range(args.seeds):
        networks = [_network(plan, d, i, seed, checkpoints) for i, d in enumerate(datas)]
        accuracies.append({n.task: n.test_accuracy for n in networks})
        log_dets = resumable_log_dets(
            checkpoints / f"log_dets_seed_{seed}.json",
            networks,
            datas,
            plan.options,
            key=jax.random.fold_in(jax.random.key(seed), FISHER_KEY),
            progress=progress,
        )
        matrices.append(distances_from_log_dets(log_dets))
        print(
            f"seed {seed}: test accuracy "
            + ", ".join(f"{k}={v:.3f}" for k, v in accuracies[-1].items())
        )
    payload = _results(plan, names, np.stack(matrices), accuracies)
    _write(plan, payload)
    return payload


def run(args: argparse.Namespace) -> dict:
    """:func:`check`, then :func:`execute`."""
    return execute(check(args))


def _network(plan: Plan, data: TaskData, index: int, seed: int, checkpoints: Path) -> TaskNetwork:
    """The ε-network of one task and seed: loaded from its directory if saved, else trained.

    The directory is ``--networks``'s when given, else the run's own checkpoints.
    """
    directory = network_directory(plan.args.networks, checkpoints, seed, data.name)
    network = saved_network(directory, model=plan.epsilon.model_name, task=data.name)
    if network is not None:
        return network
    network = train_task_network(
        data,
        key=jax.random.fold_in(jax.random.key(seed), index),
        model_name=plan.epsilon.model_name,
        epochs=plan.epsilon.epochs,
        max_epochs=plan.epsilon.max_epochs,
        batch_size=plan.epsilon.batch_size,
        epsilon=plan.epsilon.epsilon,
        progress=not plan.args.no_progress,
    )
    save_task_network(network, directory, input_shape=data.train.x.shape[1:])
    return network


def _results(plan: Plan, names, stack: np.ndarray, accuracies) -> dict:
    mean, std = stack.mean(0), stack.std(0)
    return {
        **run_record(vars(plan.args), range(plan.args.seeds)),
        "names": names,
        "mean": mean,
        "std": std,
        "per_seed": stack,
        "closest": {t: closest_task(mean, t, names=names) for t in names},
        "test_accuracy": accuracies,
        "epsilon_approximation": [
            {t: a >= 1 - plan.epsilon.epsilon for t, a in acc.items()} for acc in accuracies
        ],
    }


def _write(plan: Plan, payload: dict) -> None:
    out, args, names = plan.out, plan.args, payload["names"]
    mean, closest = payload["mean"], payload["closest"]
    write_json_atomic(out / "distances.json", payload)
    plot_distance_heatmap(
        mean,
        names,
        std=payload["std"],
        path=str(out / "distances.png"),
        title=f"d[b,t] mean ± std over {args.seeds} seeds ({args.estimator}, σ={args.sigma})",
    )
    print(format_table(mean, names))
    for t in names:
        d = mean[names.index(closest[t]), names.index(t)]
        print(f"closest baseline to {t}: {closest[t]}  (d = {d:.4g})")
    print(f"wrote {out / 'distances.json'} and {out / 'distances.png'}")
