"""``python -m ldnas_jax transfer-check``: does "closest" predict what transfers best?

For every target t, each other task's ε-network gets a fresh head of t's size and
is fine-tuned on a small budget of t's training examples; the baselines are
ranked by t's test accuracy. Each task distance is scored against that ranking by
Spearman's ρ between −d[b, t] and the accuracy (+1: smaller distance, better
transfer; see :data:`ldnas_jax.experiments._transfer.SIGN_CONVENTION`) and by whether
its closest task is a best transfer source. The distances: log-det eq. 2 at the chosen
σ and normalisation (``log_det``), the paper's unnormalised eq. 2 with σ = 1e-2
(``log_det_paper``), eq. 2 on full Fishers (``log_det_full``, unless
``--no-full-log-det``), Fréchet, Task2Vec and cosine, all on the same Fishers.

``--seeds N`` repeats the whole check for seeds 0..N-1: each seed trains its own
ε-networks and draws its own fine-tuning and Fisher keys (``jax.random.key(seed)``);
the tasks' data is the same for every seed. The statistics treat each (target, seed)
pair as one unit: the mean ρ over the units and a percentile bootstrap interval from
``--resamples`` resamples of them, the share of units whose closest task is a best
source, and, when the tasks come from more than one source (domain), the share whose
closest task shares the target's domain.

ε-networks are saved under ``OUT/checkpoints/networks/seed_S/TASK`` (or
``--networks DIR``), and each (seed, target) result under
``OUT/checkpoints/transfer/seed_S/TARGET.json`` as it finishes (the full-Fisher table
of a seed next to them); ``--resume`` continues a killed run from them, refusing other
arguments than the recorded ``OUT/checkpoints/config.json``, and writes the JSON an
unbroken run writes. Without ``--resume`` a non-empty ``--out`` is refused.

Writes ``OUT/transfer_check.json``:

* ``config``, ``seeds``, ``versions``, ``devices``, ``written``: the run record;
* ``tasks``, ``targets``, ``domains``, ``distance_names``, ``sign_convention``, ``budget``;
* ``per_seed``: ``{seed: {epsilon_networks, per_target, summary}}``: ``epsilon_networks``
  ``{task: test accuracy of its ε-network}``; ``per_target`` ``{t: {baselines, accuracy,
  loss, ranking, best_sources, scratch_accuracy, self_accuracy, distances, spearman,
  spearman_loss, closest, closest_is_best, closest_rank, regret}}`` (fields of
  :class:`ldnas_jax.experiments._transfer.TargetTransfer`; an undefined ρ is null);
  ``summary`` that seed's :func:`ldnas_jax.experiments._transfer.summarize_transfer`;
* ``statistics``: :func:`ldnas_jax.experiments._transfer.transfer_statistics` over every
  (target, seed) unit, per distance: ``mean_spearman`` and its ``spearman_interval``,
  ``closest_is_best_rate``, ``same_domain_rate``, ``seed_agreement``, ...
"""

import argparse
import json
import math
from pathlib import Path
from typing import NamedTuple

import jax

from ldnas_jax.checkpoint import write_json_atomic
from ldnas_jax.commands._networks import saved_or_trained_network
from ldnas_jax.commands._options import (
    DISTANCE_FLAGS,
    EPSILON_FLAGS,
    RUN_FLAGS,
    add_flags,
    check_tasks,
    count_or_zero,
    distance_options,
    epsilon_options,
    flag,
    positive_float,
    positive_int,
)
from ldnas_jax.commands._resume import (
    add_networks_argument,
    add_resume_argument,
    check_run,
    open_run,
    run_config,
)
from ldnas_jax.commands.sources import add_source_arguments, register_sources_from_args
from ldnas_jax.data import EMBEDDED_TASKS, TaskData, load_task
from ldnas_jax.distances import FULL_LOG_DET
from ldnas_jax.experiments import (
    SIGN_CONVENTION,
    EpsilonOptions,
    FineTuneBudget,
    full_log_det_table,
    summarize_transfer,
    train_epsilon_network,
    train_from_scratch,
    transfer_check,
    transfer_distances,
    transfer_from_json,
    transfer_statistics,
    transfer_targets,
)
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks import DistanceOptions, TaskNetwork

