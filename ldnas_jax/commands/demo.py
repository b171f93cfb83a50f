"""``python -m ldnas_jax demo``: Algorithm 1 end to end on the embedded default.

Builds a small zoo of baseline tasks, computes the K×K distance table and the
target's column, picks the closest task, searches its space with FUSE, trains
the winner and writes ``results.json`` plus pictures to ``--out``.

Every stage saves its product under ``--out`` as it goes, so ``--resume``
continues a killed run and ends with the results of an unbroken one::

    OUT/zoo/                          baselines, one entry at a time
    OUT/checkpoints/config.json       the arguments a resumed run must repeat
    OUT/checkpoints/target_network/   the target's ε-network
    OUT/checkpoints/log_dets.json     the log-det table, filled pair by pair
    OUT/checkpoints/ld_nas/           FUSE iterations and final-training epochs
    OUT/checkpoints/<method>/         the same for each --compare baseline
"""

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from ldnas_jax.checkpoint import (
    CheckpointError,
    check_fingerprint,
    prepare_run_directory,
    write_json_atomic,
)
from ldnas_jax.data import get_task, load_task
from ldnas_jax.distances._log_det import distances_from_log_dets, mean_log_det
from ldnas_jax.nas import plot_cell
from ldnas_jax.pipeline import (
    DistanceOptions,
    SearchBudget,
    full_space_fuse_baseline,
    random_search_baseline,
    search_architecture,
    train_or_load_task_network,
)
from ldnas_jax.plots import plot_accuracy_vs_params, plot_alpha_curves, plot_distance_heatmap
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks._pairs import fisher_on_task
from ldnas_jax.zoo import ArchitectureOptions, build_zoo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--target", default="E6", help="target task (default E6, as the paper's T6)"
    )
    parser.add_argument(
        "--baselines",
        nargs="+",
        default=["E1", "E3", "E5", "E7"],
        help="baseline tasks (default: two per embedded domain, so it runs in minutes)",
    )
    parser.add_argument("--max-train", type=int, default=1200, help="training examples per task")
    parser.add_argument("--epochs", type=int, default=3, help="ε-network epochs")
    parser.add_argument("--fisher-examples", type=int, default=256)
    parser.add_argument(
        "--candidates", type=int, default=3, help="C, candidates per FUSE iteration"
    )
    parser.add_argument("--iterations", type=int, default=3, help="FUSE search iterations")
    parser.add_argument("--rounds", type=int, default=4, help="FUSE rounds per iteration")
    parser.add_argument(
        "--channels", type=int, default=8, help="stem channels of searched networks"
    )
    parser.add_argument("--cells", type=int, default=2, help="cells of searched networks")
    parser.add_argument(
        "--zoo-samples", type=int, default=2, help="random-search samples per baseline architecture"
    )
    parser.add_argument(
        "--final-epochs",
        type=int,
        default=24,
        help="final training epochs (E6 is 70%% 'other': fewer epochs stay at that majority rate)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run random search and full-space FUSE with the same budget",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out (a killed run ends as an unbroken one)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        help="checkpoint interval: epochs of final training, FUSE iterations, distance pairs",
    )
    parser.add_argument("--no-progress", action="store_true")


# Arguments that change how a run is executed or shown, not what it computes.
_RUN_CONTROL = ("out", "resume", "checkpoint_every", "no_progress", "command")


