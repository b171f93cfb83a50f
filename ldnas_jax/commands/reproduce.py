"""``python -m ldnas_jax reproduce``: the paper's protocol, Figure 1 then Tables 1–2.

1. Trains one ε-network per task for each of ``--seeds`` seeds and writes the mean
   and std tables of each distance in ``--distances`` (JSON and heatmaps).
2. For each ``--search-targets`` task (default T3 and T6, or E3 and E6), runs
   LD-NAS from the closest task of the first distance's mean table, random search
   and full-space FUSE with the same budget, and the hand-designed networks with
   the same final training; writes accuracy, parameters and search cost.

Settings come from flags, from ``--config FILE.json`` (keys mirror the flags, with
``-`` or ``_``), or both: a flag given on the command line overrides the file.
``configs/embedded_small.json`` runs in minutes on a CPU; ``configs/paper.json``
is the paper's scale (VGG-16, 10 seeds, T0–T7 through TFDS) for a GPU.

A non-empty ``--out`` is refused unless ``--resume`` is given (the ``--config``
file itself may lie there). With ``--resume`` a killed run continues from what it
saved, refusing other settings than those in ``OUT/checkpoints/config.json``::

    OUT/checkpoints/networks/seed_0/TASK/   the first seed's ε-networks (used by the search)
    OUT/checkpoints/tables.json             the distance tables, once all seeds are done
    OUT/checkpoints/table_TARGET.json       one search target's Tables 1–2 rows
"""

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from ldnas_jax.checkpoint import write_json_atomic
from ldnas_jax.commands._resume import (
    RUN_CONTROL,
    add_resume_argument,
    network_directory,
    open_run,
    run_config,
)
from ldnas_jax.commands.sources import add_source_arguments, register_sources_from_args
from ldnas_jax.data import EMBEDDED_TASKS, PAPER_TASKS, get_task, load_task
from ldnas_jax.distances._log_det import DEFAULT_NORMALIZE, DEFAULT_SIGMA
from ldnas_jax.distances._registry import make_task_distances
from ldnas_jax.fisher._diagonal import ESTIMATORS
from ldnas_jax.models import MODEL_NAMES
from ldnas_jax.pipeline import DistanceOptions, SearchBudget
from ldnas_jax.plots import plot_accuracy_vs_params, plot_distance_heatmap
from ldnas_jax.experiments._reproduce import (
    DEFAULT_DISTANCES,
    HAND_DESIGNED,
    DistanceTables,
    EpsilonOptions,
    build_task_zoo,
    device_info,
    distance_tables,
    paper_targets,
    search_comparison,
)
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks._pairs import DEFAULT_LABEL_MODE, LABEL_MODES
from ldnas_jax.tasks._networks import load_task_network, save_task_network
from ldnas_jax.zoo import ArchitectureOptions

