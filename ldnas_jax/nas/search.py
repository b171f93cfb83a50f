"""Search loops: FUSE search (Algorithm 1, lines 17-19) and a random-search baseline."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldnas_jax._checks import (
    NonFiniteError,
    check_finite_tree,
    check_image_data,
    check_int,
    check_key,
    check_train_val,
)
from ldnas_jax.checkpoint import key_fingerprint, key_from_data, key_to_data
from ldnas_jax.data.batching import pad_rows
from ldnas_jax.nas.batching import draw_batch_indices
from ldnas_jax.nas.cell import check_reduction_positions, count_params
from ldnas_jax.nas.fuse import (
    FuseConfig,
    default_weight_optimizer,
    fuse_mesh,
    fuse_on_checked,
    resolve_fuse_config,
)
from ldnas_jax.nas.genotype import Genotype
from ldnas_jax.nas.search_space import SearchSpace
from ldnas_jax.nas.switch import genotype_choices, genotype_params, switch_init, switch_network
from ldnas_jax.nas.training import make_train_and_evaluate, mask_classes
from ldnas_jax.resumable import LoopState, Step, StepCheckpoints, run_resumable

__all__ = ["RandomSearchConfig", "SearchResult", "best_sample", "fuse_search", "random_search"]


class SearchResult(NamedTuple):
    """Outcome of a search.

    Attributes:
      genotype: the best architecture found.
      history: one dict per iteration (FUSE search) or sample (random search);
        genotypes in it are ``Genotype.to_json()`` strings, so it dumps to JSON.
      iterations_run: iterations (FUSE search) or samples (random search) run.
      seconds: wall-clock duration.
    """

    genotype: Genotype
    history: list[dict[str, Any]]
    iterations_run: int
    seconds: float


def _check_space(space) -> SearchSpace:
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
    return space


def fuse_search(
    space: SearchSpace,
    train,
    val,
    *,
    key: jax.Array,
    num_classes: int,
    num_candidates: int = 5,
    max_iterations: int = 10,
    patience: int | None = None,
    initial: Genotype | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    config: FuseConfig | None = None,
) -> SearchResult:
    """Searches ``space`` with repeated FUSE runs (Algorithm 1, lines 17-19).

    Each iteration samples ``num_candidates`` genotypes, runs ``run_fuse`` on them
    plus the current best c* (none at first; duplicates dropped) and keeps the
    winner as c*. It stops after ``max_iterations`` iterations, or once c* has not
    changed for ``patience`` consecutive iterations.

    Every FUSE run holds ``num_candidates + 1`` candidate places over the
    space's operations, so the whole search, and any later search of the same
    space with the same sizes and optimisers, runs one compiled round.

    Args:
      space: the search space (e.g. ``search_space_from_genotype(baseline)``).
      train, val: ``(x, y)`` pairs; FUSE fits weights on train and α on val.
      key: PRNG key for sampling and for every FUSE run.
      num_classes: labels lie in [0, num_classes).
      num_candidates: C, genotypes sampled per iteration (>= 1).
      max_iterations: iteration limit (>= 1).
      patience: stop when c* is unchanged this many iterations in a row; None: never.
      initial: a starting c* from the space (e.g. the baseline architecture).
      progress: show tqdm bars.
      checkpoint_dir: when given, the search state (c*, history, PRNG key) is
        saved there (Orbax, atomically) every ``checkpoint_every`` iterations
        and when the search ends.
      checkpoint_every: iterations between checkpoints (>= 1).
      resume: continue from the newest checkpoint in ``checkpoint_dir``; the
        result equals that of an unbroken search. A larger ``max_iterations``
        than before extends a search that ran out of iterations. Without ``resume`` a
        ``checkpoint_dir`` that already holds checkpoints is refused.
      config: the options of every FUSE run (:class:`~ldnas_jax.nas.FuseConfig`);
        None: its defaults.

    Returns:
      A ``SearchResult``; each history entry has ``iteration``, ``candidates``,
      ``alpha`` (final α, one per candidate), ``winner`` and ``rounds``.
      ``seconds`` adds up the time of every resumed part.

    Raises:
      ValueError: C < 1, a bad count, ``initial`` outside the space, bad data.
      TypeError: ``config`` is not a FuseConfig, a count is not an int.
      NonFiniteError: a FUSE run's loss, α or weights became NaN or inf; the
        message names the iteration and round, and the last checkpoint stays.
      CheckpointError: a checkpoint to resume from is corrupt or belongs to a
        different search (other key, space, data or options).

    Example:
      >>> space = SearchSpace(("identity", "max_pool_3x3"), num_nodes=2, shared_cells=True)
      >>> rng = np.random.default_rng(0)
      >>> data = (rng.normal(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> config = FuseConfig(max_rounds=1, steps_per_round=2, batch_size=8, channels=4,
      ...                     num_cells=1)
      >>> result = fuse_search(space, data, data, key=jax.random.key(0), num_classes=2,
      ...                      num_candidates=2, max_iterations=2, config=config,
      ...                      progress=False)
      >>> result.genotype in space, result.iterations_run
      (True, 2)
    """
    check_key(key)
    space = _check_space(space)
    given = resolve_fuse_config(config)
    asked = config or FuseConfig()  # as given: the fingerprint records the non-defaults
    _check_num_candidates(num_candidates)
    max_iterations = check_int(max_iterations, name="max_iterations")
    if patience is not None:
        patience = check_int(patience, name="patience")
    if initial is not None and initial not in space:
        raise ValueError(f"initial genotype is not in the search space:\n{initial}")
    # Checked once here, not again by each iteration's FUSE run.
    mesh = fuse_mesh(given, train)
    train, val = check_train_val(train, val, num_classes)

    fingerprint = _search_fingerprint(
        space, train, val, key, num_classes, num_candidates, patience, initial, asked
    )
    impl = fingerprint["key"]["impl"]

    def iteration(index: int, state: LoopState) -> Step:
        sample_key, fuse_key, next_key = jax.random.split(
            key_from_data(state.arrays["key"], impl), 3
        )
        best = _genotype_or_none(state.extra["best"])
        sampled = space.sample(sample_key, num_candidates)
        candidates = tuple(dict.fromkeys(sampled + (() if best is None else (best,))))
        result = fuse_on_checked(
            candidates,
            train,
            val,
            key=fuse_key,
            num_classes=num_classes,
            config=given,
            mesh=mesh,
            operations=space.operations,
            slots=num_candidates + 1,  # C samples and c*: fixed, so one compiled round
            progress=progress,
        )
        _check_fuse_result(result, index)
        unchanged = state.extra["unchanged"] + 1 if result.winner == best else 0
        return Step(
            {"key": key_to_data(next_key)[0]},
            _iteration_record(index, candidates, result),
            stop=patience is not None and unchanged >= patience,
            extra={"best": result.winner.to_json(), "unchanged": unchanged},
        )

    start = {"best": None if initial is None else initial.to_json(), "unchanged": 0}
    final = run_resumable(
        iteration,
        LoopState({"key": key_to_data(key)[0]}, [], start),
        steps=max_iterations,
        fingerprint=fingerprint,
        description="FUSE search",
        unit="iterations",
        **_checkpointing(checkpoint_dir, resume, checkpoint_every, progress),
    )
    best = _genotype_or_none(final.extra["best"])
    return SearchResult(best, final.history, len(final.history), final.seconds)


def _checkpointing(checkpoint_dir, resume: bool, checkpoint_every, progress: bool) -> dict:
    """``run_resumable``'s store, checkpoint interval and bar switch, as both searches pass them."""
    store = None if checkpoint_dir is None else StepCheckpoints(checkpoint_dir, resume)
    every = check_int(checkpoint_every, name="checkpoint_every")
    return {"store": store, "every": every, "progress": progress}


def _genotype_or_none(record: str | None) -> Genotype | None:
    return None if record is None else Genotype.from_json(record)


def _check_num_candidates(num_candidates) -> None:
    if (
        isinstance(num_candidates, bool)
        or not isinstance(num_candidates, int)
        or num_candidates < 1
    ):
        raise ValueError(f"num_candidates (C) must be an int >= 1, got {num_candidates!r}")


def _iteration_record(iteration: int, candidates, result) -> dict:
    """One FUSE search iteration's history entry, genotypes as JSON strings."""
    return {
        "iteration": iteration,
        "candidates": [g.to_json() for g in candidates],
        "alpha": result.alpha_history[-1].tolist(),
        "alpha_history": result.alpha_history.tolist(),
        "winner": result.winner.to_json(),
        "rounds": result.rounds_run,
    }


def _search_fingerprint(
    space, train, val, key, num_classes, num_candidates, patience, initial, config
):
    """What a checkpoint must agree on to continue this search (``max_iterations`` may grow)."""
    defaults = FuseConfig()
    options = {
        name: value
        for name, value in config._asdict().items()
        if value is not getattr(defaults, name) and value != getattr(defaults, name)
    }
    return {
        "kind": "fuse_search",
        "key": key_fingerprint(key),
        "space": _space_record(space),
        "num_classes": num_classes,
        "num_candidates": num_candidates,
        "patience": patience,
        "train_shape": list(np.shape(train[0])),
        "val_shape": list(np.shape(val[0])),
        "initial": None if initial is None else initial.to_json(),
        # Optimisers are functions: only their presence can be recorded.
        "fuse_options": {name: _jsonable(value) for name, value in sorted(options.items())},
    }


def _space_record(space: SearchSpace) -> dict:
    return {
        "operations": list(space.operations),
        "num_nodes": space.num_nodes,
        "shared_cells": space.shared_cells,
    }


def _jsonable(value):
    try:
        return json.loads(json.dumps(value))
    except TypeError:
        return f"<{type(value).__name__}>"


def _check_fuse_result(result, iteration: int) -> None:
    """Raises NonFiniteError naming the iteration (1-based) and round of a NaN or inf."""
    where = f"FUSE search iteration {iteration + 1}"
    for name, values in (
        ("training loss", result.train_loss_history),
        ("validation loss", result.val_loss_history),
        ("alpha", result.alpha_history),
    ):
        values = np.asarray(values)
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            raise NonFiniteError(f"{where}: {name} became {values[first]} in round {first + 1}")
    if _all_finite(result.params):  # one compiled check, not one program per leaf shape
        return
    check_finite_tree(result.params, what=f"{where}: candidate weights")


def _head_of(params, num_classes: int):
    """``params`` with the head cut to its first ``num_classes`` outputs (those not masked)."""
    head = {name: leaf[..., :num_classes] for name, leaf in params["head"].items()}
    return {**params, "head": head}


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


class RandomSearchConfig(NamedTuple):
    """The options of one random search (:func:`random_search`).

    Attributes:
      num_samples: genotypes to try (>= 1).
      train_steps: weight updates per sample (>= 1).
      batch_size: examples per update, at most the size of train.
      optimizer: Optax optimiser; None: :func:`~ldnas_jax.nas.default_weight_optimizer`.
      channels, num_cells, reduction_positions: size of every ``Skeleton``.
      head_classes: outputs of the networks' heads, >= the task's classes; the outputs
        past them are masked out (−∞ logits), so samples train and score as the task's
        heads. Searches of tasks with different class counts then share one compiled
        program (a zoo passes its largest count). Only the head's initial weights
        differ from ``None``'s.

    Example:
      >>> RandomSearchConfig(num_samples=4).train_steps
      100
    """

    num_samples: int = 10
    train_steps: int = 100
    batch_size: int = 32
    optimizer: optax.GradientTransformation | None = None
    channels: int = 16
    num_cells: int = 3
    reduction_positions: Sequence[int] | None = None
    head_classes: int | None = None

    @classmethod
    def like_fuse(cls, fuse: FuseConfig, num_samples: int, **options) -> RandomSearchConfig:
        """A random search at a FUSE run's budget: its networks, batch, optimiser and steps.

        Each sample gets the weight updates one FUSE mixture gets, warm-up included
        (``(warmup_rounds + max_rounds) * steps_per_round``); ``options`` set other fields.

        Example:
          >>> fuse = FuseConfig(max_rounds=2, warmup_rounds=1, steps_per_round=5, channels=4)
          >>> RandomSearchConfig.like_fuse(fuse, 6)[:2], RandomSearchConfig.like_fuse(fuse, 6).channels
          ((6, 15), 4)
        """
        return cls(
            num_samples=num_samples,
            train_steps=(fuse.warmup_rounds + fuse.max_rounds) * fuse.steps_per_round,
            batch_size=fuse.batch_size,
            optimizer=fuse.weight_optimizer,
            channels=fuse.channels,
            num_cells=fuse.num_cells,
            reduction_positions=fuse.reduction_positions,
        )._replace(**options)


def random_search(
    space: SearchSpace,
    train,
    val,
    *,
    key: jax.Array,
    num_classes: int,
    config: RandomSearchConfig | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    test=None,
) -> SearchResult:
    """Random search: train sampled genotypes briefly, keep the best on val.

    Budget: each sample gets ``train_steps`` weight updates of its own. A FUSE
    search of I iterations with C candidates and R rounds of S steps updates
    about I * (C + 1) networks R * S times each, so ``num_samples = I * (C + 1)``
    and ``train_steps = R * S`` compare the two at equal weight-update budget.

    Every sample trains the space's :class:`~ldnas_jax.nas.SwitchSkeleton` told
    its genotype as data, so all samples (and later searches of the space with
    the same sizes) share one compiled training program; a sample's weights
    are those of its own ``Skeleton``.

    Args:
      space: the search space.
      train, val: ``(x, y)`` pairs; samples train on train and are ranked on val.
      key: PRNG key for sampling, initialisation and batch order.
      num_classes: labels lie in [0, num_classes).
      config: the :class:`RandomSearchConfig`; None: its defaults
        (:meth:`RandomSearchConfig.like_fuse` matches a FUSE search's networks and budget).
      progress: show a tqdm bar.
      checkpoint_dir: save the samples scored so far (and the key) there every
        ``checkpoint_every`` samples and after the last; None saves nothing.
      checkpoint_every: samples between checkpoints (>= 1).
      resume: continue from the newest complete checkpoint in ``checkpoint_dir``;
        the result equals an unbroken run's. Without it a non-empty
        ``checkpoint_dir`` is refused; a checkpoint of another search raises
        :class:`~ldnas_jax.CheckpointError`.
      test: an optional held-out ``(x, y)`` pair: each sample's accuracy on it is
        recorded as ``test_accuracy`` (never used to choose), so that the winner,
        chosen on val, can be compared with the other samples without selection bias.

    Returns:
      A ``SearchResult`` whose history has, per sample, ``sample``, ``genotype``,
      ``val_accuracy``, ``val_loss`` and ``num_params``; the best is the highest
      accuracy, ties broken by the lower loss (:func:`best_sample`).

    Example:
      >>> space = SearchSpace(("identity", "max_pool_3x3"), num_nodes=2)
      >>> rng = np.random.default_rng(0)
      >>> data = (rng.normal(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> config = RandomSearchConfig(num_samples=2, train_steps=2, batch_size=8, channels=4,
      ...                             num_cells=1)
      >>> result = random_search(space, data, data, key=jax.random.key(0), num_classes=2,
      ...                        config=config, progress=False)
      >>> [sorted(h) for h in result.history][0]
      ['genotype', 'num_params', 'sample', 'val_accuracy', 'val_loss']
    """
    check_key(key)
    space = _check_space(space)
    config = RandomSearchConfig() if config is None else config
    if not isinstance(config, RandomSearchConfig):
        raise TypeError(f"config must be a RandomSearchConfig, got {type(config).__name__}")
    num_samples = check_int(config.num_samples, name="num_samples")
    train_steps = check_int(config.train_steps, name="train_steps")
    (x_train, y_train), (x_val, y_val) = check_train_val(train, val, num_classes)
    if test is not None:
        test = check_image_data(test, num_classes, name="test")
    batch_size = _check_batch_size(config.batch_size, len(x_train))
    optimizer = config.optimizer or default_weight_optimizer()
    head_classes = _check_head_classes(config.head_classes, num_classes)
    channels = check_int(config.channels, name="channels")
    num_cells = check_int(config.num_cells, name="num_cells")
    reduction_positions = check_reduction_positions(config.reduction_positions, num_cells)
    network = switch_network(
        space.operations,
        head_classes or num_classes,
        num_nodes=space.num_nodes,
        channels=channels,
        num_cells=num_cells,
        reduction_positions=reduction_positions,
    )

    fingerprint = _random_search_fingerprint(
        space,
        key,
        num_classes,
        (num_samples, train_steps, batch_size),
        (channels, num_cells, reduction_positions),
        (x_train, x_val, test),
        optimizer,
        head_classes,
    )
    sample_key, key = jax.random.split(key)
    genotypes = space.sample(sample_key, num_samples)
    # On the device once, not once per sample: every sample trains and scores on these.
    splits = jax.device_put(((x_train, y_train), (x_val, y_val)))
    splits = (*splits, None if test is None else jax.device_put(tuple(test)))
    impl = fingerprint["key"]["impl"]

    def sample(index: int, state: LoopState) -> Step:
        init_key, batch_key, next_key = jax.random.split(
            key_from_data(state.arrays["key"], impl), 3
        )
        record = _train_one_sample(
            network,
            optimizer,
            index,
            genotypes[index],
            (init_key, batch_key),
            splits,
            train_steps=train_steps,
            batch_size=batch_size,
            num_classes=num_classes,
        )
        return Step({"key": key_to_data(next_key)[0]}, record)

    final = run_resumable(
        sample,
        LoopState({"key": key_to_data(key)[0]}, [], {}),
        steps=num_samples,
        fingerprint=fingerprint,
        description="random search",
        unit="samples",
        **_checkpointing(checkpoint_dir, resume, checkpoint_every, progress),
    )
    best = Genotype.from_json(final.history[best_sample(final.history)]["genotype"])
    return SearchResult(best, final.history, len(final.history), final.seconds)


def _check_batch_size(batch_size, examples: int) -> int:
    batch_size = check_int(batch_size, name="batch_size")
    if batch_size > examples:
        raise ValueError(f"batch_size {batch_size} exceeds the {examples} examples of train")
    return batch_size


def _check_head_classes(head_classes, num_classes: int) -> int | None:
    if head_classes is not None:
        head_classes = check_int(head_classes, name="head_classes")
        if head_classes < num_classes:
            raise ValueError(
                f"head_classes {head_classes} is below the task's {num_classes} classes"
            )
    return head_classes


def _random_search_fingerprint(
    space, key, num_classes, counts, skeleton, images, optimizer, head_classes
) -> dict:
    """What a checkpoint must agree on to continue this random search.

    ``counts`` is ``(num_samples, train_steps, batch_size)``, ``skeleton`` is
    ``(channels, num_cells, reduction_positions)`` and ``images`` is the train, val
    and test (or None) images.
    """
    num_samples, train_steps, batch_size = counts
    channels, num_cells, reduction_positions = skeleton
    x_train, x_val, test = images
    fingerprint = {
        "kind": "random_search",
        "key": key_fingerprint(key),
        "space": _space_record(space),
        "num_classes": num_classes,
        "num_samples": num_samples,
        "train_steps": train_steps,
        "batch_size": batch_size,
        "skeleton": [channels, num_cells, _jsonable(reduction_positions)],
        "train_shape": list(np.shape(x_train)),
        "val_shape": list(np.shape(x_val)),
        "optimizer": _jsonable(optimizer),
    }
    if head_classes is not None:  # absent otherwise: earlier checkpoints still resume
        fingerprint["head_classes"] = head_classes
    if test is not None:
        fingerprint["test_shape"] = list(np.shape(test[0]))
    return fingerprint


def _train_one_sample(
    network, optimizer, index: int, genotype, keys, data, *, train_steps, batch_size, num_classes
) -> dict:
    """Trains one sampled genotype from scratch and scores it: its history record.

    ``keys`` is ``(init_key, batch_key)``; ``data`` is ``(train, val, test)`` as
    device-resident ``(x, y)`` pairs, ``test`` possibly None.
    """
    init_key, batch_key = keys
    (x_train, y_train), (x_val, y_val), test = data
    params = switch_init(network, init_key, x_train)
    batch_indices = draw_batch_indices(batch_key, len(x_train), train_steps, batch_size)
    choices = genotype_choices(genotype, network.operations)
    own = _head_of(genotype_params(network, params, genotype), num_classes)
    # The trained weights score the loss and the test split, as they scored val.
    params, _, accuracy = make_train_and_evaluate(network, optimizer)(
        params, x_train, y_train, batch_indices, x_val, y_val, choices, num_classes=num_classes
    )
    record = {"sample": index, "genotype": genotype.to_json(), "val_accuracy": float(accuracy)}
    _, record["val_loss"] = _accuracy_and_loss(network, params, x_val, y_val, choices, num_classes)
    if test is not None:
        record["test_accuracy"], _ = _accuracy_and_loss(
            network, params, *test, choices, num_classes
        )
    record["num_params"] = count_params(own)
    return record


def best_sample(history: Sequence[dict]) -> int:
    """Index of the best sample: highest validation accuracy, ties to the lower validation loss.

    Accuracy on a few hundred validation images ties often (every sample that predicts
    the majority class scores the same), and keeping the first of a tie would keep
    sample 0; the loss still tells such samples apart. Records without a loss (older
    checkpoints) rank last among their ties; remaining ties keep the earlier sample.

    Example:
      >>> best_sample([{"val_accuracy": 0.7, "val_loss": 0.61},
      ...              {"val_accuracy": 0.7, "val_loss": 0.55},
      ...              {"val_accuracy": 0.6, "val_loss": 0.10}])
      1
    """
    if not history:
        raise ValueError("no samples to choose from")
    return min(
        range(len(history)),
        key=lambda i: (-history[i]["val_accuracy"], history[i].get("val_loss", np.inf), i),
    )


@functools.lru_cache(maxsize=16)
def _evaluation_program(network):
    """Jitted (accuracy, mean cross-entropy) of a switch network over padded row chunks."""

    def chunk_totals(params, choices, classes, chunk):
        x, y, mask = chunk
        logits = mask_classes(network.apply({"params": params}, x, choices), classes)
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)[:, 0]
        correct = (jnp.argmax(logits, axis=-1) == y) & mask
        return jnp.sum(correct), -jnp.sum(jnp.where(mask, picked, 0.0))

    @jax.jit
    def accuracy_and_loss(params, choices, classes, chunks):
        correct, loss = jax.lax.map(lambda c: chunk_totals(params, choices, classes, c), chunks)
        count = jnp.sum(chunks[2]).astype(jnp.float32)
        return jnp.sum(correct).astype(jnp.float32) / count, jnp.sum(loss) / count

    return accuracy_and_loss


def _accuracy_and_loss(network, params, x, y, choices, num_classes: int, chunk_size: int = 256):
    """Accuracy and mean cross-entropy of one genotype of ``network`` on ``(x, y)``."""
    size = min(chunk_size, len(x))
    rows = -(-len(x) // size) * size
    x, y, mask = pad_rows(rows, x, y, np.ones(len(x), bool))
    chunks = tuple(a.reshape((rows // size, size) + a.shape[1:]) for a in (x, y, mask))
    accuracy, loss = _evaluation_program(network)(params, choices, np.int32(num_classes), chunks)
    return float(accuracy), float(loss)
