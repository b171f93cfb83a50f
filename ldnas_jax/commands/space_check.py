"""``python -m ldnas_jax space-check``: does the closest baseline's space give the better network?

For a target t and a zoo, FUSE searches the space S_b of every baseline b, the full space
and ``--controls`` random operation subsets of the same sizes, on every seed of
``--seeds``, at one budget; each winner is trained the same way. The report gives each
space's mean accuracy (and balanced accuracy) with bootstrap intervals over seeds, and per
distance (the default log-det, the paper's eq. 2, Fréchet, Task2Vec) Spearman's ρ of −d[b, t]
against the accuracy of S_b, the regret of the space the distance picks and its rank
(:func:`ldnas_jax.experiments.space_check`).

    OUT/rows.json          d[b, t] and one row per (space, seed), saved after each row
    OUT/space_check.json   the summary, the verdicts and the paired contrasts
    OUT/space_check.png    accuracy per baseline space against d[b, t], the chosen space marked
    OUT/space_check.md     the tables of the JSON in Markdown, as the results pages quote them

``--resume`` continues a killed run from ``rows.json``; ``--report`` writes the three
outputs from the rows finished so far (a run still going, or stopped), over the seeds that
every space has, and runs nothing. ``--spaces-from JSON`` takes the spaces, the distances and
the finished rows from an earlier check's ``space_check.json`` instead of a zoo, to add seeds
to it or finish it once its zoo is gone (the rows need only the spaces, the target and the
budget, which must be the recorded ones).
"""

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import jax

from ldnas_jax.checkpoint import CheckpointError, write_json_atomic
from ldnas_jax.commands._options import (
    SEARCH_FLAGS,
    add_flags,
    add_resumable_run_arguments,
    check_tasks,
    positive_int,
    search_budget,
)
from ldnas_jax.commands._resume import RUN_CONTROL, check_run, open_run, run_config
from ldnas_jax.commands._space_check_markdown import space_check_markdown
from ldnas_jax.commands.sources import register_sources_from_args
from ldnas_jax.data import TaskData, load_task
from ldnas_jax.experiments import space_check, space_check_of_spaces, space_check_so_far
from ldnas_jax.nas import Genotype, SearchSpace
from ldnas_jax.pipeline import SearchBudget
from ldnas_jax.plots import plot_space_check
from ldnas_jax.run_info import run_record
from ldnas_jax.zoo import ZooEntry, load_zoo


def seed_list(text: str) -> list[int]:
    """``"0-4"`` or ``"0,2,5"``: the seeds of the check.

    Example:
      >>> seed_list("0-2"), seed_list("1,3")
      ([0, 1, 2], [1, 3])
    """
    try:
        if "-" in text:
            low, high = text.split("-")
            return list(range(int(low), int(high) + 1))
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0-4 or 0,2,5, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--target", default="E6", help="target task t")
    parser.add_argument(
        "--zoo", default=None, help="a zoo directory (`zoo` command); default: the prebuilt zoo"
    )
    parser.add_argument(
        "--spaces-from",
        default=None,
        metavar="JSON",
        help="an earlier check's space_check.json: its spaces, distances and rows replace the "
        "zoo's, and only its missing rows run (same target and budget)",
    )
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-4"), help="seeds, e.g. 0-4")
    parser.add_argument(
        "--controls", type=positive_int, default=3, help="random operation subsets (controls)"
    )
    parser.add_argument("--max-train", type=positive_int, default=2400, help="target train size")
    add_flags(
        parser, {**SEARCH_FLAGS, "--final-epochs": SEARCH_FLAGS["--final-epochs"][:1] + (12,)}
    )
    add_resumable_run_arguments(parser)
    parser.add_argument(
        "--report",
        action="store_true",
        help="write the outputs from the rows finished so far in --out (a run still going, "
        "or stopped), over the seeds every space has; runs nothing",
    )


def _config(args: argparse.Namespace) -> dict:
    """The arguments that decide the rows: ``--report`` chooses what runs, not what a row holds."""
    return run_config(args, (*RUN_CONTROL, "report"))


class Plan(NamedTuple):
    args: argparse.Namespace
    out: Path
    target: TaskData | None  # None for --report, which loads neither target nor zoo
    zoo: dict[str, ZooEntry] | None  # None for --report and --spaces-from
    budget: SearchBudget
    recorded: dict | None = None  # the earlier check of --spaces-from


