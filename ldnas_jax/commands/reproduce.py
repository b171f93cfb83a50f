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
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from ldnas_jax.checkpoint import CheckpointError, write_json_atomic
from ldnas_jax.commands._epsilon_report import epsilon_line, epsilon_networks
from ldnas_jax.commands._options import (
    DISTANCE_FLAGS,
    EPSILON_FLAGS,
    RUN_FLAGS,
    SEARCH_FLAGS,
    ZOO_FLAGS,
    add_flags,
    architecture_options,
    check_models,
    check_tasks,
    count_or_zero,
    distance_options,
    epsilon_options,
    flag,
    flag_defaults,
    positive_int,
    search_budget,
)
from ldnas_jax.commands._resume import (
    RUN_CONTROL,
    add_resume_argument,
    check_run,
    network_directory,
    open_run,
    run_config,
)
from ldnas_jax.commands._text import format_table
from ldnas_jax.commands.sources import add_source_arguments, register_sources_from_args
from ldnas_jax.data import EMBEDDED_TASKS, PAPER_TASKS, TaskData, load_task
from ldnas_jax.experiments import (
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
from ldnas_jax.pipeline import DISTANCE_NAMES, SearchBudget, check_distance
from ldnas_jax.plots import plot_accuracy_vs_params, plot_distance_heatmap
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks import DistanceOptions, load_task_network, save_task_network
from ldnas_jax.zoo import ArchitectureOptions

RESULTS = "reproduce.json"
# Every flag with its default. Defaults live here, not in argparse, so that a config file
# can fill whatever the command line leaves out.
_OPTIONS = {
    "--tasks": flag("'embedded' (E0-E7), 'paper' (T0-T7, TFDS) or task names", ["embedded"],
                    nargs="+"),
    "--search-targets": flag(
        "tasks to search for (Tables 1-2): 'auto' (T3/T6 or E3/E6), 'none' or names",
        ["auto"],
        nargs="+",
    ),
    "--out": flag("output directory", "runs/reproduce"),
    "--seeds": flag("ε-network seeds 0..N-1 (the paper: 10)", 2, type=positive_int),
    **EPSILON_FLAGS,
    "--max-train": flag("max train examples per task (0: all)", 1000, type=count_or_zero),
    "--max-test": flag("max test examples per task (0: all)", 0, type=count_or_zero),
    **DISTANCE_FLAGS,
    "--distances": flag(
        "distances to tabulate (log_det_full: eq. 2 with full Fishers, for small networks); "
        "the first picks the closest task for the search",
        list(DEFAULT_DISTANCES),
        nargs="+",
        choices=DISTANCE_NAMES,
    ),
    "--seed": flag("seed of the zoo, searches and final trainings", 0, type=int),
    **SEARCH_FLAGS,
    "--patience": flag(
        "stop FUSE after this many iterations without a new winner (0: never)",
        0,
        type=count_or_zero,
    ),
    "--steps-per-round": flag("weight steps per FUSE round", 10, type=positive_int),
    "--search-batch-size": flag("batch size of the searches", 32, type=positive_int),
    "--final-batch-size": flag("final training batch size", 64, type=positive_int),
    **ZOO_FLAGS,
    "--hand-designed": flag("hand-designed networks, or 'none'", list(HAND_DESIGNED), nargs="+"),
    "--no-baselines": flag("skip random search and full-space FUSE", False, action="store_true"),
    **RUN_FLAGS,
}  # fmt: skip
DEFAULTS = {**flag_defaults(_OPTIONS), "config": None, "resume": False}
_SOURCE_KEYS = ("mnist_dir", "npz_source")
# Old flag (and config key) -> its new name; the old ones are read, with a note, until 0.3.
RENAMED = {"subset": "max_train"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="JSON file of settings; keys mirror the flags, and flags given here override it",
    )
    add_flags(parser, _OPTIONS, suppress=True)
    for old, new in RENAMED.items():  # hidden: --help shows the new names only
        keywords, _ = _OPTIONS["--" + new.replace("_", "-")]
        parser.add_argument(
            "--" + old.replace("_", "-"),
            type=keywords.get("type"),
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
    add_resume_argument(parser, default=argparse.SUPPRESS)
    add_source_arguments(parser)


def renamed(values: dict, where: str) -> dict:
    """``values`` with old setting names (:data:`RENAMED`) replaced by the new ones.

    Example:
      >>> renamed({"subset": 400}, "test")  # stderr: note: test: --subset is now --max-train ...
      {'max_train': 400}

    Raises:
      ValueError: both an old name and its new one are given.
    """
    values = dict(values)
    for old, new in RENAMED.items():
        if old not in values:
            continue
        old_flag, new_flag = (f"--{name.replace('_', '-')}" for name in (old, new))
        if new in values:
            raise ValueError(f"{where}: {old_flag} is the old name of {new_flag}; give one of them")
        print(
            f"note: {where}: {old_flag} is now {new_flag}; the old name goes in 0.3",
            file=sys.stderr,
        )
        values[new] = values.pop(old)
    return values


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
    given = renamed(given, "command line")
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
    return renamed(
        {k: v for k, v in vars(parsed).items() if not (k in _SOURCE_KEYS and not v)},
        f"config {path}",
    )


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
    return [task.name for task in check_tasks(spec)]


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


class Plan(NamedTuple):
    """A checked ``reproduce`` run: settings, data, configs, where it writes."""

    settings: argparse.Namespace
    out: Path
    datas: list[TaskData]
    targets: list[str]
    hand_designed: list[str]
    epsilon: EpsilonOptions
    options: DistanceOptions
    budget: SearchBudget
    architecture: ArchitectureOptions

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datas]


def check(args: argparse.Namespace) -> Plan:
    """Reads the settings, checks every one of them and loads the tasks; writes nothing."""
    settings = resolve_settings(args)
    register_sources_from_args(settings)
    names = task_names(settings.tasks)
    if len(names) < 2:
        raise ValueError(f"reproduce needs at least two tasks, got {names}")
    targets = search_targets(settings.search_targets, names)
    hand = [] if settings.hand_designed == ["none"] else list(settings.hand_designed)
    check_models(hand, what="hand-designed models")
    options = distance_options(settings)
    if len(set(settings.distances)) != len(settings.distances):
        raise ValueError(f"--distances repeat: {settings.distances}")
    for name in settings.distances:
        check_distance(name, options)  # e.g. log_det_full takes the empirical Fisher only
    check_run(settings.out, _config(settings), resume=settings.resume, inputs=_inputs(settings))
    datas = [
        load_task(
            name, seed=0, max_train=settings.max_train or None, max_test=settings.max_test or None
        )
        for name in names
    ]
    return Plan(
        settings,
        Path(settings.out),
        datas,
        targets,
        hand,
        epsilon_options(settings),
        options,
        search_budget(settings),
        architecture_options(settings),
    )


def execute(plan: Plan) -> dict:
    """Stage 1, the distance tables (saved and reported); stage 2, Tables 1–2 per target."""
    settings = plan.settings
    checkpoints = open_run(
        plan.out, _config(settings), resume=settings.resume, inputs=_inputs(settings)
    )
    print(
        f"[1/2] distance tables: {len(plan.names)} tasks × {settings.seeds} seeds, "
        f"{plan.epsilon.model_name}"
    )
    tables = _tables(plan, checkpoints)
    payload = _tables_payload(plan, tables)
    write_json_atomic(plan.out / RESULTS, payload)  # the tables survive a failure in the search
    _report_tables(plan, tables)
    if plan.targets:
        print(
            f"[2/2] Tables 1-2 for {', '.join(plan.targets)}: zoo, LD-NAS, baselines, hand-designed"
        )
        for target, table in _search_tables(plan, tables, checkpoints):
            payload["tables_1_2"][target] = table
            write_json_atomic(plan.out / RESULTS, payload)
            _report_search(plan, target, table)
    print(f"wrote {plan.out / RESULTS} and heatmaps in {plan.out}")
    return payload


def run(args: argparse.Namespace) -> dict:
    """:func:`check`, then :func:`execute`."""
    return execute(check(args))


def _config(settings: argparse.Namespace) -> dict:
    return run_config(settings, (*RUN_CONTROL, "config"))


def _inputs(settings: argparse.Namespace) -> list[str]:
    return [settings.config] if settings.config else []


def _tables(plan: Plan, checkpoints: Path) -> DistanceTables:
    """Figure 1's tables: saved by an earlier run of this one, or computed and saved."""
    tables = _saved_tables(checkpoints, plan.datas)
    if tables is None:
        tables = distance_tables(
            plan.datas,
            seeds=range(plan.settings.seeds),
            epsilon=plan.epsilon,
            distance=plan.options,
            distances=plan.settings.distances,
            progress=not plan.settings.no_progress,
        )
        _save_tables(checkpoints, tables, plan.datas)
    return tables


def _tables_payload(plan: Plan, tables: DistanceTables) -> dict:
    settings = plan.settings
    return {
        **run_record(vars(settings), range(settings.seeds)),
        "device": device_info(),
        "names": plan.names,
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
        "search_distance": settings.distances[0],
        "test_accuracy": tables.test_accuracy,
        "epsilon_approximation": [
            {t: a >= 1 - plan.epsilon.epsilon for t, a in acc.items()}
            for acc in tables.test_accuracy
        ],
        "epsilon": plan.epsilon.epsilon,
        "missed_epsilon": _missed_epsilon(plan, tables),
        "stage_seconds": {"distance_tables": tables.seconds},
        "tables_1_2": {},
    }


def _missed_epsilon(plan: Plan, tables: DistanceTables) -> list[dict]:
    records = epsilon_networks(tables.test_accuracy, plan.epsilon.epsilon)
    return [record for record in records if not record["met_epsilon"]]


def _report_tables(plan: Plan, tables: DistanceTables) -> None:
    """Heatmaps of the mean and std of each distance, the primary mean table as text, and the
    ε-networks that missed ε (marked "*" on the heatmaps)."""
    settings, out, names = plan.settings, plan.out, plan.names
    missed = _missed_epsilon(plan, tables)
    for d in settings.distances:
        plot_distance_heatmap(
            tables.mean[d],
            names,
            std=tables.std[d],
            path=str(out / f"{d}_mean.png"),
            title=f"{d}: mean ± std over {settings.seeds} seeds (red: closest source)",
            missed_epsilon=sorted({m["task"] for m in missed}),
        )
        plot_distance_heatmap(
            tables.std[d],
            names,
            path=str(out / f"{d}_std.png"),
            title=f"{d}: std over {settings.seeds} seeds (red: lowest std in the column)",
        )
    primary = settings.distances[0]
    print(format_table(tables.mean[primary], names, title=f"{primary}, mean over seeds"))
    for d in settings.distances:
        print(f"closest task ({d}): " + ", ".join(f"{t}←{b}" for t, b in tables.closest[d].items()))
    print(epsilon_line(missed, plan.epsilon.epsilon))


def _search_tables(plan: Plan, tables: DistanceTables, checkpoints: Path):
    """Yields ``(target, table)`` of Tables 1–2, each saved as it is done or read back."""
    settings, names = plan.settings, plan.names
    key = jax.random.key(settings.seed)
    saved = {t: _read_json(checkpoints / f"table_{t}.json") for t in plan.targets}
    zoo = None
    if any(table is None for table in saved.values()):  # else every search is saved
        zoo_names = [n for n in names if any(n != t for t in plan.targets)]
        zoo = build_task_zoo(
            [plan.datas[names.index(n)] for n in zoo_names],
            [tables.networks[names.index(n)] for n in zoo_names],
            key=jax.random.fold_in(key, 1),
            architecture=plan.architecture,
            progress=not settings.no_progress,
        )
    mean = tables.mean[settings.distances[0]]
    for i, target in enumerate(plan.targets):
        t = names.index(target)
        table = saved[target]
        if table is None:
            table = search_comparison(
                plan.datas[t],
                zoo,
                {b: mean[names.index(b), t] for b in zoo if b != target},
                key=jax.random.fold_in(key, 2 + i),
                budget=plan.budget,
                target_network=tables.networks[t],
                hand_designed=plan.hand_designed,
                baselines=not settings.no_baselines,
                progress=not settings.no_progress,
                distance=settings.distances[0],
            )
            write_json_atomic(checkpoints / f"table_{target}.json", table)
            table = _read_json(checkpoints / f"table_{target}.json")  # as a resume sees it
        yield target, table


def _report_search(plan: Plan, target: str, table: dict) -> None:
    plot_accuracy_vs_params(
        {r["method"]: [(r["test_accuracy"], r["num_params"])] for r in table["rows"]},
        path=str(plan.out / f"table_{target}.png"),
        title=f"{target} (closest: {table['closest_task']}): accuracy against parameters",
    )
    print(format_rows(table))


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
        raise CheckpointError(
            f"{checkpoints / 'tables.json'} holds the tasks {fields['names']}, not {list(names)}"
        )
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
        raise CheckpointError(f"checkpoint {path} is corrupt: {err}") from err


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
