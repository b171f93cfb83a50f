"""Command-line flags shared by the commands, and the one place they become typed configs.

Flags are tables ``{flag: (argparse keywords, default)}``: :data:`EPSILON_FLAGS` (the
ε-networks), :data:`DISTANCE_FLAGS` (each F_{b,t} and eq. 2), :data:`SEARCH_FLAGS` (FUSE and
final training), :data:`ZOO_FLAGS` (the baselines' architectures). A command adds the tables
it needs with :func:`add_flags`, changing defaults where its scale differs, and turns the
parsed flags into configs with :func:`distance_options`, :func:`epsilon_options`,
:func:`search_budget` and :func:`architecture_options`.

Counts and rates are typed (:func:`positive_int`, :func:`positive_float`, ...), so a bad value
is refused by the parser, before a command writes anything.
"""

import argparse
from typing import Any

from ldnas_jax.commands._resume import add_resume_argument
from ldnas_jax.commands._text import show
from ldnas_jax.commands.sources import add_source_arguments
from ldnas_jax.data import Task, get_task
from ldnas_jax.distances import DEFAULT_NORMALIZE, DEFAULT_SIGMA, NORMALIZATIONS
from ldnas_jax.experiments import EpsilonOptions
from ldnas_jax.fisher import ESTIMATORS
from ldnas_jax.models import MODEL_NAMES
from ldnas_jax.pipeline import DISTANCE_NAMES, SearchBudget
from ldnas_jax.tasks import (
    DEFAULT_LABEL_MODE,
    LABEL_MODES,
    DistanceOptions,
    check_distance_options,
)
from ldnas_jax.zoo import ArchitectureOptions

Flag = tuple[dict[str, Any], Any]  # (argparse keywords, default)


def _parse(text: str, convert, test, requirement: str):
    """``convert(text)`` if it passes ``test``, else an error argparse reports for the flag."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}") from None
    if not test(value):
        raise argparse.ArgumentTypeError(f"expected {requirement}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1: counts of epochs, seeds, examples (an argparse ``type``).

    Example:
      >>> positive_int("3")
      3
    """
    return _parse(text, int, lambda v: v >= 1, "an integer >= 1")