RESULTS = "reproduce.json"
# flag -> (argparse options, default). Defaults live here, not in argparse, so that a
# config file can fill whatever the command line leaves out.
_OPTIONS = {
    "--tasks": (
        {"nargs": "+", "help": "'embedded' (E0-E7), 'paper' (T0-T7, TFDS) or task names"},
        ["embedded"],
    ),
    "--search-targets": (
        {"nargs": "+", "help": "tasks to search for (Tables 1-2): 'auto' (T3/T6 or E3/E6), 'none'"},
        ["auto"],
    ),
    "--out": ({"help": "output directory"}, "runs/reproduce"),
    "--seeds": ({"type": int, "help": "ε-network seeds 0..N-1 (the paper: 10)"}, 2),
    "--model": ({"choices": MODEL_NAMES, "help": "ε-network (the paper: vgg16)"}, "small_vgg"),
    "--epochs": ({"type": int, "help": "ε-network training epochs"}, 4),
    "--batch-size": ({"type": int, "help": "ε-network batch size"}, 64),
    "--epsilon": ({"type": float, "help": "ε of the ε-approximation check"}, 0.1),
    "--subset": ({"type": int, "help": "max train examples per task (0: all)"}, 1000),
    "--max-test": ({"type": int, "help": "max test examples per task (0: all)"}, 0),
    "--fisher-examples": ({"type": int, "help": "target examples per Fisher"}, 256),
    "--estimator": ({"choices": ESTIMATORS, "help": "Fisher estimator"}, "empirical"),
    "--label-mode": ({"choices": LABEL_MODES, "help": "heads smaller than the labels"}, None),
    "--sigma": ({"type": float, "help": "σ of the log-det distance"}, DEFAULT_SIGMA),
    "--normalize": ({"choices": ["none", "sum"], "help": "Fisher normalisation"}, None),
    "--distances": (
        {
            "nargs": "+",
            "choices": sorted(make_task_distances()),
            "help": "distances to tabulate; the first picks the closest task for the search",
        },
        list(DEFAULT_DISTANCES),
    ),
    "--seed": ({"type": int, "help": "seed of the zoo, searches and final trainings"}, 0),
    "--candidates": ({"type": int, "help": "FUSE candidates per iteration (the paper: 5)"}, 3),
    "--iterations": ({"type": int, "help": "FUSE iterations (the paper: 200)"}, 3),
    "--patience": (
        {
            "type": int,
            "help": "stop FUSE after this many iterations without a new winner (0: never)",
        },
        0,
    ),
    "--rounds": ({"type": int, "help": "FUSE rounds per iteration"}, 4),
    "--steps-per-round": ({"type": int, "help": "weight steps per FUSE round"}, 10),
    "--search-batch-size": ({"type": int, "help": "batch size of the searches"}, 32),
    "--channels": ({"type": int, "help": "stem channels of searched networks"}, 8),
    "--cells": ({"type": int, "help": "cells of searched networks"}, 2),
    "--final-epochs": ({"type": int, "help": "final training epochs, every method"}, 4),
    "--final-batch-size": ({"type": int, "help": "final training batch size"}, 64),
    "--zoo-samples": ({"type": int, "help": "random-search samples per baseline architecture"}, 2),
    "--zoo-steps": ({"type": int, "help": "training steps per zoo sample"}, 40),
    "--hand-designed": (
        {
            "nargs": "+",
            "help": f"hand-designed networks, or 'none' (default: {' '.join(HAND_DESIGNED)})",
        },
        list(HAND_DESIGNED),
    ),
    "--no-baselines": (
        {"action": "store_true", "help": "skip random search and full-space FUSE"},
        False,
    ),
    "--no-progress": ({"action": "store_true", "help": "no progress bars"}, False),
}
DEFAULTS = {flag[2:].replace("-", "_"): default for flag, (_, default) in _OPTIONS.items()}
DEFAULTS.update(
    label_mode=DEFAULT_LABEL_MODE, normalize=DEFAULT_NORMALIZE or "none", config=None, resume=False
)
_SOURCE_KEYS = ("mnist_dir", "npz_source")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="JSON file of settings; keys mirror the flags, and flags given here override it",
    )
    for flag, (options, _) in _OPTIONS.items():
        default = DEFAULTS[flag[2:].replace("-", "_")]
        options = {**options, "default": argparse.SUPPRESS}
        if options.get("action") != "store_true":
            options["help"] = f"{options['help']} (default: {_show(default)})"
        parser.add_argument(flag, **options)
    add_resume_argument(parser, default=argparse.SUPPRESS)
    add_source_arguments(parser)


def resolve_settings(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults, then the ``--config`` file, then the flags given on the command line.

    Example:
      >>> parser = argparse.ArgumentParser(); add_arguments(parser)
      >>> resolve_settings(parser.parse_args(["--seeds", "3"])).seeds
      3
    """
    given = {
        k: v for k, v in vars(args).items() if k != "command" and not (k in _SOURCE_KEYS and not v)
    }
    config = load_config(given["config"]) if given.get("config") else {}
    return argparse.Namespace(
        **{**DEFAULTS, "mnist_dir": None, "npz_source": [], **config, **given}
    )


def load_config(path: str | Path) -> dict:
    """Reads a JSON config, checking each key and value as the matching flag would.

    Keys are flag names without the leading ``--``, with ``-`` or ``_``. A boolean
    flag takes ``true``/``false``, a list flag a JSON list.

    Raises:
      ValueError: the file is not a JSON object, or a key or value is invalid.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read config {path}: {err}") from err
    if not isinstance(raw, dict):
        raise TypeError(f"config {path} must hold a JSON object, got {type(raw).__name__}")
    parser = argparse.ArgumentParser(prog=f"config {path}", add_help=False, exit_on_error=False)
    add_arguments(parser)
    flags = {f.lstrip("-").replace("-", "_"): f for a in parser._actions for f in a.option_strings}
    argv = []
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in flags or name == "config":
            raise ValueError(f"config {path}: unknown key {key!r}")
        if isinstance(value, bool):
            if name not in ("no_baselines", "no_progress", "resume"):
                raise ValueError(f"config {path}: {key!r} is not a true/false setting")
            argv += [flags[name]] if value else []
        elif isinstance(value, list):
            argv += (
                [flags[name], *map(str, value)]
                if name != "npz_source"
                else [token for item in value for token in (flags[name], str(item))]
            )
        elif value is None:
            raise ValueError(f"config {path}: {key!r} is null; leave the key out instead")
        else:
            argv += [flags[name], str(value)]
    try:
        parsed, extra = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit) as err:
        raise ValueError(f"config {path}: {err}") from err
    if extra:
        raise ValueError(f"config {path}: cannot read values {extra}")
    return {k: v for k, v in vars(parsed).items() if not (k in _SOURCE_KEYS and not v)}


