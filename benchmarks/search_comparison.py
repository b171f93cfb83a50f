"""LD-NAS against random search, full-space FUSE and a hand-designed SmallVGG, over many seeds.

One zoo and one set of distances serve every seed (they do not depend on the search); each
seed then runs the three searches at one budget and trains each winner the same way, and
SmallVGG (``ldnas_jax.models``) with that same training: ``train_final``'s epochs, batch,
Adam and data; ResNet-18 too when ``--methods`` names ``resnet18``. Reports test accuracy,
balanced accuracy (the mean of per-class recalls,
because a target such as E6 has a 70% "other" class, so a network that always answers
"other" already reaches 0.70 accuracy), parameters and search seconds; per method the mean
± std over seeds, and LD-NAS minus each other method paired by seed, with bootstrap 95%
intervals over the seeds.

``ld-nas_seeded_zoo`` is LD-NAS again with every ε-network of the zoo (the baselines' N_b and
N_t) trained anew from the seed, the baselines' spaces kept: the closest task then varies over
seeds as the distance's own noise makes it, and the JSON's ``seeded_zoo`` counts its picks (its
win share) and pairs it with every other method. It searches with LD-NAS's keys, so on a seed
where both pick the same task the two rows agree.

Every finished (seed, method) row is written to ``OUT/comparison.json`` at once (its tables to
``OUT/comparison.md``, as the results page quotes them); a rerun with
the same ``--out`` and arguments skips the rows already there (other ``--seeds`` or
``--methods`` may be given: they pick rows, not what a row holds).

Run: ``python -m benchmarks.search_comparison --seeds 0-9 --out runs/comparison``, or on
real MNIST digits ``--target T3 --mnist-dir ../shared/data/mnist-t10k`` (IDX files are
brought to 32×32×3, the embedded tasks' shape, by the library's IDX source). ``--zoo prebuilt``
(or a zoo command's directory) takes the baselines and N_t from a saved zoo, as the space check
does, instead of building a zoo of ``--baselines``.
"""

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from benchmarks._comparison_markdown import comparison_markdown
from benchmarks._comparison_stats import (
    comparison_table,
    method_summary,
    paired_differences,
)
from ldnas_jax.checkpoint import check_fingerprint, write_json_atomic
from ldnas_jax.cli import HelpFormatter
from ldnas_jax.commands._compile_cache import enable_compilation_cache
from ldnas_jax.commands._options import (
    DISTANCE_FLAGS,
    SEARCH_FLAGS,
    ZOO_FLAGS,
    add_flags,
    architecture_options,
    check_tasks,
    distance_options,
    positive_int,
    search_budget,
)
from ldnas_jax.commands.sources import add_source_arguments, register_sources_from_args
from ldnas_jax.data import TaskData, load_task
from ldnas_jax.experiments._reproduce import fit_hand_designed
from ldnas_jax.experiments._scores import scores_on_test
from ldnas_jax.nas import count_params
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
from ldnas_jax.tasks._networks import TaskNetwork, train_task_network
from ldnas_jax.zoo import build_zoo, load_zoo, task_key

# LD-NAS twice: with the zoo's ε-networks, and with every ε-network trained again from the seed
# (SEEDED_ZOO), so that the closest task is itself a random quantity over the seeds.
SEEDED_ZOO = "ld-nas_seeded_zoo"
LD_NAS = ("ld-nas", SEEDED_ZOO)
METHODS = (*LD_NAS, "random_search", "full_space_fuse", "small_vgg", "resnet18")
# Hand-designed networks: trained as the searched winners are, with no search.
HAND_DESIGNED = ("small_vgg", "resnet18")
# ResNet-18 takes about as long per seed as the other four together on 2 cores: asked for by name.
DEFAULT_METHODS = ("ld-nas", SEEDED_ZOO, "random_search", "full_space_fuse", "small_vgg")
# Baselines when --baselines is not given: E6's embedded neighbours; for MNIST's T3 the other
# digit tasks and, as a second domain, the embedded object tasks.
DEFAULT_BASELINES = {
    "E6": ["E1", "E3", "E5", "E7"],
    "T3": ["T0", "T1", "T2", "E4", "E5", "E6", "E7"],
}
# The ε-network epoch cap of the saved zoos (prebuilt and MNIST: zoo --epochs 3 --max-epochs 8),
# kept when SEEDED_ZOO trains their networks again.
SAVED_ZOO_MAX_EPOCHS = 8
# Flags that choose which rows to run, not what a row holds: left out of the fingerprint.
ROW_CHOICE = ("out", "seeds", "methods")


