"""Which σ and normalisation make the log-det distance separate task domains?

Trains one ε-network per embedded task for each seed, computes every F_{b,t}
once, then scores each (σ, normalize, label_mode) by:

* ``same_domain_closest``: fraction of targets whose closest baseline shares
  the target's domain (the paper's finding on MNIST/CIFAR-10);
* ``separation``: mean cross-domain distance / mean same-domain distance;
* ``seed_agreement``: fraction of targets whose closest baseline is the same
  for every seed.

Run: ``python -m benchmarks.sigma_sweep --seeds 2 --json sweep.json``.

For choosing the default on one set of tasks and validating it on others (real MNIST,
VGG-16), see ``python -m benchmarks.distance_validation``.
"""

import argparse
import itertools
import json
from pathlib import Path

import jax
import numpy as np

from ldnas_jax.commands.sources import mnist_idx_loader
from ldnas_jax.data import EMBEDDED_TASKS, get_task, load_task, register_source
from ldnas_jax.distances._log_det import (
    NORMALIZATIONS,
    distances_from_log_dets,
    flatten_fisher,
    normalize_fisher,
    pair_reference,
)
from ldnas_jax.tasks._networks import train_task_network
from ldnas_jax.tasks._pairs import pair_fishers

SIGMAS = (1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1, 1.0)


def score(matrices: list[np.ndarray], domains: list[str]) -> dict:
    k = len(domains)
    same = np.array([[domains[b] == domains[t] and b != t for t in range(k)] for b in range(k)])
    cross = np.array([[domains[b] != domains[t] for t in range(k)] for b in range(k)])
    closest = [
        [int(np.argmin(np.where(np.arange(k) == t, np.inf, m[:, t]))) for t in range(k)]
        for m in matrices
    ]
    mean = np.mean(matrices, axis=0)
    mean_closest = [
        int(np.argmin(np.where(np.arange(k) == t, np.inf, mean[:, t]))) for t in range(k)
    ]
    has_cross = cross.any() and same.any()
    return {
        "same_domain_closest": float(
            np.mean([domains[mean_closest[t]] == domains[t] for t in range(k)])
        ),
        "separation": float(mean[cross].mean() / max(mean[same].mean(), 1e-300))
        if has_cross
        else None,
        "seed_agreement": float(np.mean([len({c[t] for c in closest}) == 1 for t in range(k)])),
        "closest": mean_closest,
    }


def fishers_of_seed(args: argparse.Namespace, datas: list, seed: int) -> dict:
    """For each estimator of ``args``: the k×k table of flat Fishers F_{b,t} of one seed."""
    k = len(datas)
    nets = [
        train_task_network(
            d, key=jax.random.fold_in(jax.random.key(seed), i), epochs=args.epochs, progress=False
        )
        for i, d in enumerate(datas)
    ]
    print(f"seed {seed}: accuracies", {n.task: round(n.test_accuracy, 3) for n in nets}, flush=True)
    tables = {}
    for spec in args.estimators:
        estimator, label_mode = spec.split(":")
        table = [[None] * k for _ in range(k)]
        for b, t, f in pair_fishers(
            nets,
            [d.train for d in datas],
            [d.num_classes for d in datas],
            estimator=estimator,
            label_mode=label_mode if label_mode != "-" else "pad",
            max_examples=args.fisher_examples,
            progress=False,
        ):
            table[b][t] = flatten_fisher(f)
        tables[spec] = table
    return tables


def distance_matrix(table: list, normalize, sigma: float) -> np.ndarray:
    """Eq. 2's distances from one table of flat Fishers, at one normalisation and σ."""
    k = len(table)
    refs = [pair_reference(table[t][t], normalize=normalize) for t in range(k)]
    logdet = np.array(
        [
            [
                np.mean(
                    np.log(normalize_fisher(table[b][t], normalize, reference=refs[t]) + sigma**2)
                )
                for t in range(k)
            ]
            for b in range(k)
        ]
    )
    return distances_from_log_dets(logdet)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=[t.name for t in EMBEDDED_TASKS])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-train", type=int, default=1500)
    parser.add_argument("--fisher-examples", type=int, default=256)
    parser.add_argument("--mnist-dir", default=None)
    parser.add_argument(
        "--estimators", nargs="+", default=["empirical:pad", "empirical:predicted", "exact:-"]
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.mnist_dir:
        register_source("mnist", mnist_idx_loader(Path(args.mnist_dir)), overwrite=True)
    datas = [load_task(n, max_train=args.max_train) for n in args.tasks]
    domains = [get_task(n).source for n in args.tasks]
    per_seed = [fishers_of_seed(args, datas, seed) for seed in range(args.seeds)]
    results = []
    for spec, normalize, sigma in itertools.product(args.estimators, NORMALIZATIONS, SIGMAS):
        matrices = [distance_matrix(tables[spec], normalize, sigma) for tables in per_seed]
        row = {
            "estimator": spec,
            "normalize": normalize,
            "sigma": sigma,
            **score(matrices, domains),
            "mean": np.mean(matrices, 0).tolist(),
        }
        results.append(row)
        print(
            f"{spec:20s} norm={normalize!s:11s} σ={sigma:7.0e}  same-domain closest "
            f"{row['same_domain_closest']:.2f}  separation {row['separation'] or float('nan'):7.2f}  "
            f"seed agreement {row['seed_agreement']:.2f}  closest {[args.tasks[c] for c in row['closest']]}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"tasks": args.tasks, "results": results}, indent=1))


if __name__ == "__main__":
    main()
