"""``python -m ldnas_jax transfer-check``: does "closest" predict what transfers best?

For every target t, each other task's ε-network gets a fresh head of t's size and
is fine-tuned on a small budget of t's training examples; the baselines are
ranked by t's test accuracy. Each task distance (every one of
:func:`ldnas_jax.distances.make_task_distances`) is scored against that
ranking by Spearman's ρ between −d[b, t] and the accuracy (+1: smaller distance,
better transfer; see :data:`ldnas_jax.experiments._transfer.SIGN_CONVENTION`) and by whether
its closest task is a best transfer source.

ε-networks are saved under ``OUT/checkpoints/networks/seed_S/TASK`` (or
``--networks DIR``) as they are trained; ``--resume`` continues a killed run from
them, refusing other arguments than the recorded ``OUT/checkpoints/config.json``.
Without ``--resume`` a non-empty ``--out`` is refused.

Writes ``OUT/transfer_check.json``:

* ``config``, ``seeds``, ``versions``, ``devices``, ``written``: the run record;
* ``tasks``, ``targets``, ``distance_names``, ``sign_convention``, ``budget``;
* ``epsilon_networks``: ``{task: test accuracy of its ε-network}``;
* ``per_target``: ``{t: {baselines, accuracy, loss, ranking, best_sources,
  scratch_accuracy, self_accuracy, distances, spearman, spearman_loss, closest,
  closest_is_best, closest_rank, regret}}`` (fields of :class:`ldnas_jax.experiments._transfer.TargetTransfer`;
  an undefined ρ is null);
* ``summary``: ``distances``, per distance ``mean_spearman`` (``spearman_defined`` /
  ``spearman_undefined`` targets), ``mean_spearman_loss``, ``closest_is_best`` (a count),
  ``mean_closest_rank`` and ``mean_regret``, the last three over the ``targets_ranked``
  targets whose baselines do not all tie; ``targets``; and ``best_transfer_beats_scratch``,
  the targets where the best baseline beats training from scratch on the same budget.
"""

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import jax

from ldnas_jax.checkpoint import write_json_atomic
from ldnas_jax.commands._options import (
    DISTANCE_FLAGS,
    EPSILON_FLAGS,
    RUN_FLAGS,
    add_flags,
    check_tasks,
    count_or_zero,
    distance_options,
    epsilon_options,
    positive_float,
    positive_int,
)
from ldnas_jax.commands._resume import (
    add_networks_argument,
    add_resume_argument,
    check_run,
    network_directory,
    open_run,
    run_config,
    saved_network,
)
from ldnas_jax.commands.sources import add_source_arguments, register_sources_from_args
from ldnas_jax.data import EMBEDDED_TASKS, TaskData, load_task
from ldnas_jax.distances._registry import make_task_distances
from ldnas_jax.experiments._fine_tune import FineTuneBudget, train_from_scratch
from ldnas_jax.experiments._reproduce import EpsilonOptions
from ldnas_jax.experiments._transfer import (
    SIGN_CONVENTION,
    summarize_transfer,
    transfer_check,
    transfer_targets,
)
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks._networks import TaskNetwork, save_task_network
from ldnas_jax.tasks._options import DistanceOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[t.name for t in EMBEDDED_TASKS],
        help="tasks, at least three: every one is a baseline of the others",
    )
    parser.add_argument(
        "--targets", nargs="+", default=None, help="targets to rank baselines for (default: all)"
    )
    parser.add_argument("--out", default="runs/transfer_check", help="output directory")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the ε-networks, fine-tuning and Fishers"
    )
    add_flags(parser, EPSILON_FLAGS, epochs=3, batch_size=32)
    parser.add_argument(
        "--learning-rate", type=positive_float, default=3e-3, help="ε-network Adam rate"
    )
    parser.add_argument(
        "--max-train",
        type=count_or_zero,
        default=1000,
        help="ε-network training examples per task (0: all)",
    )
    parser.add_argument(
        "--max-test", type=count_or_zero, default=500, help="test examples per task (0: all)"
    )
    parser.add_argument(
        "--finetune-examples",
        type=count_or_zero,
        default=256,
        help="target training examples for fine-tuning (0: all)",
    )
    parser.add_argument(
        "--finetune-epochs", type=positive_int, default=4, help="fine-tuning epochs"
    )
    parser.add_argument(
        "--finetune-lr", type=positive_float, default=1e-3, help="fine-tuning Adam rate"
    )
    parser.add_argument(
        "--head-only",
        action="store_true",
        help="train only the new head (a linear probe) instead of every weight",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        help="fine-tuning seeds to average accuracy over",
    )
    add_flags(parser, DISTANCE_FLAGS)
    add_networks_argument(parser)
    add_resume_argument(parser)
    add_flags(parser, RUN_FLAGS)
    add_source_arguments(parser)


class Plan(NamedTuple):
    """A checked ``transfer-check`` run."""

    args: argparse.Namespace
    out: Path
    datas: list[TaskData]
    targets: list[str]
    epsilon: EpsilonOptions
    options: DistanceOptions
    budget: FineTuneBudget


