"""Do the embedded tasks' ε-networks meet ε? Fixed epochs against training on to a cap.

For each embedded task E0–E7 this trains the SmallVGG ε-network twice, as the
``distances`` command does by default (seed 0, ``--max-train 2000``, batch 64,
ε = 0.1, key ``fold_in(key(seed), task index)``):

* ``fixed``: exactly ``--epochs`` epochs (today's default, 4);
* ``capped``: at least ``--epochs``, then on until validation accuracy ≥ 1 − ε,
  at most ``--max-epochs`` epochs, keeping the best epoch on validation.

Each row records test and validation accuracy, epochs run, the epoch kept,
seconds (compilation excluded by an untimed one-epoch warm-up per task; the
machine may be shared, so seconds are indicative), and whether test and
validation accuracy meet ε. The capped run's first epochs are the fixed run's
(same key), so the two differ only by what the cap adds.

Run: ``python -m benchmarks.epsilon_networks --json docs/epsilon_networks.json``.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import jax

from ldnas_jax.data import EMBEDDED_TASKS, load_task
from ldnas_jax.tasks._networks import train_task_network


def row(network, seconds: float) -> dict:
    """The figures of one trained ε-network."""
    return {
        "test_accuracy": round(network.test_accuracy, 4),
        "val_accuracy": round(network.val_accuracy, 4),
        "epochs_trained": network.epochs_trained,
        "best_epoch": network.best_epoch,
        "seconds": round(seconds, 1),
        "meets_epsilon": bool(network.is_epsilon_approximation),
        "val_meets_epsilon": network.val_accuracy >= 1 - network.epsilon,
    }


def measure(task: str, index: int, args: argparse.Namespace) -> dict:
    data = load_task(task, seed=0, max_train=args.max_train or None)
    key = jax.random.fold_in(jax.random.key(args.seed), index)
    common = {"key": key, "epochs": args.epochs, "epsilon": args.epsilon, "progress": False}
    # Untimed: compiles this head size's train step and evaluations, so that neither timed
    # run pays for them (the capped run would otherwise reuse what the fixed one compiled).
    train_task_network(data, key=key, epochs=1, max_epochs=1, progress=False)
    results = {"sizes": data.sizes}
    for name, cap in (("fixed", None), ("capped", args.max_epochs)):
        start = time.perf_counter()
        network = train_task_network(data, max_epochs=cap, **common)
        results[name] = row(network, time.perf_counter() - start)
        print(f"{task} {name:6s} {results[name]}", flush=True)
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=[t.name for t in EMBEDDED_TASKS])
    parser.add_argument("--epochs", type=int, default=4, help="fixed epochs, and the cap's least")
    parser.add_argument("--max-epochs", type=int, default=12, help="the cap")
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--max-train", type=int, default=2000, help="0: all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    names = [t.name for t in EMBEDDED_TASKS]
    tasks = {}
    for task in args.tasks:
        # The distance command's key: the task's index among the tasks it is given (all of E0-E7).
        tasks[task] = measure(task, names.index(task) if task in names else 0, args)
    payload = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "model": "small_vgg",
        "machine": {
            "platform": platform.platform(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
        },
        "tasks": tasks,
        "summary": {
            name: {
                "met_epsilon": sum(t[name]["meets_epsilon"] for t in tasks.values()),
                "val_met_epsilon": sum(t[name]["val_meets_epsilon"] for t in tasks.values()),
                "of": len(tasks),
                "epochs": sum(t[name]["epochs_trained"] for t in tasks.values()),
                "seconds": round(sum(t[name]["seconds"] for t in tasks.values()), 1),
            }
            for name in ("fixed", "capped")
        },
    }
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["summary"]))
    return payload


if __name__ == "__main__":
    main()