def run(args: argparse.Namespace) -> dict:
    if args.checkpoint_every < 1:
        raise SystemExit(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    out = Path(args.out)
    try:
        checkpoints = _open_run(out, args)
    except CheckpointError as err:
        raise SystemExit(str(err)) from None
    progress = not args.no_progress
    key = jax.random.key(args.seed)
    target_task = get_task(args.target)
    baseline_names = [name for name in args.baselines if name != target_task.name]
    started = time.perf_counter()

    started_stage = time.perf_counter()
    timings = {}

    def stage_done(name):
        nonlocal started_stage
        timings[name] = round(time.perf_counter() - started_stage, 2)
        started_stage = time.perf_counter()

    load = lambda name: load_task(name, seed=args.seed, max_train=args.max_train)
    baselines = [load(name) for name in baseline_names]
    target = load(target_task.name)
    print(f"[1/4] zoo: ε-networks and random-search architectures for {', '.join(baseline_names)}")
    zoo_dir = out / "zoo"
    zoo = build_zoo(
        baselines,
        key=jax.random.fold_in(key, 1),
        epochs=args.epochs,
        architecture=ArchitectureOptions(
            num_samples=args.zoo_samples,
            train_steps=40,
            channels=args.channels,
            num_cells=args.cells,
        ),
        directory=zoo_dir,
        progress=progress,
    )

    stage_done("zoo")
    print(f"[2/4] distances: F_b,t for every pair of the {len(zoo) + 1} tasks")
    target_net = train_or_load_task_network(
        target,
        checkpoints / "target_network",
        key=jax.random.fold_in(key, 2),
        epochs=args.epochs,
        progress=progress,
    )
    networks = [e.network for e in zoo.values()] + [target_net]
    datas = baselines + [target]
    options = DistanceOptions(max_examples=args.fisher_examples)
    log_dets = _log_det_table(
        networks, datas, options, checkpoints / "log_dets.json", every=args.checkpoint_every
    )
    names = [d.name for d in datas]
    matrix = distances_from_log_dets(log_dets)

    stage_done("distances")
    print(f"[3/4] search: FUSE in the closest task's space for target {target.name}")
    budget = SearchBudget(
        num_candidates=args.candidates,
        max_iterations=args.iterations,
        max_rounds=args.rounds,
        channels=args.channels,
        num_cells=args.cells,
        final_epochs=args.final_epochs,
    )
    result = search_architecture(
        target,
        zoo,
        key=jax.random.fold_in(key, 3),
        budget=budget,
        distance=options,
        target_network=target_net,
        distances={n: matrix[i, -1] for i, n in enumerate(names[:-1])},
        progress=progress,
        checkpoint_dir=checkpoints / "ld_nas",
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    print(
        f"closest task to {target.name}: {result.closest_task}; search space "
        f"{list(result.space.operations)}; winner:\n{result.search.genotype}"
    )

    stage_done("search_and_final_training")
    comparisons = {}
    if args.compare:
        print("[3b] baselines with the same budget: random search, full-space FUSE")
        for run_baseline in (random_search_baseline, full_space_fuse_baseline):
            r = run_baseline(
                target,
                key=jax.random.fold_in(key, 4),
                budget=budget,
                progress=progress,
                checkpoint_dir=checkpoints / run_baseline.__name__,
                resume=args.resume,
            )
            comparisons[r.method] = {
                "genotype": json.loads(r.final.genotype.to_json()),
                "test_accuracy": r.final.test_accuracy,
                "num_params": r.final.num_params,
                "search_seconds": r.search_seconds,
            }

    print("[4/4] writing results")
    payload = {
        **run_record(vars(args), [args.seed]),
        "target": target.name,
        "distances": {"names": names, "matrix": matrix, "note": "rows source b, columns target t"},
        "distances_to_target": dict(zip(result.baselines, result.distances)),
        "closest_task": result.closest_task,
        "search_space": list(result.space.operations),
        "genotype": json.loads(result.search.genotype.to_json()),
        "test_accuracy": result.final.test_accuracy,
        "num_params": result.final.num_params,
        "search_seconds": result.search_seconds,
        "search_history": result.search.history,
        "epsilon_networks": {n.task: n.test_accuracy for n in networks},
        "comparisons": comparisons,
        "seed": args.seed,
        "stage_seconds": timings,
        "total_seconds": time.perf_counter() - started,
    }
    write_json_atomic(out / "results.json", payload)
    plot_distance_heatmap(matrix, names, path=str(out / "distances.png"))
    last = result.search.history[-1]
    labels = [
        f"c{i}" + (" (winner)" if g == last["winner"] else "")
        for i, g in enumerate(last["candidates"])
    ]
    plot_alpha_curves(
        np.array(last["alpha_history"]),
        labels=labels,
        path=str(out / "alpha.png"),
        title=f"FUSE, last iteration: softmax(α) per round ({target.name})",
    )
    plot_cell(result.search.genotype, path=str(out / "cell.png"))
    points = {"ld-nas": [(result.final.test_accuracy, result.final.num_params)]}
    points.update({m: [(c["test_accuracy"], c["num_params"])] for m, c in comparisons.items()})
    plot_accuracy_vs_params(points, path=str(out / "accuracy_vs_params.png"))
    print(
        f"test accuracy {result.final.test_accuracy:.4f}, {result.final.num_params} parameters, "
        f"search {result.search_seconds:.1f} s; wrote {out / 'results.json'}"
    )
    return payload


def _open_run(out: Path, args: argparse.Namespace) -> Path:
    """Refuses a non-empty ``out`` without --resume, and a resume with other arguments."""
    prepare_run_directory(out, resume=args.resume)
    checkpoints = out / "checkpoints"
    config = {k: v for k, v in vars(args).items() if k not in _RUN_CONTROL}
    recorded = checkpoints / "config.json"
    if recorded.exists():
        try:
            check_fingerprint(json.loads(recorded.read_text()), config, recorded)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{recorded} is corrupt: {err}") from err
    else:
        write_json_atomic(recorded, config)
    return checkpoints


def _log_det_table(networks, datas, options, path: Path, *, every: int) -> np.ndarray:
    """L[b, t] for every pair, saved to ``path`` every ``every`` pairs and reused on resume.

    The table goes to JSON, whose floats round-trip exactly, so a resumed run
    sees the very numbers an unbroken one computed.
    """
    names = [d.name for d in datas]
    k = len(datas)
    log_dets = np.full((k, k), np.nan)
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            saved_names, saved = saved["names"], np.array(saved["log_dets"], dtype=np.float64)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise SystemExit(f"log-det checkpoint {path} is corrupt: {err}") from err
        if saved_names != names or saved.shape != (k, k):
            raise SystemExit(
                f"{path} holds the tasks {saved_names}, not {names}; use another --out"
            )
        log_dets = saved
    done_since_save = 0
    for t, data in enumerate(datas):
        for b, net in enumerate(networks):
            if np.isfinite(log_dets[b, t]):
                continue
            fisher = fisher_on_task(
                net,
                data.train,
                data.num_classes,
                estimator=options.estimator,
                label_mode=options.label_mode,
                max_examples=options.max_examples,
            )
            log_dets[b, t] = mean_log_det(fisher, sigma=options.sigma, normalize=options.normalize)
            done_since_save += 1
            if done_since_save >= every or np.isfinite(log_dets).all():
                # NaN marks pairs still to compute; JSON writes it as null.
                table = [[v if np.isfinite(v) else None for v in row] for row in log_dets]
                write_json_atomic(path, {"names": names, "log_dets": table})
                done_since_save = 0
    return log_dets