def check(args: argparse.Namespace) -> Plan:
    """Checks every argument and loads the tasks' data; writes nothing."""
    register_sources_from_args(args)
    tasks = check_tasks(args.tasks)
    targets = transfer_targets([t.name for t in tasks], args.targets)
    options = distance_options(args)
    budget = FineTuneBudget(
        max_examples=args.finetune_examples or None,
        epochs=args.finetune_epochs,
        batch_size=args.batch_size,
        learning_rate=args.finetune_lr,
        train_backbone=not args.head_only,
    )
    check_run(args.out, run_config(args), resume=args.resume)
    datas = [
        load_task(
            task, seed=args.seed, max_train=args.max_train or None, max_test=args.max_test or None
        )
        for task in tasks
    ]
    return Plan(args, Path(args.out), datas, targets, epsilon_options(args), options, budget)


def execute(plan: Plan) -> dict:
    """ε-networks, the transfer of every baseline to every target, the report."""
    args, out, datas = plan.args, plan.out, plan.datas
    checkpoints = open_run(out, run_config(args), resume=args.resume)
    key = jax.random.key(args.seed)
    names = [d.name for d in datas]
    print(f"[1/2] ε-networks for {', '.join(names)}")
    networks = [_network(plan, d, i, key, checkpoints) for i, d in enumerate(datas)]
    for net in networks:
        print(f"  {net.task}: test accuracy {net.test_accuracy:.3f}")
    distances = make_task_distances(sigma=plan.options.sigma, normalize=plan.options.normalize)
    print(
        f"[2/2] transfer: {len(plan.targets)} targets × {len(names) - 1} baselines, "
        f"{args.finetune_examples} examples × {args.finetune_epochs} epochs, "
        f"{args.repeats} repeat(s)"
    )
    results = transfer_check(
        networks,
        datas,
        key=jax.random.fold_in(key, 1),
        distances=distances,
        targets=plan.targets,
        budget=plan.budget,
        repeats=args.repeats,
        options=plan.options,
        progress=not args.no_progress,
    )
    summary = summarize_transfer(results)
    payload = {
        **run_record(vars(args), [args.seed]),
        "tasks": names,
        "targets": plan.targets,
        "distance_names": list(distances),
        "sign_convention": SIGN_CONVENTION,
        "budget": plan.budget._asdict(),
        "epsilon_networks": {n.task: n.test_accuracy for n in networks},
        "per_target": {t: _jsonable(r._asdict()) for t, r in results.items()},
        "summary": _jsonable(summary),
    }
    write_json_atomic(out / "transfer_check.json", payload)
    print(_report(results, summary, list(distances)))
    print(f"wrote {out / 'transfer_check.json'}")
    return payload


def run(args: argparse.Namespace) -> dict:
    """:func:`check`, then :func:`execute`."""
    return execute(check(args))


def _network(plan: Plan, data: TaskData, index: int, key, checkpoints: Path) -> TaskNetwork:
    """The ε-network of one task: loaded from its directory if saved there, else trained.

    The directory is ``--networks``'s when given, else the run's own checkpoints.

    Trained through :func:`ldnas_jax.experiments.train_from_scratch` on all of the
    task's (capped) training data, which shares its compiled step with the
    fine-tuning of targets of the same class count.
    """
    args, epsilon = plan.args, plan.epsilon
    directory = network_directory(args.networks, checkpoints, args.seed, data.name)
    network = saved_network(directory, model=epsilon.model_name, task=data.name)
    if network is not None:
        return network
    result = train_from_scratch(
        epsilon.model_name,
        data,
        key=jax.random.fold_in(key, 100 + index),
        max_examples=None,
        epochs=epsilon.epochs,
        batch_size=epsilon.batch_size,
        learning_rate=epsilon.learning_rate,
        progress=not args.no_progress,
    )
    network = TaskNetwork(
        data.name,
        epsilon.model_name,
        data.num_classes,
        result.variables,
        result.test_accuracy,
        epsilon.epsilon,
    )
    save_task_network(network, directory, input_shape=data.train.x.shape[1:])
    return network


def _jsonable(value):
    """Tuples to lists and NaN (an undefined ρ) to None, so the file is strict JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _signed(value) -> str:
    return " n/a" if value is None or not math.isfinite(value) else f"{value:+.2f}"


def _report(results, summary, distance_names) -> str:
    width = max(len(n) for n in distance_names)
    lines = []
    for t, r in results.items():
        ranked = ", ".join(f"{b} {r.accuracy[b]:.3f}" for b in r.ranking)
        lines.append(
            f"target {t}: transfer {ranked} | scratch {r.scratch_accuracy:.3f}, "
            f"self {r.self_accuracy:.3f}"
        )
        for name in distance_names:
            verdict = "= best source" if r.closest_is_best[name] else "not the best source"
            lines.append(
                f"  {name:<{width}}  rho {_signed(r.spearman[name])} "
                f"(by loss {_signed(r.spearman_loss[name])})  closest {r.closest[name]} {verdict}"
            )
    lines.append(
        "summary (rho = Spearman(-distance, transfer accuracy), by loss: with -test loss; "
        "+1 is ideal):"
    )
    ranked = summary["targets_ranked"]
    for name in distance_names:
        s = summary["distances"][name]
        regret = "n/a" if s["mean_regret"] is None else f"{s['mean_regret']:.3f}"
        lines.append(
            f"  {name:<{width}}  mean rho {_signed(s['mean_spearman'])} over "
            f"{s['spearman_defined']} targets (by loss {_signed(s['mean_spearman_loss'])}), "
            f"closest = best source for {s['closest_is_best']}/{ranked} ranked targets, "
            f"mean regret {regret}"
        )
    lines.append(
        f"best baseline beats training from scratch for "
        f"{summary['best_transfer_beats_scratch']}/{summary['targets']} targets"
    )
    return "\n".join(lines)
