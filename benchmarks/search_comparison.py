"""LD-NAS against random search and full-space FUSE, same budget, over several seeds.

One zoo and one set of distances serve every seed (they do not depend on the
search); each seed then runs the three searches and trains each winner the same
way. Reports test accuracy, balanced accuracy (the mean of per-class recalls,
because a target such as E6 has a 70% "other" class, so a network that always
answers "other" already reaches 0.70 accuracy), parameters and search seconds.

Run: ``python -m benchmarks.search_comparison --seeds 0 1 2 --out runs/comparison``.
"""

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from ldnas_jax.checkpoint import write_json_atomic
from ldnas_jax.cli import HelpFormatter
from ldnas_jax.commands._options import (
    DISTANCE_FLAGS,
    SEARCH_FLAGS,
    add_flags,
    check_tasks,
    distance_options,
    positive_int,
    search_budget,
)
from ldnas_jax.data import load_task
from ldnas_jax.pipeline import (
    SearchBudget,
    distances_to_target,
    full_space_fuse_baseline,
    random_search_baseline,
    search_architecture,
    train_final,
)
from ldnas_jax.plots import plot_accuracy_vs_params
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks._networks import train_task_network
from ldnas_jax.zoo import ArchitectureOptions, build_zoo


def balanced_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over classes present in ``labels`` of the fraction predicted right."""
    recalls = [
        np.mean(predictions[labels == c] == c) for c in range(num_classes) if np.any(labels == c)
    ]
    return float(np.mean(recalls))


def final_scores(genotype, target, budget: SearchBudget, key) -> dict:
    """Trains ``genotype`` with :func:`train_final` and scores it on the test split."""
    final = train_final(genotype, target, key=key, budget=budget, progress=False)
    logits_fn = jax.jit(lambda variables, x: final.model.apply(variables, x, train=False))
    predictions = np.concatenate(
        [
            np.argmax(logits_fn(final.variables, target.test.x[i : i + 512]), -1)
            for i in range(0, len(target.test.x), 512)
        ]
    )
    return {
        "test_accuracy": float(np.mean(predictions == target.test.y)),
        "balanced_accuracy": balanced_accuracy(predictions, target.test.y, target.num_classes),
    }


def parse_args(argv=None) -> argparse.Namespace:
    """The benchmark's flags: the command line's shared search and distance flags, its scale."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--target", default="E6", help="target task")
    parser.add_argument(
        "--baselines", nargs="+", default=["E1", "E3", "E5", "E7"], help="baseline tasks"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="search and training seeds"
    )
    parser.add_argument(
        "--max-train", type=positive_int, default=2400, help="training examples per task"
    )
    parser.add_argument("--epochs", type=positive_int, default=3, help="ε-network epochs")
    add_flags(parser, SEARCH_FLAGS, channels=16, cells=3, final_epochs=10)
    add_flags(parser, DISTANCE_FLAGS)
    parser.add_argument("--out", default="runs/search_comparison", help="output directory")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    target_task = check_tasks([args.target], what="target")[0]
    check_tasks([b for b in args.baselines if b != target_task.name], what="baseline tasks")
    options = distance_options(args)
    budget = search_budget(args)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(0)
    load = lambda name: load_task(name, seed=0, max_train=args.max_train)
    target = load(target_task.name)
    zoo = build_zoo(
        [load(name) for name in args.baselines if name != target_task.name],
        key=jax.random.fold_in(key, 1),
        epochs=args.epochs,
        architecture=ArchitectureOptions(
            num_samples=2, train_steps=40, channels=args.channels, num_cells=args.cells
        ),
        directory=out / "zoo",
        progress=False,
    )
    target_net = train_task_network(
        target, key=jax.random.fold_in(key, 2), epochs=args.epochs, progress=False
    )
    distances = distances_to_target(target, zoo, target_net, options=options)
    print("distances to", target.name, {k: round(v, 4) for k, v in distances.items()})
    print("zoo spaces", {k: list(e.space.operations) for k, e in zoo.items()})
    # The pipeline's own final training is kept to one epoch: final_scores trains every
    # winner again with the full budget and also measures the balanced accuracy.
    one_epoch = budget._replace(final_epochs=1)
    rows = []
    for seed in args.seeds:
        seed_key = jax.random.key(seed)
        runs = {
            "ld-nas": lambda k: search_architecture(
                target,
                zoo,
                key=k,
                budget=one_epoch,
                target_network=target_net,
                distances=distances,
                progress=False,
            ),
            "random_search": lambda k: random_search_baseline(
                target, key=k, budget=one_epoch, progress=False
            ),
            "full_space_fuse": lambda k: full_space_fuse_baseline(
                target, key=k, budget=one_epoch, progress=False
            ),
        }
        for method, run in runs.items():
            started = time.perf_counter()
            result = run(jax.random.fold_in(seed_key, 3))
            scores = final_scores(
                result.final.genotype, target, budget, jax.random.fold_in(seed_key, 5)
            )
            row = {
                "seed": seed,
                "method": method,
                "space": list(result.space.operations) if method == "ld-nas" else "all",
                "genotype": json.loads(result.final.genotype.to_json()),
                **scores,
                "num_params": result.final.num_params,
                "search_seconds": result.search_seconds,
                "total_seconds": time.perf_counter() - started,
            }
            rows.append(row)
            print(
                f"seed {seed} {method:16s} acc {row['test_accuracy']:.3f} "
                f"balanced {row['balanced_accuracy']:.3f} "
                f"params {row['num_params']:6d} search {row['search_seconds']:.0f}s",
                flush=True,
            )
            payload = {
                **run_record(vars(args), args.seeds),
                "distances": distances,
                "majority_rate": float(np.max(np.bincount(target.test.y)) / len(target.test.y)),
                "rows": rows,
            }
            write_json_atomic(out / "comparison.json", payload)
    points = {}
    for row in rows:
        points.setdefault(row["method"], []).append((row["test_accuracy"], row["num_params"]))
    plot_accuracy_vs_params(points, path=str(out / "accuracy_vs_params.png"))
    return payload


if __name__ == "__main__":
    main()