def task_names(spec: list[str]) -> list[str]:
    """``["embedded"]`` → E0..E7, ``["paper"]`` → T0..T7, otherwise the names themselves.

    Example:
      >>> task_names(["paper"])[:2], task_names(["E1", "E2"])
      (['T0', 'T1'], ['E1', 'E2'])
    """
    if spec == ["embedded"]:
        return [t.name for t in EMBEDDED_TASKS]
    if spec == ["paper"]:
        return [t.name for t in PAPER_TASKS]
    return [get_task(name).name for name in spec]


def search_targets(spec: list[str], names: list[str]) -> list[str]:
    """The targets of Tables 1–2: ``auto`` (T3/T6 or E3/E6 among the tasks), ``none`` or names."""
    if spec == ["none"]:
        return []
    if spec == ["auto"]:
        return paper_targets(names)
    missing = [t for t in spec if t not in names]
    if missing:
        raise ValueError(f"search targets {missing} are not among the tasks {names}")
    return list(spec)


def run(args: argparse.Namespace) -> dict:
    settings = resolve_settings(args)
    register_sources_from_args(settings)
    names = task_names(settings.tasks)
    if len(names) < 2:
        raise SystemExit("reproduce needs at least two tasks")
    targets = search_targets(settings.search_targets, names)
    hand = [] if settings.hand_designed == ["none"] else list(settings.hand_designed)
    bad = [m for m in hand if m not in MODEL_NAMES]
    if bad:
        raise SystemExit(f"unknown hand-designed models {bad}; known: {', '.join(MODEL_NAMES)}")
    progress = not settings.no_progress
    out = Path(settings.out)
    checkpoints = open_run(
        out,
        run_config(settings, (*RUN_CONTROL, "config")),
        resume=settings.resume,
        inputs=[settings.config] if settings.config else [],
    )
    datas = [
        load_task(
            name, seed=0, max_train=settings.subset or None, max_test=settings.max_test or None
        )
        for name in names
    ]
    distance = DistanceOptions(
        estimator=settings.estimator,
        label_mode=settings.label_mode,
        sigma=settings.sigma,
        normalize=None if settings.normalize == "none" else settings.normalize,
        max_examples=settings.fisher_examples,
    )
    print(f"[1/2] distance tables: {len(names)} tasks × {settings.seeds} seeds, {settings.model}")
    tables = _saved_tables(checkpoints, datas)
    if tables is None:
        tables = distance_tables(
            datas,
            seeds=range(settings.seeds),
            epsilon=EpsilonOptions(
                settings.model, settings.epochs, settings.batch_size, epsilon=settings.epsilon
            ),
            distance=distance,
            distances=settings.distances,
            progress=progress,
        )
        _save_tables(checkpoints, tables, datas)
    primary = settings.distances[0]
    payload = {
        **run_record(vars(settings), range(settings.seeds)),
        "device": device_info(),
        "names": list(names),
        "note": "tables: rows source b, columns target t; std is the population std over seeds",
        "distance_tables": {
            d: {
                "mean": tables.mean[d],
                "std": tables.std[d],
                "per_seed": tables.per_seed[d],
                "closest": tables.closest[d],
            }
            for d in settings.distances
        },
        "closest": tables.closest,
        "search_distance": primary,
        "test_accuracy": tables.test_accuracy,
        "epsilon_approximation": [
            {t: a >= 1 - settings.epsilon for t, a in acc.items()} for acc in tables.test_accuracy
        ],
        "stage_seconds": {"distance_tables": tables.seconds},
        "tables_1_2": {},
    }
    write_json_atomic(out / RESULTS, payload)  # the tables survive a failure in the search
    for d in settings.distances:
        plot_distance_heatmap(
            tables.mean[d],
            names,
            std=tables.std[d],
            path=str(out / f"{d}_mean.png"),
            title=f"{d}: mean ± std over {settings.seeds} seeds (red: closest source)",
        )
        plot_distance_heatmap(
            tables.std[d],
            names,
            path=str(out / f"{d}_std.png"),
            title=f"{d}: std over {settings.seeds} seeds (red: lowest std in the column)",
        )
    print(format_table(tables.mean[primary], names, title=f"{primary}, mean over seeds"))
    for d in settings.distances:
        print(f"closest task ({d}): " + ", ".join(f"{t}←{b}" for t, b in tables.closest[d].items()))

    saved = {t: _read_json(checkpoints / f"table_{t}.json") for t in targets}
    if targets:
        print(f"[2/2] Tables 1-2 for {', '.join(targets)}: zoo, LD-NAS, baselines, hand-designed")
        key = jax.random.key(settings.seed)
        if any(table is None for table in saved.values()):  # else every search is saved
            zoo_names = [n for n in names if any(n != t for t in targets)]
            zoo = build_task_zoo(
                [datas[names.index(n)] for n in zoo_names],
                [tables.networks[names.index(n)] for n in zoo_names],
                key=jax.random.fold_in(key, 1),
                architecture=ArchitectureOptions(
                    num_samples=settings.zoo_samples,
                    train_steps=settings.zoo_steps,
                    batch_size=settings.search_batch_size,
                    channels=settings.channels,
                    num_cells=settings.cells,
                ),
                progress=progress,
            )
            budget = SearchBudget(
                num_candidates=settings.candidates,
                max_iterations=settings.iterations,
                patience=settings.patience or None,
                max_rounds=settings.rounds,
                steps_per_round=settings.steps_per_round,
                batch_size=settings.search_batch_size,
                channels=settings.channels,
                num_cells=settings.cells,
                final_epochs=settings.final_epochs,
                final_batch_size=settings.final_batch_size,
            )
        mean = tables.mean[primary]
        for i, target in enumerate(targets):
            t = names.index(target)
            table = saved[target]
            if table is None:
                table = search_comparison(
                    datas[t],
                    zoo,
                    {b: mean[names.index(b), t] for b in zoo if b != target},
                    key=jax.random.fold_in(key, 2 + i),
                    budget=budget,
                    target_network=tables.networks[t],
                    hand_designed=hand,
                    baselines=not settings.no_baselines,
                    progress=progress,
                )
                write_json_atomic(checkpoints / f"table_{target}.json", table)
                table = _read_json(checkpoints / f"table_{target}.json")  # as a resume sees it
            payload["tables_1_2"][target] = table
            write_json_atomic(out / RESULTS, payload)
            plot_accuracy_vs_params(
                {r["method"]: [(r["test_accuracy"], r["num_params"])] for r in table["rows"]},
                path=str(out / f"table_{target}.png"),
                title=f"{target} (closest: {table['closest_task']}): accuracy against parameters",
            )
            print(format_rows(table))
    print(f"wrote {out / RESULTS} and heatmaps in {out}")
    return payload