_OPTIONS = {
    "--tasks": flag(
        "tasks, at least three: every one is a baseline of the others",
        [t.name for t in EMBEDDED_TASKS],
        nargs="+",
    ),
    "--targets": flag("targets to rank baselines for (default: all)", None, nargs="+"),
    "--out": flag("output directory", "runs/transfer_check"),
    "--seeds": flag(
        "seeds 0..N-1, each with its own ε-networks, fine-tuning and Fisher keys",
        1,
        type=positive_int,
    ),
    **EPSILON_FLAGS,
    "--learning-rate": flag("ε-network Adam rate", 3e-3, type=positive_float),
    "--max-train": flag("ε-network training examples per task (0: all)", 1000, type=count_or_zero),
    "--max-test": flag("test examples per task (0: all)", 500, type=count_or_zero),
    "--finetune-examples": flag(
        "target training examples for fine-tuning (0: all)", 256, type=count_or_zero
    ),
    "--finetune-epochs": flag("fine-tuning epochs", 4, type=positive_int),
    "--finetune-lr": flag("fine-tuning Adam rate", 1e-3, type=positive_float),
    "--head-only": flag(
        "train only the new head (a linear probe) instead of every weight",
        False,
        action="store_true",
    ),
    "--repeats": flag("fine-tuning seeds to average accuracy over", 1, type=positive_int),
    **DISTANCE_FLAGS,
    "--no-full-log-det": flag(
        "skip log_det_full (eq. 2 on full Fishers: one M × n gradient matrix per pair)",
        False,
        action="store_true",
    ),
    "--resamples": flag("bootstrap resamples of the (target, seed) units", 2000, type=positive_int),
    **RUN_FLAGS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, _OPTIONS, epochs=3, batch_size=32)
    add_networks_argument(parser)
    add_resume_argument(parser)
    add_source_arguments(parser)


class Plan(NamedTuple):
    """A checked ``transfer-check`` run."""

    args: argparse.Namespace
    out: Path
    datas: list[TaskData]
    targets: list[str]
    domains: dict[str, str]
    epsilon: EpsilonOptions
    options: DistanceOptions
    budget: FineTuneBudget


def check(args: argparse.Namespace) -> Plan:
    """Checks every argument and loads the tasks' data; writes nothing."""
    register_sources_from_args(args)
    tasks = check_tasks(args.tasks)
    targets = transfer_targets([t.name for t in tasks], args.targets)
    options = distance_options(args)
    if not args.no_full_log_det and options.estimator != "empirical":
        raise ValueError(
            f"{FULL_LOG_DET} needs --estimator empirical; pass --no-full-log-det to skip it"
        )
    budget = FineTuneBudget(
        max_examples=args.finetune_examples or None,
        epochs=args.finetune_epochs,
        batch_size=args.batch_size,
        learning_rate=args.finetune_lr,
        train_backbone=not args.head_only,
    )
    check_run(args.out, run_config(args), resume=args.resume)
    # One data sample for every seed: the seeds vary networks and keys, not the examples.
    datas = [
        load_task(task, seed=0, max_train=args.max_train or None, max_test=args.max_test or None)
        for task in tasks
    ]
    domains = {t.name: t.source for t in tasks}
    return Plan(
        args, Path(args.out), datas, targets, domains, epsilon_options(args), options, budget
    )


def execute(plan: Plan) -> dict:
    """Per seed: ε-networks, the transfer of every baseline to every target; the statistics."""
    args, out, datas = plan.args, plan.out, plan.datas
    checkpoints = open_run(out, run_config(args), resume=args.resume)
    names = [d.name for d in datas]
    distances = transfer_distances(plan.options)
    distance_names = [*distances, *([] if args.no_full_log_det else [FULL_LOG_DET])]
    seeds = list(range(args.seeds))
    runs, per_seed = {}, {}
    for seed in seeds:
        key = jax.random.key(seed)
        print(f"seed {seed}: [1/2] ε-networks for {', '.join(names)}")
        networks = [_network(plan, d, i, key, checkpoints, seed) for i, d in enumerate(datas)]
        for net in networks:
            print(f"  {net.task}: test accuracy {net.test_accuracy:.3f}")
        folder = checkpoints / "transfer" / f"seed_{seed}"
        tables = {} if args.no_full_log_det else {FULL_LOG_DET: _full_table(plan, networks, folder)}
        print(
            f"seed {seed}: [2/2] transfer: {len(plan.targets)} targets × {len(names) - 1} "
            f"baselines, {args.finetune_examples} examples × {args.finetune_epochs} epochs, "
            f"{args.repeats} repeat(s)"
        )
        results = {}
        for target in plan.targets:
            path = folder / f"{target}.json"
            if not path.exists():
                (result,) = transfer_check(
                    networks,
                    datas,
                    key=jax.random.fold_in(key, 1),
                    distances=distances,
                    targets=[target],
                    budget=plan.budget,
                    repeats=args.repeats,
                    options=plan.options,
                    tables=tables,
                    progress=not args.no_progress,
                ).values()
                write_json_atomic(path, _jsonable(result._asdict()))
            # Read back in both cases, so that a resumed run reports exactly what it saved.
            results[target] = transfer_from_json(json.loads(path.read_text()))
        summary = summarize_transfer(results)
        print(_report(results, summary, distance_names))
        runs[seed] = results
        per_seed[str(seed)] = {
            "epsilon_networks": {n.task: n.test_accuracy for n in networks},
            "per_target": {t: _jsonable(r._asdict()) for t, r in results.items()},
            "summary": _jsonable(summary),
        }
    statistics = transfer_statistics(runs, domains=plan.domains, resamples=args.resamples)
    payload = {
        **run_record(vars(args), seeds),
        "tasks": names,
        "targets": plan.targets,
        "domains": plan.domains,
        "distance_names": distance_names,
        "sign_convention": SIGN_CONVENTION,
        "budget": plan.budget._asdict(),
        "per_seed": per_seed,
        "statistics": _jsonable(statistics),
    }
    write_json_atomic(out / "transfer_check.json", payload)
    print(_statistics_report(statistics, distance_names))
    print(f"wrote {out / 'transfer_check.json'}")
    return payload


