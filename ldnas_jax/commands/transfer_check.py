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

import jax

from ldnas_jax.checkpoint import write_json_atomic
from ldnas_jax.commands._options import add_distance_arguments, add_networks_argument
from ldnas_jax.commands._resume import (
    add_resume_argument,
    network_directory,
    open_run,
    run_config,
)
from ldnas_jax.commands.sources import add_source_arguments, register_sources_from_args
from ldnas_jax.data import EMBEDDED_TASKS, get_task, load_task
from ldnas_jax.distances._registry import make_task_distances
from ldnas_jax.models import MODEL_NAMES
from ldnas_jax.pipeline import DistanceOptions
from ldnas_jax.run_info import run_record
from ldnas_jax.tasks._networks import TaskNetwork, load_task_network, save_task_network
from ldnas_jax.experiments._transfer import (
    SIGN_CONVENTION,
    FineTuneBudget,
    summarize_transfer,
    train_from_scratch,
    transfer_check,
    transfer_targets,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=[t.name for t in EMBEDDED_TASKS],
        help="tasks: every one is a baseline of the others (default: the embedded E0..E7)",
    )
    parser.add_argument(
        "--targets", nargs="+", default=None, help="targets to rank baselines for (default: all)"
    )
    parser.add_argument("--out", default="runs/transfer_check", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=MODEL_NAMES, default="small_vgg")
    parser.add_argument("--epochs", type=int, default=3, help="ε-network epochs")
    parser.add_argument("--batch-size", type=int, default=32, help="ε-network and fine-tuning")
    parser.add_argument("--learning-rate", type=float, default=3e-3, help="ε-network Adam rate")
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument(
        "--max-train", type=int, default=1000, help="ε-network training examples per task (0: all)"
    )
    parser.add_argument("--max-test", type=int, default=500, help="test examples per task (0: all)")
    parser.add_argument(
        "--finetune-examples",
        type=int,
        default=256,
        help="target training examples for fine-tuning (0: all)",
    )
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument(
        "--head-only",
        action="store_true",
        help="train only the new head (a linear probe) instead of every weight",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="fine-tuning seeds to average accuracy over"
    )
    parser.add_argument(
        "--fisher-examples", type=int, default=256, help="target examples per Fisher"
    )
    add_distance_arguments(parser)
    add_networks_argument(parser)
    add_resume_argument(parser)
    parser.add_argument("--no-progress", action="store_true")
    add_source_arguments(parser)


def run(args: argparse.Namespace) -> dict:
    register_sources_from_args(args)
    tasks = [get_task(name) for name in args.tasks]  # unknown names raise here
    targets = transfer_targets([t.name for t in tasks], args.targets)
    out = Path(args.out)
    checkpoints = open_run(out, run_config(args), resume=args.resume)
    progress = not args.no_progress
    key = jax.random.key(args.seed)
    datas = [
        load_task(
            task, seed=args.seed, max_train=args.max_train or None, max_test=args.max_test or None
        )
        for task in tasks
    ]
    names = [d.name for d in datas]
    print(f"[1/2] ε-networks for {', '.join(names)}")
    networks = [_network(d, i, key, args, checkpoints, progress) for i, d in enumerate(datas)]
    for net in networks:
        print(f"  {net.task}: test accuracy {net.test_accuracy:.3f}")

    normalize = None if args.normalize == "none" else args.normalize
    options = DistanceOptions(
        estimator=args.estimator,
        label_mode=args.label_mode,
        sigma=args.sigma,
        normalize=normalize,
        max_examples=args.fisher_examples,
    )
    distances = make_task_distances(sigma=args.sigma, normalize=normalize)
    budget = FineTuneBudget(
        max_examples=args.finetune_examples or None,
        epochs=args.finetune_epochs,
        batch_size=args.batch_size,
        learning_rate=args.finetune_lr,
        train_backbone=not args.head_only,
    )
    print(
        f"[2/2] transfer: {len(targets)} targets × {len(names) - 1} baselines, "
        f"{args.finetune_examples} examples × {args.finetune_epochs} epochs, "
        f"{args.repeats} repeat(s)"
    )
    results = transfer_check(
        networks,
        datas,
        key=jax.random.fold_in(key, 1),
        distances=distances,
        targets=targets,
        budget=budget,
        repeats=args.repeats,
        options=options,
        progress=progress,
    )
    summary = summarize_transfer(results)
    payload = {
        **run_record(vars(args), [args.seed]),
        "tasks": names,
        "targets": targets,
        "distance_names": list(distances),
        "sign_convention": SIGN_CONVENTION,
        "budget": budget._asdict(),
        "epsilon_networks": {n.task: n.test_accuracy for n in networks},
        "per_target": {t: _jsonable(r._asdict()) for t, r in results.items()},
        "summary": _jsonable(summary),
    }
    write_json_atomic(out / "transfer_check.json", payload)
    print(_report(results, summary, list(distances)))
    print(f"wrote {out / 'transfer_check.json'}")
    return payload


def _network(data, index, key, args, checkpoints, progress) -> TaskNetwork:
    """The ε-network of one task: loaded from its directory if saved there, else trained.

    The directory is ``--networks``'s when given, else the run's own checkpoints.

    Trained through :func:`ldnas_jax.experiments.train_from_scratch` on all of the
    task's (capped) training data, which shares its compiled step with the
    fine-tuning of targets of the same class count.
    """
    directory = network_directory(args.networks, checkpoints, args.seed, data.name)
    if (directory / "meta.json").exists():
        network, meta = load_task_network(directory)
        if meta["model_name"] != args.model or meta["task"] != data.name:
            raise SystemExit(
                f"{directory} holds {meta['model_name']} for {meta['task']}, "
                f"not {args.model} for {data.name}"
            )
        return network
    result = train_from_scratch(
        args.model,
        data,
        key=jax.random.fold_in(key, 100 + index),
        max_examples=None,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        progress=progress,
    )
    network = TaskNetwork(
        data.name,
        args.model,
        data.num_classes,
        result.variables,
        result.test_accuracy,
        args.epsilon,
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