def _save_tables(checkpoints: Path, tables: DistanceTables, datas) -> None:
    """Saves the first seed's ε-networks, then the tables (last: their file marks the stage done)."""
    for network, data in zip(tables.networks, datas):
        directory = network_directory(None, checkpoints, 0, network.task)
        save_task_network(network, directory, input_shape=data.train.x.shape[1:])
    fields = tables._asdict()
    del fields["networks"]
    write_json_atomic(checkpoints / "tables.json", fields)


def _saved_tables(checkpoints: Path, datas) -> DistanceTables | None:
    """The tables and ε-networks a finished stage 1 saved, or None where it did not finish."""
    fields = _read_json(checkpoints / "tables.json")
    if fields is None:
        return None
    names = tuple(d.name for d in datas)
    if tuple(fields["names"]) != names:
        raise SystemExit(f"{checkpoints / 'tables.json'} holds the tasks {fields['names']}")
    arrays = {
        k: {d: np.array(v) for d, v in fields[k].items()} for k in ("per_seed", "mean", "std")
    }
    networks = tuple(
        load_task_network(network_directory(None, checkpoints, 0, name))[0] for name in names
    )
    return DistanceTables(
        names,
        **arrays,
        closest=fields["closest"],
        networks=networks,
        test_accuracy=fields["test_accuracy"],
        seconds=fields["seconds"],
    )


def _read_json(path: Path):
    """The JSON in ``path``, or None where there is no such file."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(f"checkpoint {path} is corrupt: {err}") from err


def format_table(matrix: np.ndarray, names, *, title: str = "") -> str:
    """A K×K table as text, rows source b, columns target t."""
    head = "source\\target " + " ".join(f"{n:>9}" for n in names)
    rows = [
        f"{b:>14} " + " ".join(f"{matrix[i, j]:9.4g}" for j in range(len(names)))
        for i, b in enumerate(names)
    ]
    return "\n".join(([title] if title else []) + [head, *rows])


def format_rows(table: dict) -> str:
    """One target's Tables 1–2 rows as text."""
    lines = [
        (
            f"{table['target']} (closest task {table['closest_task']}, "
            f"device {table['device']['device_kind']})"
        ),
        f"{'method':>16} {'accuracy':>9} {'params (M)':>11} {'search s':>9} {'device h':>9}",
    ]
    for r in table["rows"]:
        seconds = "n/a" if r["search_seconds"] is None else f"{r['search_seconds']:.1f}"
        hours = "n/a" if r["search_device_hours"] is None else f"{r['search_device_hours']:.4f}"
        lines.append(
            f"{r['method']:>16} {r['test_accuracy']:9.4f} {r['params_millions']:11.4f} "
            f"{seconds:>9} {hours:>9}"
        )
    return "\n".join(lines)


def _show(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)