class Setting(NamedTuple):
    """What every seed shares: the target, the zoo, N_t, the distances and the budget; and
    ``reseed(seed)``, the zoo, N_t and distances of :data:`SEEDED_ZOO` on one seed."""

    target: TaskData
    zoo: dict
    target_network: TaskNetwork
    distances: dict[str, float]
    budget: SearchBudget
    reseed: Callable[[int], tuple[dict, TaskNetwork, dict[str, float]]] | None = None


def seed_list(text: str) -> list[int]:
    """One ``--seeds`` item: ``"3"`` or an inclusive range ``"0-9"``.

    Example:
      >>> seed_list("2-4"), seed_list("7")
      ([2, 3, 4], [7])
    """
    low, dash, high = text.partition("-")
    try:
        seeds = list(range(int(low), int(high) + 1)) if dash else [int(low)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed or a range like 0-9, got {text!r}")
    if not seeds or seeds[0] < 0:
        raise argparse.ArgumentTypeError(f"expected seeds >= 0 in increasing order, got {text!r}")
    return seeds


def train_hand_designed(name: str, target: TaskData, budget: SearchBudget, key) -> dict:
    """A hand-designed network trained with :func:`train_final`'s call: its epochs, batch,
    default Adam and data."""
    model, result = fit_hand_designed(name, target, key=key, budget=budget, progress=False)
    return {
        "space": None,
        "closest_task": None,
        "genotype": None,
        **scores_on_test(model, result.variables, target),
        "num_params": count_params(result.variables["params"]),
        "search_seconds": 0.0,
    }


def run_method(method: str, setting: Setting, seed: int) -> dict:
    """One row: ``method``'s search on ``seed`` (none for a hand-designed network), then the
    final training."""
    seed_key = jax.random.key(seed)
    search_key, final_key = jax.random.fold_in(seed_key, 3), jax.random.fold_in(seed_key, 5)
    if method in HAND_DESIGNED:
        return train_hand_designed(method, setting.target, setting.budget, final_key)
    # The pipeline's own final training is kept to one epoch: every winner is trained again
    # below with the full budget, so that its test predictions give the balanced accuracy.
    one_epoch = setting.budget._replace(final=setting.budget.final._replace(epochs=1))
    target = setting.target
    seeded = {}
    if method in LD_NAS:
        if method == SEEDED_ZOO:
            zoo, target_network, distances = setting.reseed(seed)
            seeded = {"distances": distances}
        else:
            zoo, target_network, distances = setting.zoo, setting.target_network, setting.distances
        # The same keys for both: on a seed where they pick the same task, the rows agree.
        result = search_architecture(
            target,
            zoo,
            key=search_key,
            budget=one_epoch,
            target_network=target_network,
            distances=distances,
            progress=False,
        )
    else:
        baseline = {
            "random_search": random_search_baseline,
            "full_space_fuse": full_space_fuse_baseline,
        }
        result = baseline[method](target, key=search_key, budget=one_epoch, progress=False)
    final = train_final(
        result.final.genotype, target, key=final_key, budget=setting.budget, progress=False
    )
    return {
        "space": list(result.space.operations) if method in LD_NAS else "all",
        "closest_task": result.closest_task if method in LD_NAS else None,
        "genotype": json.loads(final.genotype.to_json()),
        **scores_on_test(final.model, final.variables, target),
        "num_params": final.num_params,
        "search_seconds": result.search_seconds,
        **seeded,
    }


def parse_args(argv=None) -> argparse.Namespace:
    """The benchmark's flags: the command line's shared search and distance flags, its scale."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=HelpFormatter
    )
    parser.add_argument("--target", default="E6", help="target task")
    parser.add_argument(
        "--baselines",
        nargs="+",
        default=None,
        help=f"baseline tasks (default per target: {DEFAULT_BASELINES})",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=seed_list,
        default=[list(range(10))],
        help="search and training seeds: numbers and inclusive ranges, e.g. 0-9 or 0 1 2",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(DEFAULT_METHODS),
        help="methods to run (resnet18 only when named: it is costly on a CPU; "
        f"{SEEDED_ZOO}: LD-NAS with the zoo's ε-networks trained again from each seed)",
    )
    parser.add_argument(
        "--max-train", type=positive_int, default=2400, help="training examples per task"
    )
    parser.add_argument("--epochs", type=positive_int, default=3, help="ε-network epochs")
    add_flags(parser, SEARCH_FLAGS, channels=16, cells=3, final_epochs=10)
    add_flags(parser, DISTANCE_FLAGS)
    add_flags(parser, ZOO_FLAGS)
    add_source_arguments(parser)
    parser.add_argument(
        "--zoo",
        default=None,
        help="a saved zoo (the zoo command's directory, or 'prebuilt' for the package's), as "
        "the space check uses: its entry for the target is N_t, its others (or --baselines "
        "among them) the baselines, and --epochs and the zoo flags go unused; default: build "
        "a zoo of --baselines in OUT/zoo",
    )
    parser.add_argument("--out", default="runs/search_comparison", help="output directory")
    args = parser.parse_args(argv)
    args.seeds = sorted({seed for group in args.seeds for seed in group})
    if args.baselines is None and args.zoo is None:
        if args.target not in DEFAULT_BASELINES:
            parser.error(f"--baselines is needed for target {args.target}")
        args.baselines = DEFAULT_BASELINES[args.target]
    return args


def earlier_rows(path: Path, config: dict) -> list[dict]:
    """The rows a run with the same ``config`` saved at ``path``; refuses another run's file.

    Raises:
      CheckpointError: ``path`` records other arguments (the message names them).
    """
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    check_fingerprint(saved.get("config"), config, path)
    return saved["rows"]


def prepare(args: argparse.Namespace, out: Path) -> Setting:
    """Loads the data and the zoo (saved or built), N_t, and measures the distances."""
    register_sources_from_args(args)
    target_task = check_tasks([args.target], what="target")[0]
    key = jax.random.key(0)
    load = lambda name: load_task(name, seed=0, max_train=args.max_train)
    target = load(target_task.name)
    if args.zoo is None:
        zoo, target_net = built_zoo(args, target, load, key, out)
    else:
        zoo, target_net = saved_zoo(args, target.name)
    options = distance_options(args)
    distances = distances_to_target(target, zoo, target_net, options=options)
    reseed = zoo_redraw(args, target, zoo, target_net.model_name, options, load)
    return Setting(target, zoo, target_net, distances, search_budget(args), reseed)


def zoo_redraw(args, target: TaskData, zoo: dict, target_model: str, options, load):
    """``reseed(seed)`` of :data:`SEEDED_ZOO`: the zoo's ε-networks trained again as the zoo
    was built (a built zoo's on ``--max-train`` examples for ``--epochs``; a saved zoo's on all
    of each task's data, ``--epochs`` up to :data:`SAVED_ZOO_MAX_EPOCHS`), then d[b, t]."""
    saved = args.zoo is not None
    data = (lambda name: load_task(name, seed=0)) if saved else load
    cap = SAVED_ZOO_MAX_EPOCHS if saved else None
    target_data = data(target.name) if saved else target  # N_t's data, loaded once

    def reseed(seed: int):
        networks = reseeded_networks(zoo, target_data, target_model, seed, args.epochs, cap, data)
        return *networks, distances_to_target(target, *networks, options=options)

    return reseed


def reseeded_networks(
    zoo: dict,
    target: TaskData,
    target_model: str,
    seed: int,
    epochs: int,
    max_epochs: int | None,
    load: Callable[[str], TaskData],
) -> tuple[dict, TaskNetwork]:
    """The zoo with every ε-network, each baseline's N_b and N_t, trained again from ``seed``.

    Each network's key is the one the zoo command gives it with ``--seed SEED``, on the data
    ``load(name)`` gives; the baselines' architectures and spaces stay the zoo's: only what
    the distance measures is drawn again. Seed 0 does not give the prebuilt zoo's networks
    back: on E6 its d[E1, E6] was 0.163, the prebuilt networks' 0.052.
    """
    key = jax.random.key(seed)

    def train(data: TaskData, model_name: str) -> TaskNetwork:
        return train_task_network(
            data,
            key=jax.random.fold_in(task_key(key, data.name), 0),
            model_name=model_name,
            epochs=epochs,
            max_epochs=max_epochs,
            progress=False,
        )

    seeded = {
        name: entry._replace(network=train(load(name), entry.network.model_name))
        for name, entry in zoo.items()
    }
    return seeded, train(target, target_model)


def built_zoo(args, target, load, key, out: Path):
    """A zoo of ``--baselines`` built (or reloaded) in OUT/zoo, and N_t trained here."""
    baselines = [b for b in args.baselines if b != target.name]
    check_tasks(baselines, what="baseline tasks")
    zoo = build_zoo(
        [load(name) for name in baselines],
        key=jax.random.fold_in(key, 1),
        epochs=args.epochs,
        architecture=architecture_options(args),
        directory=out / "zoo",
        progress=False,
    )
    target_net = train_task_network(
        target, key=jax.random.fold_in(key, 2), epochs=args.epochs, progress=False
    )
    return zoo, target_net


def saved_zoo(args, target_name: str):
    """The baselines and N_t of the zoo at ``--zoo``, as the space check takes them.

    Raises:
      ValueError: the zoo has no entry for the target or for a named baseline.
    """
    zoo = load_zoo(None if args.zoo == "prebuilt" else args.zoo)
    if target_name not in zoo:
        raise ValueError(
            f"the zoo at {args.zoo} has no entry for target {target_name}: {list(zoo)}"
        )
    baselines = args.baselines or [name for name in zoo if name != target_name]
    missing = [name for name in baselines if name not in zoo]
    if missing:
        raise ValueError(f"the zoo at {args.zoo} has no baseline {missing}: {list(zoo)}")
    return {b: zoo[b] for b in baselines if b != target_name}, zoo[target_name].network


def seeded_zoo_summary(rows: list[dict]) -> dict:
    """The :data:`SEEDED_ZOO` rows' closest task, counted over seeds (its win share), and those
    rows minus every other method, paired by seed; empty without such rows."""
    seeded = sorted((r for r in rows if r["method"] == SEEDED_ZOO), key=lambda r: r["seed"])
    if not seeded:
        return {}
    closest = [row["closest_task"] for row in seeded]
    return {
        "seeds": [row["seed"] for row in seeded],
        "closest_task": closest,
        "closest_task_share": {t: closest.count(t) / len(closest) for t in sorted(set(closest))},
        "paired_differences": paired_differences(rows, reference=SEEDED_ZOO),
    }


def write_report(out: Path, result: dict) -> None:
    """``OUT/comparison.json`` and its tables as ``OUT/comparison.md``, after every row: a
    run stopped part way leaves the report of the seeds it finished."""
    write_json_atomic(out / "comparison.json", result)
    tables = comparison_markdown(result)
    text = "\n\n".join([f"`{result['command']}`", *filter(None, tables.values())]) + "\n"
    (out / "comparison.md").write_text(text)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = {k: v for k, v in vars(args).items() if k not in ROW_CHOICE}
    out = Path(args.out)
    path = out / "comparison.json"
    rows = earlier_rows(path, config)
    done = {(row["seed"], row["method"]) for row in rows}
    out.mkdir(parents=True, exist_ok=True)
    setting = prepare(args, out)
    target = setting.target
    print("distances to", target.name, {k: round(v, 4) for k, v in setting.distances.items()})
    print("zoo spaces", {k: list(e.space.operations) for k, e in setting.zoo.items()})
    command = "python -m benchmarks.search_comparison " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )

    def payload() -> dict:
        summary = method_summary(rows)
        return {
            **run_record(config, sorted({row["seed"] for row in rows})),
            "command": command,
            "distances": setting.distances,
            "closest_task": min(setting.distances, key=setting.distances.get),
            "majority_rate": float(np.max(np.bincount(target.test.y)) / len(target.test.y)),
            "test_examples": len(target.test.y),
            "rows": rows,
            "summary": summary,
            "paired_differences": paired_differences(rows),
            "seeded_zoo": seeded_zoo_summary(rows),
        }

    for seed in args.seeds:
        for method in args.methods:
            if (seed, method) in done:
                continue
            started = time.perf_counter()
            row = {"seed": seed, "method": method, **run_method(method, setting, seed)}
            row["total_seconds"] = time.perf_counter() - started
            rows.append(row)
            print(
                f"seed {seed} {method:16s} acc {row['test_accuracy']:.3f} "
                f"balanced {row['balanced_accuracy']:.3f} "
                f"params {row['num_params']:6d} search {row['search_seconds']:.0f}s "
                f"total {row['total_seconds']:.0f}s",
                flush=True,
            )
            write_report(out, payload())
    result = payload()
    write_report(out, result)
    print(comparison_table(result["summary"], result["paired_differences"]))
    points = {}
    for row in rows:
        points.setdefault(row["method"], []).append((row["test_accuracy"], row["num_params"]))
    plot_accuracy_vs_params(
        points,
        path=str(out / "accuracy_vs_params.png"),
        title=f"{target.name}: test accuracy against parameters, {len(result['seeds'])} seeds",
    )
    return result


if __name__ == "__main__":
    enable_compilation_cache()  # as the command line does: a rerun loads compiled programs
    main()