def run(args: argparse.Namespace) -> dict:
    """:func:`check`, then :func:`execute`."""
    return execute(check(args))


def _full_table(plan: Plan, networks: list[TaskNetwork], folder: Path):
    """The seed's K×K full-Fisher eq. 2 table, read from ``folder`` if saved there."""
    path = folder / f"{FULL_LOG_DET}.json"
    if not path.exists():
        table = full_log_det_table(
            networks, plan.datas, options=plan.options, progress=not plan.args.no_progress
        )
        write_json_atomic(path, {"tasks": [n.task for n in networks], "table": table.tolist()})
    return json.loads(path.read_text())["table"]


def _network(
    plan: Plan, data: TaskData, index: int, key, checkpoints: Path, seed: int
) -> TaskNetwork:
    """The ε-network of one task and seed: loaded from its directory if saved there, else trained.

    The directory is ``--networks``'s when given, else the run's own checkpoints.

    Trained through :func:`ldnas_jax.experiments.train_from_scratch` on all of the
    task's (capped) training data, which shares its compiled step with the
    fine-tuning of targets of the same class count; with ``--max-epochs``, through
    :func:`ldnas_jax.tasks.train_task_network`, which trains on until validation
    accuracy reaches 1 − ε.
    """
    return saved_or_trained_network(
        plan.args.networks,
        checkpoints,
        seed,
        data,
        model=plan.epsilon.model_name,
        train=lambda: _train_network(plan, data, jax.random.fold_in(key, 100 + index)),
    )


def _train_network(plan: Plan, data: TaskData, key: jax.Array) -> TaskNetwork:
    """A new ε-network for ``data`` (see :func:`_network` for which trainer)."""
    epsilon, progress = plan.epsilon, not plan.args.no_progress
    if epsilon.max_epochs is not None:
        return train_epsilon_network(data, epsilon, key=key, progress=progress)
    result = train_from_scratch(
        epsilon.model_name,
        data,
        key=key,
        max_examples=None,
        epochs=epsilon.epochs,
        batch_size=epsilon.batch_size,
        learning_rate=epsilon.learning_rate,
        progress=progress,
    )
    return TaskNetwork(
        data.name,
        epsilon.model_name,
        data.num_classes,
        result.variables,
        result.test_accuracy,
        epsilon.epsilon,
    )


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


def _interval(values) -> str:
    return "n/a" if values is None else f"[{values[0]:+.2f}, {values[1]:+.2f}]"


def _statistics_report(statistics: dict, distance_names) -> str:
    width = max(len(n) for n in distance_names)
    header = (
        f"over {statistics['units']} (target, seed) units, {statistics['seeds']} seed(s); "
        f"rho = Spearman(-distance, transfer accuracy) with its bootstrap "
        f"{statistics['level']:.0%} interval ({statistics['resamples']} resamples of the units):"
    )
    lines = [header]
    for name in distance_names:
        s = statistics["distances"][name]
        rate = s["closest_is_best_rate"]
        same = s["same_domain_rate"]
        lines.append(
            f"  {name:<{width}}  rho {_signed(s['mean_spearman'])} "
            f"{_interval(s['spearman_interval'])}, closest = best source "
            f"{s['closest_is_best']}/{s['ranked_units']}"
            f"{'' if rate is None else f' ({rate:.2f})'}, same domain "
            f"{'n/a' if same is None else f'{same:.2f}'}, seeds agree "
            f"{s['seed_agreement']}/{statistics['targets']}"
        )
    return "\n".join(lines)