def check(args: argparse.Namespace) -> Plan:
    """Checks the arguments, loads the zoo and the target; writes nothing."""
    register_sources_from_args(args)
    target = check_tasks([args.target], what="target")[0]
    if args.report:
        check_run(args.out, _config(args), resume=True)
        if not (Path(args.out) / "rows.json").exists():
            raise CheckpointError(f"{args.out} holds no rows.json: no space check rows to report")
        return Plan(args, Path(args.out), None, None, search_budget(args))
    if args.spaces_from is not None:
        return _check_recorded(args, target.name)
    zoo = load_zoo(args.zoo)
    if target.name not in zoo:
        raise ValueError(
            f"the zoo has no ε-network for target {target.name} (it holds {list(zoo)}); "
            "build one with the zoo command, target included"
        )
    check_run(args.out, _config(args), resume=args.resume)
    data = load_task(target.name, seed=0, max_train=args.max_train)
    return Plan(args, Path(args.out), data, zoo, search_budget(args))


def _check_recorded(args: argparse.Namespace, target: str) -> Plan:
    """The plan of ``--spaces-from``: the earlier check must be of this target and budget."""
    if args.zoo is not None:
        raise ValueError("--zoo and --spaces-from exclude each other: the spaces come from one")
    recorded = read_recorded_check(args.spaces_from)
    budget = search_budget(args)
    check = recorded["check"]
    if check["target"] != target:
        raise ValueError(f"{args.spaces_from} checked target {check['target']}, not {target}")
    ours = budget.record()
    fields = {**check["budget"], **ours}
    differ = sorted(name for name in fields if check["budget"].get(name) != ours.get(name))
    if differ:
        raise ValueError(
            f"{args.spaces_from} ran at another budget ({', '.join(differ)}): pass its flags"
        )
    controls = sum(name.startswith("random_") for name in check["spaces"])
    if controls != args.controls:
        raise ValueError(
            f"{args.spaces_from} holds {controls} controls: pass --controls {controls}"
        )
    if check["key"] != jax.random.key_data(jax.random.key(0)).ravel().tolist():
        raise ValueError(f"{args.spaces_from} ran with key {check['key']}, not this command's")
    check_run(args.out, _config(args), resume=args.resume)
    data = load_task(target, seed=0, max_train=args.max_train)
    if list(data.train.x.shape) != check["train_shape"]:
        raise ValueError(
            f"{args.spaces_from} trained on {check['train_shape']} images, this run on "
            f"{list(data.train.x.shape)}: pass its --max-train and data source"
        )
    return Plan(args, Path(args.out), data, None, budget, recorded)


