"""``python -m ldnas_jax distances``: the K×K task distance table over seeds.

Each product is saved under ``--out`` as it is made, so ``--resume`` continues a
killed run and ends with the results of an unbroken one::

    OUT/checkpoints/config.json                 the arguments a resumed run must repeat
    OUT/checkpoints/networks/seed_S/TASK/       ε-networks (or under --networks DIR)
    OUT/checkpoints/log_dets_seed_S.json        seed S's log-det table, filled pair by pair
"""

import argparse
from pathlib import Path

import jax
import numpy as np

from ldnas_jax._checks import check_positive
from ldnas_jax.checkpoint import write_json_atomic
from ldnas_jax.commands._options import add_distance_arguments, add_networks_argument
from ldnas_jax.commands._resume import (
    add_resume_argument,
    network_directory,
    open_run,
    resumable_pairs,
    run_config,
)
from ldnas_jax.commands.sources import add_source_arguments, register_sources_from_args
from ldnas_jax.data import EMBEDDED_TASKS, get_task, load_task
from ldnas_jax.distances._log_det import (
    closest_task,
    distances_from_log_dets,
    mean_log_det,
)
from ldnas_jax.models import MODEL_NAMES
from ldnas_jax.plots import plot_distance_heatmap
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks._pairs import fisher_on_task
from ldnas_jax.tasks._networks import load_task_network, save_task_network, train_task_network


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[t.name for t in EMBEDDED_TASKS],
        help="task names (default: the embedded E0..E7)",
    )
    parser.add_argument("--out", default="runs/distances", help="output directory")
    parser.add_argument(
        "--seeds", type=int, default=2, help="initialisation seeds of the ε-networks"
    )
    parser.add_argument("--model", choices=MODEL_NAMES, default="small_vgg")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument(
        "--max-train", type=int, default=2000, help="cap on training examples per task (0: all)"
    )
    parser.add_argument(
        "--fisher-examples", type=int, default=256, help="target examples per Fisher"
    )
    add_distance_arguments(parser)
    add_networks_argument(parser)
    add_resume_argument(parser)
    parser.add_argument("--no-progress", action="store_true")
    add_source_arguments(parser)


def run(args: argparse.Namespace) -> dict:
    register_sources_from_args(args)
    tasks = [get_task(name) for name in args.tasks]
    if len(tasks) < 2:
        raise SystemExit("distances needs at least two tasks")
    if len({t.name for t in tasks}) != len(tasks):
        raise ValueError(f"task names must be distinct, got {[t.name for t in tasks]}")
    check_positive(args.sigma, name="sigma")  # before any ε-network is trained
    out = Path(args.out)
    checkpoints = open_run(out, run_config(args), resume=args.resume)
    progress = not args.no_progress
    datas = [load_task(task, seed=0, max_train=args.max_train or None) for task in tasks]
    names = [d.name for d in datas]
    matrices, accuracies = [], []
    for seed in range(args.seeds):
        networks = [
            _trained_or_loaded(d, i, seed, args, checkpoints, progress) for i, d in enumerate(datas)
        ]
        accuracies.append({n.task: n.test_accuracy for n in networks})
        log_dets = _seed_log_dets(networks, datas, seed, args, checkpoints)
        matrices.append(distances_from_log_dets(log_dets))
        print(
            f"seed {seed}: test accuracy "
            + ", ".join(f"{k}={v:.3f}" for k, v in accuracies[-1].items())
        )
    stack = np.stack(matrices)
    mean, std = stack.mean(0), stack.std(0)
    closest = {t: closest_task(mean, t, names=names) for t in names}
    payload = {
        **run_record(vars(args), range(args.seeds)),
        "names": names,
        "mean": mean,
        "std": std,
        "per_seed": stack,
        "closest": closest,
        "test_accuracy": accuracies,
        "epsilon_approximation": [
            {t: a >= 1 - args.epsilon for t, a in acc.items()} for acc in accuracies
        ],
    }
    write_json_atomic(out / "distances.json", payload)
    plot_distance_heatmap(
        mean,
        names,
        std=std,
        path=str(out / "distances.png"),
        title=f"d[b,t] mean ± std over {args.seeds} seeds ({args.estimator}, σ={args.sigma})",
    )
    print(_format_table(mean, names))
    for t in names:
        print(
            f"closest baseline to {t}: {closest[t]}  (d = {mean[names.index(closest[t]), names.index(t)]:.4g})"
        )
    print(f"wrote {out / 'distances.json'} and {out / 'distances.png'}")
    return payload


def _seed_log_dets(networks, datas, seed, args, checkpoints) -> np.ndarray:
    """L[b, t] of one seed, as :func:`ldnas_jax.task_distances` computes it, resumable by pair.

    Each pair's Fisher key is ``fold_in(fold_in(key(seed), 10_000), b·K + t)``, the
    key :func:`ldnas_jax.tasks.pair_fishers` gives it, so the table does not
    depend on which pairs a killed run had finished.
    """
    k = len(datas)
    key = jax.random.fold_in(jax.random.key(seed), 10_000)
    normalize = None if args.normalize == "none" else args.normalize

    def log_det(b, t):
        fisher = fisher_on_task(
            networks[b],
            datas[t].train,
            datas[t].num_classes,
            estimator=args.estimator,
            label_mode=args.label_mode,
            key=jax.random.fold_in(key, b * k + t),
            max_examples=args.fisher_examples,
        )
        return mean_log_det(fisher, sigma=args.sigma, normalize=normalize)

    names = [d.name for d in datas]
    return resumable_pairs(checkpoints / f"log_dets_seed_{seed}.json", names, log_det)


def _trained_or_loaded(data, index, seed, args, checkpoints, progress):
    """The ε-network of one task and seed: loaded from its directory if saved, else trained.

    The directory is ``--networks``'s when given, else the run's own checkpoints.
    """
    directory = network_directory(args.networks, checkpoints, seed, data.name)
    if (directory / "meta.json").exists():
        network, meta = load_task_network(directory)
        if meta["model_name"] != args.model or meta["task"] != data.name:
            raise SystemExit(
                f"{directory} holds {meta['model_name']} for {meta['task']}, "
                f"not {args.model} for {data.name}"
            )
        return network
    network = train_task_network(
        data,
        key=jax.random.fold_in(jax.random.key(seed), index),
        model_name=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        epsilon=args.epsilon,
        progress=progress,
    )
    save_task_network(network, directory, input_shape=data.train.x.shape[1:])
    return network


def _format_table(matrix: np.ndarray, names) -> str:
    head = "source\\target " + " ".join(f"{n:>9}" for n in names)
    rows = [
        f"{b:>14} " + " ".join(f"{matrix[i, j]:9.4g}" for j in range(len(names)))
        for i, b in enumerate(names)
    ]
    return "\n".join([head, *rows])
