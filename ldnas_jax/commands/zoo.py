"""``python -m ldnas_jax zoo``: build a zoo of baseline tasks, each with a searched architecture.

For every task: an ε-network trained towards accuracy 1 − ε (``--max-epochs``), and an
architecture found by random search over the full space without ``zero``
(``--zoo-samples`` genotypes × ``--zoo-steps`` steps), with its quality gate: its test
accuracy against the median of the search's other random genotypes. The zoo is written
to ``--out`` as :func:`ldnas_jax.load_zoo` reads it, entry by entry, so ``--resume``
continues a killed build; ``report.json`` holds the zoo table.

The zoo that ships with the package (``load_zoo()`` without an argument) was built by::

    python -m ldnas_jax zoo --out ldnas_jax/zoo_data/embedded
"""

import argparse
import warnings
from pathlib import Path
from typing import NamedTuple

import jax

from ldnas_jax.checkpoint import write_json_atomic
from ldnas_jax.commands._options import (
    EPSILON_FLAGS,
    ZOO_FLAGS,
    add_flags,
    add_resumable_run_arguments,
    architecture_options,
    check_tasks,
    positive_int,
)
from ldnas_jax.commands._resume import check_run, open_run, run_config
from ldnas_jax.commands.sources import register_sources_from_args
from ldnas_jax.data import EMBEDDED_TASKS, TaskData, load_task
from ldnas_jax.run_info import run_record
from ldnas_jax.zoo import ArchitectureOptions, ZooEntry, ZooQualityWarning, build_zoo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the zoo's directory")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[task.name for task in EMBEDDED_TASKS],
        help="the baseline tasks",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument(
        "--max-train", type=positive_int, default=None, help="training examples per task (all)"
    )
    add_flags(parser, EPSILON_FLAGS, max_epochs=12)
    add_flags(parser, ZOO_FLAGS)
    parser.add_argument(
        "--channels", type=positive_int, default=ArchitectureOptions().search.channels,
        help="stem channels of the searched networks",
    )  # fmt: skip
    parser.add_argument(
        "--cells", type=positive_int, default=ArchitectureOptions().search.num_cells,
        help="cells of the searched networks",
    )  # fmt: skip
    add_resumable_run_arguments(parser)


class Plan(NamedTuple):
    """A checked zoo build: its tasks' data and budget."""

    args: argparse.Namespace
    out: Path
    datas: list[TaskData]
    architecture: ArchitectureOptions


def check(args: argparse.Namespace) -> Plan:
    """Checks every argument and loads the tasks' data; writes nothing."""
    register_sources_from_args(args)
    tasks = check_tasks(args.tasks, what="zoo tasks")
    check_run(args.out, run_config(args), resume=args.resume)
    datas = [load_task(t.name, seed=args.seed, max_train=args.max_train) for t in tasks]
    return Plan(args, Path(args.out), datas, architecture_options(args))


def execute(plan: Plan) -> dict:
    """Builds (or resumes) the zoo, then writes and prints the zoo table."""
    open_run(plan.out, run_config(plan.args), resume=plan.args.resume)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ZooQualityWarning)
        zoo = build_zoo(
            plan.datas,
            key=jax.random.key(plan.args.seed),
            model_name=plan.args.model,
            epochs=plan.args.epochs,
            max_epochs=plan.args.max_epochs,
            architecture=plan.architecture,
            directory=plan.out,
            progress=not plan.args.no_progress,
        )
    for warning in caught:  # shown again, once, after the progress bars
        print(f"warning: {warning.message}")
    rows = [zoo_row(name, entry) for name, entry in zoo.items()]
    payload = {
        "command": "python -m ldnas_jax zoo " + _arguments(plan.args),
        "tasks": rows,
        "flagged": [row["task"] for row in rows if row["beats_random_median"] is False],
        "missed_epsilon": [row["task"] for row in rows if not row["reached_epsilon"]],
        **run_record(run_config(plan.args), [plan.args.seed]),
    }
    write_json_atomic(plan.out / "report.json", payload)
    print(zoo_table(rows))
    return payload


def run(args: argparse.Namespace) -> dict:
    """:func:`check`, then :func:`execute`."""
    return execute(check(args))


def zoo_row(name: str, entry: ZooEntry) -> dict:
    """One line of the zoo table: the architecture, its gate and the ε-network."""
    quality = entry.quality or {}
    network = entry.network
    return {
        "task": name,
        "architecture": list(entry.genotype.normal),
        "space": list(entry.space.operations),
        "val_accuracy": quality.get("val_accuracy", entry.search_accuracy),
        "test_accuracy": quality.get("test_accuracy"),
        "random_median_test_accuracy": quality.get("random_median_test_accuracy"),
        "margin": quality.get("margin"),
        "beats_random_median": quality.get("beats_random_median"),
        "epsilon_network_test_accuracy": network.test_accuracy,
        "epsilon_network_epochs": network.epochs_trained,
        "reached_epsilon": bool(network.is_epsilon_approximation),
    }


def zoo_table(rows: list[dict]) -> str:
    """The zoo table as text.

    Example:
      >>> row = {"task": "E0", "architecture": ["identity"] * 6, "val_accuracy": 0.9,
      ...        "test_accuracy": 0.88, "random_median_test_accuracy": 0.8, "margin": 0.08,
      ...        "beats_random_median": True, "epsilon_network_test_accuracy": 0.97,
      ...        "reached_epsilon": True}
      >>> print(zoo_table([row]))  # doctest: +NORMALIZE_WHITESPACE
      task   val    test  random median  margin  gate  ε-net test  architecture
      E0    0.900  0.880  0.800         +0.080   pass  0.970       identity x6
    """
    head = "task   val    test  random median  margin  gate  ε-net test  architecture"
    lines = [head]
    for r in rows:
        gate = {True: "pass", False: "FAIL", None: "n/a"}[r["beats_random_median"]]
        median = r["random_median_test_accuracy"]
        margin = r["margin"]
        eps = f"{r['epsilon_network_test_accuracy']:.3f}" + ("" if r["reached_epsilon"] else "*")
        lines.append(
            f"{r['task']:<5} {r['val_accuracy']:.3f}  {_num(r['test_accuracy'])}  "
            f"{_num(median):<13} {'n/a' if margin is None else f'{margin:+.3f}'}   {gate}  "
            f"{eps:<11} {_short(r['architecture'])}"
        )
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _short(ops: list[str]) -> str:
    """Six edge operations, written once with a count where all are the same."""
    return f"{ops[0]} x{len(ops)}" if len(set(ops)) == 1 else ", ".join(ops)


def _arguments(args: argparse.Namespace) -> str:
    shown = {k: v for k, v in vars(args).items() if k not in ("command", "resume", "no_progress")}
    parts = []
    for key, value in shown.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)


__all__ = ["add_arguments", "check", "execute", "run", "zoo_row", "zoo_table"]