def count_or_zero(text: str) -> int:
    """An integer >= 0, where 0 means "all" or "never" as the flag's help says.

    Example:
      >>> count_or_zero("0")
      0
    """
    return _parse(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0: σ, learning rates.

    Example:
      >>> positive_float("1e-3")
      0.001
    """
    return _parse(text, float, lambda v: 0 < v < float("inf"), "a finite number > 0")


def fraction(text: str) -> float:
    """A number in (0, 1): ε.

    Example:
      >>> fraction("0.1")
      0.1
    """
    return _parse(text, float, lambda v: 0 < v < 1, "a number in (0, 1)")


def flag(help: str, default: Any, **keywords) -> Flag:
    """One table entry: argparse ``keywords`` with their ``help``, and the default value."""
    return {"help": help, **keywords}, default


EPSILON_FLAGS: dict[str, Flag] = {
    "--model": flag("ε-network architecture (the paper: vgg16)", "small_vgg", choices=MODEL_NAMES),
    "--epochs": flag("ε-network training epochs", 4, type=positive_int),
    "--max-epochs": flag(
        "ε-network epoch cap: train past --epochs until validation accuracy >= 1 - ε, at "
        "most this many epochs, keeping the best epoch on validation (unset: exactly --epochs)",
        None,
        type=positive_int,
    ),
    "--batch-size": flag("ε-network batch size", 64, type=positive_int),
    "--epsilon": flag("ε of the check accuracy >= 1 - ε", 0.1, type=fraction),
}

DISTANCE_FLAGS: dict[str, Flag] = {
    "--fisher-examples": flag("target examples per Fisher F_{b,t}", 256, type=positive_int),
    "--estimator": flag(
        "Fisher estimator: empirical (target labels, eq. 1), sampled or exact (the "
        "network's own predictive distribution)",
        "empirical",
        choices=ESTIMATORS,
    ),
    "--label-mode": flag(
        "how the empirical Fisher handles a head smaller than the target's labels: pad "
        "(zero logits, the paper's) or predicted (the network's own labels)",
        DEFAULT_LABEL_MODE,
        choices=LABEL_MODES,
    ),
    "--sigma": flag("σ of the log-det distance, eq. 2", DEFAULT_SIGMA, type=positive_float),
    "--normalize": flag(
        "Fisher normalisation before eq. 2: 'sum' divides each by its total (the authors' "
        "code), 'target_mean' takes σ relative to the target network's mean Fisher entry, "
        "'none' is the paper's absolute σ",
        DEFAULT_NORMALIZE or "none",
        choices=["none" if mode is None else mode for mode in NORMALIZATIONS],
    ),
}

# Which distance of the family picks the closest task (Algorithm 1); its own table, since a
# command that tabulates several distances (reproduce's --distances) takes a list instead.
FAMILY_FLAGS: dict[str, Flag] = {
    "--distance": flag(
        "the distance that picks the closest task: log_det (eq. 2), frechet, task2vec, cosine, "
        "or log_det_full (eq. 2 with full Fishers, for small networks)",
        "log_det",
        choices=DISTANCE_NAMES,
    ),
}

SEARCH_FLAGS: dict[str, Flag] = {
    "--candidates": flag(
        "C, new candidates per FUSE iteration (the paper: 5)", 3, type=positive_int
    ),
    "--iterations": flag("FUSE iterations (the paper: 200)", 3, type=positive_int),
    "--rounds": flag("FUSE α rounds per iteration", 4, type=positive_int),
    "--warmup-rounds": flag(
        "FUSE rounds of weight steps alone before α moves (see benchmarks.fuse_pick_rate)",
        SearchBudget().fuse.warmup_rounds,
        type=count_or_zero,
    ),
    "--channels": flag("stem channels of searched networks", 8, type=positive_int),
    "--cells": flag("cells of searched networks", 2, type=positive_int),
    "--final-epochs": flag("final training epochs of the winner", 4, type=positive_int),
}

ZOO_FLAGS: dict[str, Flag] = {
    "--zoo-samples": flag(
        "random-search samples per baseline architecture (the quality gate needs >= 6)",
        ArchitectureOptions().search.num_samples,
        type=positive_int,
    ),
    "--zoo-steps": flag(
        "training steps per zoo sample (see benchmarks.zoo_budget)",
        ArchitectureOptions().search.train_steps,
        type=positive_int,
    ),
}

RUN_FLAGS: dict[str, Flag] = {
    "--no-progress": flag("no progress bars", False, action="store_true"),
}


def add_flags(
    parser: argparse.ArgumentParser,
    flags: dict[str, Flag],
    *,
    suppress: bool = False,
    **defaults,
) -> None:
    """Adds ``flags`` to ``parser``; ``defaults`` (by destination name) change a default.

    With ``suppress`` a flag left off the command line is absent from the namespace
    (``argparse.SUPPRESS``), so that a config file can fill it (``reproduce``); its help
    then states the default.

    Example:
      >>> parser = argparse.ArgumentParser()
      >>> add_flags(parser, EPSILON_FLAGS, epochs=2)
      >>> parser.parse_args([]).epochs, parser.parse_args(["--model", "vgg16"]).model
      (2, 'vgg16')
    """
    unknown = set(defaults) - {dest(f) for f in flags}
    if unknown:
        raise ValueError(f"defaults for flags not in the table: {sorted(unknown)}")
    for name, (keywords, default) in flags.items():
        default = defaults.get(dest(name), default)
        if suppress and states_default(default):
            # The parser cannot show a default it does not hold; the help says it.
            keywords = {**keywords, "help": f"{keywords['help']} (default: {show(default)})"}
        parser.add_argument(name, **keywords, default=argparse.SUPPRESS if suppress else default)


def add_resumable_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags a resumable command's list ends with: the local data sources
    (``--mnist-dir``, ``--npz-source``), ``--resume`` and :data:`RUN_FLAGS`."""
    add_source_arguments(parser)
    add_resume_argument(parser)
    add_flags(parser, RUN_FLAGS)


def states_default(default: Any) -> bool:
    """Whether a flag's help ends in its default: not when unset (None, off, empty), where
    the help says what leaving it off means.

    Example:
      >>> [states_default(v) for v in (0, "runs", None, False, [], argparse.SUPPRESS)]
      [True, True, False, False, False, False]
    """
    if default is None or default is False or default is argparse.SUPPRESS:
        return False
    return not (isinstance(default, (list, tuple, str)) and not default)


def dest(flag_name: str) -> str:
    """The namespace attribute of a flag.

    Example:
      >>> dest("--fisher-examples")
      'fisher_examples'
    """
    return flag_name.lstrip("-").replace("-", "_")


def flag_defaults(*tables: dict[str, Flag]) -> dict[str, Any]:
    """``{destination: default}`` of the flags of ``tables`` (later tables win).

    Example:
      >>> flag_defaults(EPSILON_FLAGS)["batch_size"]
      64
    """
    return {dest(name): default for table in tables for name, (_, default) in table.items()}


# ------------------------------------------------------------------- flags -> configs


def distance_options(args: argparse.Namespace) -> DistanceOptions:
    """The :class:`~ldnas_jax.tasks.DistanceOptions` of :data:`DISTANCE_FLAGS`, checked.

    Example:
      >>> args = argparse.Namespace(estimator="sampled", label_mode="pad", sigma=0.01,
      ...                           normalize="none", fisher_examples=64)
      >>> distance_options(args)[:5]
      ('sampled', 'pad', 0.01, None, 64)
    """
    return check_distance_options(
        DistanceOptions(
            estimator=args.estimator,
            label_mode=args.label_mode,
            sigma=args.sigma,
            normalize=None if args.normalize == "none" else args.normalize,
            max_examples=args.fisher_examples,
        )
    )


def epsilon_options(args: argparse.Namespace) -> EpsilonOptions:
    """The ε-network training of :data:`EPSILON_FLAGS` (and ``--learning-rate`` if present).

    Example:
      >>> args = argparse.Namespace(model="small_vgg", epochs=2, batch_size=32, epsilon=0.1)
      >>> epsilon_options(args).learning_rate == EpsilonOptions().learning_rate
      True
      >>> epsilon_options(argparse.Namespace(**vars(args), max_epochs=6)).max_epochs
      6

    Raises:
      ValueError: ``--max-epochs`` below ``--epochs``.
    """
    learning_rate = getattr(args, "learning_rate", EpsilonOptions().learning_rate)
    max_epochs = getattr(args, "max_epochs", None)
    if max_epochs is not None and max_epochs < args.epochs:
        raise ValueError(f"--max-epochs ({max_epochs}) must be at least --epochs ({args.epochs})")
    return EpsilonOptions(
        args.model, args.epochs, args.batch_size, learning_rate, args.epsilon, max_epochs
    )


def search_budget(args: argparse.Namespace) -> SearchBudget:
    """The :class:`~ldnas_jax.pipeline.SearchBudget` of :data:`SEARCH_FLAGS`.

    The optional flags ``--patience`` (0: never), ``--steps-per-round``,
    ``--search-batch-size`` and ``--final-batch-size`` are read when the command has them.

    Example:
      >>> args = argparse.Namespace(candidates=1, iterations=2, rounds=3, channels=4, cells=1,
      ...                           final_epochs=5)
      >>> budget = search_budget(args)
      >>> budget.num_candidates, budget.max_iterations, budget.final.epochs, budget.patience
      (1, 2, 5, None)
      >>> budget.fuse.max_rounds, budget.fuse.channels, budget.fuse.num_cells
      (3, 4, 1)
    """
    default = SearchBudget()
    fuse = default.fuse._replace(
        max_rounds=args.rounds,
        warmup_rounds=getattr(args, "warmup_rounds", default.fuse.warmup_rounds),
        steps_per_round=getattr(args, "steps_per_round", default.fuse.steps_per_round),
        batch_size=getattr(args, "search_batch_size", default.fuse.batch_size),
        channels=args.channels,
        num_cells=args.cells,
    )
    final = default.final._replace(
        epochs=args.final_epochs,
        batch_size=getattr(args, "final_batch_size", default.final.batch_size),
    )
    return SearchBudget(
        fuse=fuse,
        num_candidates=args.candidates,
        max_iterations=args.iterations,
        patience=getattr(args, "patience", 0) or None,
        final=final,
    )


def architecture_options(args: argparse.Namespace) -> ArchitectureOptions:
    """The baselines' random search: ``--zoo-samples`` (and ``--zoo-steps``), the searched size.

    Example:
      >>> args = argparse.Namespace(zoo_samples=2, channels=4, cells=1)
      >>> search = architecture_options(args).search
      >>> search.num_samples, search.channels, search.train_steps == ArchitectureOptions().search.train_steps
      (2, 4, True)
    """
    default = ArchitectureOptions().search
    return ArchitectureOptions(
        search=default._replace(
            num_samples=args.zoo_samples,
            train_steps=getattr(args, "zoo_steps", default.train_steps),
            batch_size=getattr(args, "search_batch_size", default.batch_size),
            channels=args.channels,
            num_cells=args.cells,
        )
    )


# ------------------------------------------------------------------- checks


def check_tasks(names: list[str], *, minimum: int = 1, what: str = "tasks") -> list[Task]:
    """The registered tasks of ``names``, distinct and at least ``minimum`` of them.

    Raises:
      ValueError: an unknown name (the message lists the known ones), a repeated one, or
        too few.

    Example:
      >>> [t.name for t in check_tasks(["E0", "E7"], minimum=2)]
      ['E0', 'E7']
    """
    tasks = [get_task(name) for name in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} repeat: {repeated}")
    if len(tasks) < minimum:
        raise ValueError(f"need at least {minimum} {what}, got {len(tasks)}: {list(names)}")
    return tasks


def check_models(names: list[str], *, what: str = "models") -> list[str]:
    """``names``, each a model of the registry.

    Example:
      >>> check_models(["small_vgg"])
      ['small_vgg']
    """
    unknown = [m for m in names if m not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {', '.join(MODEL_NAMES)}")
    return list(names)