def read_recorded_check(path: str | Path) -> dict:
    """The ``"check"``, ``"distances"`` and ``"rows"`` of a ``space_check.json``, with
    ``"spaces"``: each space with the cell structure of its recorded winners (their number
    of nodes; one shared cell when every winner's two cells are equal).

    Raises:
      ValueError: the file is no space check's JSON, or a space has no row to read its
        cell structure from.
    """
    try:
        saved = json.loads(Path(path).read_text())
        check, distances, rows = saved["check"], saved["distances"], saved["rows"]
        operations = check["spaces"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a space check's JSON: {err!r}") from err
    spaces = {}
    for name, ops in operations.items():
        winners = [Genotype.from_json(r["genotype"]) for r in rows if r["space"] == name]
        if not winners:
            raise ValueError(f"{path} has no row of space {name}, so no cell structure for it")
        # The check records the operations alone; a space whose winners all have equal
        # normal and reduction cells was searched with one shared cell.
        shared = all(winner.normal == winner.reduce for winner in winners)
        spaces[name] = SearchSpace(tuple(ops), winners[0].num_nodes, shared_cells=shared)
    return {"check": check, "distances": distances, "rows": rows, "spaces": spaces}


def execute(plan: Plan) -> dict:
    if plan.args.report:
        result = space_check_so_far(plan.out / "rows.json")
    else:
        result = _run_check(plan)
    # The check's own record (its spaces, budget, key) goes under "check": the provenance
    # block's "config" holds the command's arguments.
    payload = {
        "command": _command(plan.args),
        "check": result["config"],
        **{key: value for key, value in result.items() if key != "config"},
        **run_record(_config(plan.args), plan.args.seeds),
    }
    write_json_atomic(plan.out / "space_check.json", payload)
    plot_space_check(result, plan.out / "space_check.png")
    tables = space_check_markdown(payload)
    (plan.out / "space_check.md").write_text("\n\n".join(t for t in tables.values() if t) + "\n")
    print(verdict_table(result))
    return payload


def _run_check(plan: Plan) -> dict:
    open_run(plan.out, _config(plan.args), resume=plan.args.resume)
    if plan.recorded is not None:
        return space_check_of_spaces(
            plan.target,
            plan.recorded["spaces"],
            plan.recorded["distances"],
            key=jax.random.key(0),
            budget=plan.budget,
            seeds=plan.args.seeds,
            path=plan.out / "rows.json",
            progress=not plan.args.no_progress,
            earlier=plan.recorded,
        )
    return space_check(
        plan.target,
        plan.zoo,
        key=jax.random.key(0),
        budget=plan.budget,
        seeds=plan.args.seeds,
        controls=plan.args.controls,
        path=plan.out / "rows.json",
        progress=not plan.args.no_progress,
    )


def run(args: argparse.Namespace) -> dict:
    return execute(check(args))


def verdict_table(result: dict, metric: str = "test_accuracy") -> str:
    """Per space its mean accuracy, per distance ρ, regret and the chosen rank, then each
    distance minus the default log-det distance, and the default's pick minus each control
    (both paired)."""
    lines = [f"{'space':<10} {'mean':>6}  interval"]
    if not result.get("complete", True):
        asked = result["config"]["seeds"]
        lines.insert(0, f"so far: seeds {result['seeds_reported']} of {asked}, the rest unfinished")
    for name, stats in result["summary"].items():
        low, high = stats[metric]["interval_95"]
        lines.append(f"{name:<10} {stats[metric]['mean']:6.3f}  [{low:.3f}, {high:.3f}]")
    lines.append(f"{'distance':<12} chosen  rank  {'rho':>6}  rho interval      regret  interval")
    for name, v in result["verdicts"][metric].items():
        columns = _rho_and_regret(
            v["rho"], v["rho_interval_95"], v["regret"], v["regret_interval_95"]
        )
        lines.append(f"{name:<12} {v['chosen']:<6} {v['chosen_rank']}/{v['baselines']}  {columns}")
    lines.append("minus log_det (paired)  rho  interval          regret  interval")
    for name, c in result.get("contrasts", {}).get(metric, {}).items():
        columns = _rho_and_regret(
            c["rho_minus_reference"],
            c["rho_interval_95"],
            c["regret_minus_reference"],
            c["regret_interval_95"],
        )
        lines.append(f"{name:<20} {columns}")
    controls = result.get("controls", {}).get(metric)
    if controls:
        lines.append("default's pick minus each control (paired)  mean  interval")
        for name, c in controls["minus"].items():
            low, high = c["interval_95"]
            label = f"{controls['chosen']} minus {name}"
            lines.append(f"{label:<24} {c['mean']:+.3f}  [{low:+.3f}, {high:+.3f}]")
    return "\n".join(lines)


def _rho_and_regret(rho, rho_interval, regret, regret_interval) -> str:
    shown = "n/a" if rho_interval is None else "[{:+.2f}, {:+.2f}]".format(*rho_interval)
    low, high = regret_interval
    return f"{rho:+6.2f}  {shown:<16}  {regret:+.3f}  [{low:+.3f}, {high:+.3f}]"


def _command(args: argparse.Namespace) -> str:
    seeds = args.seeds
    return (
        f"python -m ldnas_jax space-check --out {args.out} --target {args.target} "
        f"--seeds {seeds[0]}-{seeds[-1]} --max-train {args.max_train}"
        + ("" if args.zoo is None else f" --zoo {args.zoo}")
        + ("" if args.spaces_from is None else f" --spaces-from {args.spaces_from}")
        + ("" if getattr(args, "mnist_dir", None) is None else f" --mnist-dir {args.mnist_dir}")
        + (" --report" if args.report else "")
    )
