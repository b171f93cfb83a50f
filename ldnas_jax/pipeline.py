"""Algorithm 1 end to end: distances to the zoo, the closest task, its search space, FUSE, final training.

This is the one layer that joins the Fisher/distance code and the NAS code.
:func:`search_architecture` is a short composition of public stages, each usable alone:
:func:`find_closest_task` (stages 1–2, with the closest task's uncertainty over seeds), the
closest task's space (``zoo[b*].space``), and :func:`search_and_train` (stage 4, in any
space). Any distance of
the family (:data:`DISTANCE_NAMES`) can pick the closest task, through the one column route
:func:`distances_to_target`; with several ε-network seeds of the target, b* is the argmin of
the mean column and the share of seeds each baseline wins is kept.
The two baselines of the paper's tables run through the same final training,
with the same search budget:

* :func:`random_search_baseline`: random search over the full operation set;
* :func:`full_space_fuse_baseline`: FUSE over the full operation set, no task similarity.
"""

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from ldnas_jax._checks import NonFiniteError, is_real_number_dtype
from ldnas_jax.checkpoint import CheckpointError, prepare_run_directory, write_json_atomic
from ldnas_jax.data import Split, TaskData
from ldnas_jax.distances import FULL_LOG_DET, make_task_distances, win_shares
from ldnas_jax.nas import (
    SEARCHABLE_OPERATIONS,
    FuseConfig,
    Genotype,
    RandomSearchConfig,
    SearchResult,
    SearchSpace,
    Skeleton,
    count_params,
    fuse_search,
    random_search,
)

# DistanceOptions lives next to the pair loop; importable from here as before.
from ldnas_jax.tasks import (
    DistanceOptions,
    TaskNetwork,
    check_distance_options,
    column_distances,
    full_log_det_task_distances,
    load_task_network,
    save_task_network,
    task_family_distances,
    train_task_network,
)
from ldnas_jax.train import TrainResult, evaluate, train_classifier
from ldnas_jax.zoo import ZooEntry

# Every FUSE run of a search at the library's budget. benchmarks.fuse_pick_rate on E6 (10
# sets of 3): without warm-up FUSE lost 0.040 test accuracy to the best candidate on average,
# with 20 warm-up rounds 0.004 (8: 0.043).
SEARCH_FUSE = FuseConfig(max_rounds=6, warmup_rounds=20, channels=8)


class FinalTraining(NamedTuple):
    """How a search's winner (or a hand-designed network) is trained on the target's train split.

    Example:
      >>> FinalTraining(epochs=2).batch_size
      64
    """

    epochs: int = 6
    batch_size: int = 64


class SearchBudget(NamedTuple):
    """The search and final-training budget, shared by LD-NAS and its baselines: one tree.

    Attributes:
      fuse: every FUSE run (:class:`~ldnas_jax.nas.FuseConfig`): ``num_candidates`` new
        genotypes per iteration for ``max_iterations`` iterations, each mixture trained
        ``(warmup_rounds + max_rounds) × steps_per_round`` weight steps, the first
        ``warmup_rounds`` rounds with α frozen.
      num_candidates, max_iterations, patience: the search loop
        (:func:`~ldnas_jax.nas.fuse_search`).
      final: the final training of the winner.
      shared_cells: cell structure of the full-space baselines; LD-NAS takes its own
        from b*.

    Random search gets as many genotypes, each trained for as many steps
    (:meth:`random_search_config`).

    Example:
      >>> budget = SearchBudget(fuse=SEARCH_FUSE._replace(max_rounds=2, channels=4))
      >>> budget.fuse.max_rounds, budget.final.epochs, budget.random_search_config().train_steps
      (2, 6, 220)
    """

    fuse: FuseConfig = SEARCH_FUSE
    num_candidates: int = 3
    max_iterations: int = 3
    patience: int | None = None
    final: FinalTraining = FinalTraining()
    shared_cells: bool = True

    def record(self) -> dict:
        """A flat JSON record for results and fingerprints (FUSE's fields by name, final_*).

        FUSE fields beyond the budget's usual ones appear when they differ from
        ``FuseConfig()``'s (optimisers and meshes as their type's name).

        Example:
          >>> SearchBudget().record()["warmup_rounds"], SearchBudget().record()["final_epochs"]
          (20, 6)
        """
        fuse = self.fuse._asdict()
        usual = ("max_rounds", "patience_k", "warmup_rounds", "steps_per_round", "batch_size")
        record = {
            "num_candidates": self.num_candidates,
            "max_iterations": self.max_iterations,
            "patience": self.patience,
            **{name: fuse.pop(name) for name in (*usual, "channels", "num_cells")},
            "final_epochs": self.final.epochs,
            "final_batch_size": self.final.batch_size,
            "shared_cells": self.shared_cells,
        }
        defaults = FuseConfig()._asdict()
        for name, value in fuse.items():
            if value is not defaults[name] and value != defaults[name]:
                record[name] = _json_value(value)
        return record

    def random_search_config(self, **options) -> RandomSearchConfig:
        """Random search at this budget: ``num_candidates × max_iterations`` samples, FUSE's steps."""
        samples = self.num_candidates * self.max_iterations
        return RandomSearchConfig.like_fuse(self.fuse, samples, **options)


def _json_value(value):
    """``value`` when JSON can hold it, else its type's name (an optimiser, a mesh)."""
    try:
        return json.loads(json.dumps(value))
    except TypeError:
        return f"<{type(value).__name__}>"


def fit_budget(budget: SearchBudget, target: TaskData) -> SearchBudget:
    """Caps the search batch at the size of the smallest split it draws from (small targets)."""
    if not isinstance(budget, SearchBudget):
        raise TypeError(f"budget must be a SearchBudget, got {type(budget).__name__}")
    batch = min(budget.fuse.batch_size, len(target.train.x), len(target.val.x))
    return budget._replace(fuse=budget.fuse._replace(batch_size=batch))


def _check_target(target) -> None:
    if not isinstance(target, TaskData):
        raise TypeError(f"target must be a TaskData (see load_task), got {type(target).__name__}")


def _check_given_distances(distances: dict, zoo: dict) -> dict[str, float]:
    """Precomputed d[b, t]: exactly the zoo's tasks, each a finite real number >= 0."""
    if not isinstance(distances, dict):
        raise TypeError(f"distances must be a dict {{baseline: d}}, got {type(distances).__name__}")
    if set(distances) != set(zoo):
        raise ValueError(
            f"distances must cover exactly the zoo's tasks {list(zoo)}, got {list(distances)}"
        )
    checked = {}
    for name, value in distances.items():
        if np.ndim(value) != 0 or not is_real_number_dtype(np.asarray(value).dtype):
            raise TypeError(f"distances[{name!r}] must be a real number, got {value!r}")
        value = float(value)
        if not np.isfinite(value):
            raise NonFiniteError(f"distances[{name!r}] is {value}; a distance must be finite")
        if value < 0:
            raise ValueError(f"distances[{name!r}] is {value}; a distance is >= 0")
        checked[name] = value
    return checked


class FinalNetwork(NamedTuple):
    """A searched architecture trained on the target's train split.

    Attributes:
      genotype: the architecture c*.
      test_accuracy: accuracy on the target's test split.
      num_params: trainable parameters.
      history: one dict per training epoch (see :func:`ldnas_jax.train_classifier`).
      model: the :class:`~ldnas_jax.nas.Skeleton` built from ``genotype``.
      variables: its trained variables, so that
        ``model.apply(variables, x, train=False)`` gives the network's logits.
    """

    genotype: Genotype
    test_accuracy: float
    num_params: int
    history: list[dict[str, float]]
    model: nn.Module | None = None
    variables: dict[str, Any] | None = None


# Every distance of the family, by the one word that names it: the diagonal-Fisher pair
# distances of the registry, then the full-matrix log-det from per-example gradients.
DISTANCE_NAMES: tuple[str, ...] = (*make_task_distances(), FULL_LOG_DET)


def check_distance(
    distance: str | DistanceOptions, options: DistanceOptions | None = None
) -> tuple[str, DistanceOptions]:
    """The family name and the options of a ``distance`` argument, both checked.

    ``distance`` is a name of :data:`DISTANCE_NAMES`, with ``options`` for its Fisher fields
    (and eq. 2's σ and normalisation, which ``"log_det"``, ``"log_det_full"`` and
    ``"task2vec"`` use); or a :class:`DistanceOptions`, which means ``"log_det"`` with those
    options (then ``options`` stays None).

    Raises:
      ValueError: an unknown name (the message lists the known ones), or ``"log_det_full"``
        with an estimator other than ``"empirical"`` (its per-example gradients take labels).
      TypeError: ``distance`` of another type, or options given twice.

    Example:
      >>> check_distance("frechet")[0], check_distance(DistanceOptions(sigma=0.5))[1].sigma
      ('frechet', 0.5)
      >>> check_distance("l2")
      Traceback (most recent call last):
      ...
      ValueError: unknown distance 'l2'; known: log_det, frechet, task2vec, cosine, log_det_full
    """
    if isinstance(distance, DistanceOptions):
        if options is not None:
            raise TypeError(
                "distance is a DistanceOptions (the log-det settings); give distance_options "
                "only with a distance name"
            )
        name, options = "log_det", distance
    elif isinstance(distance, str):
        if distance not in DISTANCE_NAMES:
            raise ValueError(f"unknown distance {distance!r}; known: {', '.join(DISTANCE_NAMES)}")
        name, options = distance, DistanceOptions() if options is None else options
    else:
        raise TypeError(
            f"distance must be a name of {DISTANCE_NAMES} or a DistanceOptions, "
            f"got {type(distance).__name__}"
        )
    options = check_distance_options(options)
    if name == FULL_LOG_DET and options.estimator != "empirical":
        raise ValueError(
            f"{FULL_LOG_DET!r} uses the empirical Fisher (per-example gradients of the "
            f"labels' log-likelihood); estimator={options.estimator!r} does not apply"
        )
    return name, options


class LDNASResult(NamedTuple):
    """Everything Algorithm 1 produced for one target.

    ``distances`` is the mean of d[b, t] over the ε-network seeds of the target (one seed:
    that seed's column), and b* = ``closest_task`` its argmin. ``seed_distances[i]`` is seed
    i's column and ``win_shares[b]`` the share of seeds in which b is closest (ties split,
    :func:`ldnas_jax.distances.win_shares`). ``target_network`` is seed 0's N_t.
    """

    target: str
    baselines: tuple[str, ...]
    distances: np.ndarray  # d[b, t] for each baseline b, in ``baselines`` order
    closest_task: str
    space: SearchSpace
    search: SearchResult
    final: FinalNetwork
    search_seconds: float
    target_network: TaskNetwork
    distance: str = "log_det"
    seed_distances: np.ndarray | None = None  # (seeds, baselines)
    win_shares: np.ndarray | None = None  # (baselines,)


class BaselineResult(NamedTuple):
    """A search-and-train outcome: the search, the winner's final training, the search's seconds.

    ``method`` names the search: ``"fuse"`` (:func:`search_and_train`),
    ``"random_search"`` or ``"full_space_fuse"`` (the paper's two baselines).
    """

    method: str
    search: SearchResult
    final: FinalNetwork
    search_seconds: float


def distances_to_target(
    target: TaskData,
    zoo: dict[str, ZooEntry],
    target_network: TaskNetwork,
    *,
    options: DistanceOptions = DistanceOptions(),
    distance: str = "log_det",
    key: jax.Array | None = None,
) -> dict[str, float]:
    """d[b, t] for every baseline b in the zoo, F_{b,t} and F_{t,t} on the target's train data.

    The one route from a target's ε-network to its column, for every distance of
    :data:`DISTANCE_NAMES`: the diagonal ones are the target's column of
    :func:`ldnas_jax.tasks.task_family_distances` with the same key
    (:func:`ldnas_jax.tasks.column_distances`, two Fishers held at a time); ``"log_det_full"``
    is the last column of :func:`ldnas_jax.tasks.full_log_det_task_distances` over the
    baselines and the target, all on X_t (that function fills the whole table, so this costs
    K² gradient matrices for K − 1 baselines; it is meant for small networks).

    Example:
      >>> from ldnas_jax.models import make_model
      >>> from ldnas_jax.data import Split
      >>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
      >>> target = TaskData("T", 2, *[Split(x, np.array([0, 1, 0, 1]))] * 3)
      >>> a, b, t = [TaskNetwork(name, "small_vgg", 2, dict(make_model("small_vgg", 2).init(
      ...     jax.random.key(i), x[:1])), 1.0, 0.1) for i, name in enumerate("ABT")]
      >>> zoo = {"A": ZooEntry(a, None, None, 0.0), "B": ZooEntry(b, None, None, 0.0)}
      >>> d = distances_to_target(target, zoo, t)
      >>> sorted(d), all(v >= 0 for v in d.values())
      (['A', 'B'], True)
      >>> cosine = distances_to_target(target, zoo, t, distance="cosine")
      >>> all(0 <= v <= 1 for v in cosine.values())
      True
    """
    _check_target(target)
    name, options = check_distance(distance, options)
    sources = [entry.network for entry in zoo.values()]
    if name == FULL_LOG_DET:
        k = len(sources) + 1
        full = full_log_det_task_distances(
            [*sources, target_network],
            [target.train] * k,
            [target.num_classes] * k,
            sigma=options.sigma,
            normalize=options.normalize,
            label_mode=options.label_mode,
            max_examples=options.max_examples,
            progress=False,
        )
        column = {net.task: float(full.matrix[b, -1]) for b, net in enumerate(sources)}
    else:
        column = column_distances(
            sources,
            target_network,
            target.train,
            target.num_classes,
            distances={name: _pair_distances(options)[name]},
            options=options,
            key=key,
        )[name]
    return {b: column[entry.network.task] for b, entry in zoo.items()}


def distance_matrices(
    networks: Sequence[TaskNetwork],
    splits: Sequence[Split],
    num_classes: Sequence[int],
    names: Sequence[str],
    *,
    options: DistanceOptions = DistanceOptions(),
    key: jax.Array | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """The K×K table ``D[b, t]`` of each named distance of :data:`DISTANCE_NAMES`.

    The diagonal distances share one stream of Fishers
    (:func:`ldnas_jax.tasks.task_family_distances`, pair keys from ``key``);
    ``"log_det_full"`` comes from :func:`ldnas_jax.tasks.full_log_det_task_distances` with
    ``options.max_examples`` examples per gradient matrix. Column t of each table equals
    :func:`distances_to_target` for target t with the same networks, data and key.

    Example:
      >>> from ldnas_jax.models import make_model
      >>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
      >>> nets = [TaskNetwork(name, "small_vgg", 2, dict(make_model("small_vgg", 2).init(
      ...     jax.random.key(i), x[:1])), 1.0, 0.1) for i, name in enumerate("AB")]
      >>> split = Split(x, np.array([0, 1, 0, 1]))
      >>> tables = distance_matrices(nets, [split] * 2, [2, 2], ["cosine", "log_det_full"],
      ...                            progress=False)
      >>> sorted(tables), tables["log_det_full"].shape
      (['cosine', 'log_det_full'], (2, 2))
    """
    names = list(names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"names must be distinct distances, at least one; got {names}")
    checked = [check_distance(name, options) for name in names]
    options = checked[0][1]
    pair = {name: _pair_distances(options)[name] for name in names if name != FULL_LOG_DET}
    full = FULL_LOG_DET in names
    if pair:
        matrices = task_family_distances(
            networks,
            splits,
            num_classes,
            distances=pair,
            options=options,
            key=key,
            full_fisher=full,
            full_max_examples=options.max_examples,
            progress=progress,
        ).matrices
    else:
        matrices = {
            FULL_LOG_DET: full_log_det_task_distances(
                networks,
                splits,
                num_classes,
                sigma=options.sigma,
                normalize=options.normalize,
                label_mode=options.label_mode,
                max_examples=options.max_examples,
                progress=progress,
            ).matrix
        }
    return {name: matrices[name] for name in names}


def _pair_distances(options: DistanceOptions) -> dict[str, Callable]:
    """The registry's diagonal distances with the options' σ and normalisation."""
    return make_task_distances(sigma=options.sigma, normalize=options.normalize)


def final_training(
    model, target: TaskData, *, key: jax.Array, budget: SearchBudget, **options
) -> TrainResult:
    """``model`` trained on the target's train split with the budget's final epochs and batch.

    The one recipe of every final training (searched winners and hand-designed networks
    alike); ``options`` go to :func:`ldnas_jax.train_classifier`.
    """
    return train_classifier(
        model,
        (target.train.x, target.train.y),
        key=key,
        epochs=budget.final.epochs,
        batch_size=budget.final.batch_size,
        **options,
    )


def train_final(
    genotype: Genotype,
    target: TaskData,
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
) -> FinalNetwork:
    """Trains c* from scratch on the target's train split and measures test accuracy.

    ``checkpoint_dir``, ``checkpoint_every`` and ``resume`` are those of
    :func:`ldnas_jax.train_classifier`: epochs are checkpointed and a resumed
    training ends as an unbroken one.

    Example:
      >>> from ldnas_jax.data import Split
      >>> rng = np.random.default_rng(0)
      >>> split = Split(rng.uniform(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> space = SearchSpace(("identity", "max_pool_3x3"), num_nodes=2)
      >>> budget = SearchBudget(fuse=SEARCH_FUSE._replace(channels=4, num_cells=1),
      ...                       final=FinalTraining(epochs=1, batch_size=8))
      >>> final = train_final(space.sample(jax.random.key(0), 1)[0], TaskData("T", 2, *[split] * 3),
      ...                     key=jax.random.key(1), budget=budget, progress=False)
      >>> 0 <= final.test_accuracy <= 1, len(final.history)
      (True, 1)
    """
    model = Skeleton(
        genotype, target.num_classes, channels=budget.fuse.channels, num_cells=budget.fuse.num_cells
    )
    result = final_training(
        model,
        target,
        key=key,
        budget=budget,
        progress=progress,
        description="final training",
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    accuracy = evaluate(model, result.variables, (target.test.x, target.test.y))["accuracy"]
    return FinalNetwork(
        genotype,
        accuracy,
        count_params(result.variables["params"]),
        result.history,
        model,
        result.variables,
    )


class ClosestTask(NamedTuple):
    """Stages 1–2 of Algorithm 1: d[b, t] for every baseline, and b* = their argmin.

    ``distances`` maps each baseline to the mean of d[b, t] over the target's ε-network
    seeds; ``seed_distances[i]`` is seed i's column (baselines in the zoo's order) and
    ``win_shares[b]`` the share of seeds in which b is closest (ties split): the closest
    task's uncertainty. ``target_networks[i]`` is seed i's N_t.
    """

    closest: str
    distances: dict[str, float]
    seed_distances: np.ndarray  # (seeds, baselines)
    win_shares: np.ndarray  # (baselines,)
    target_networks: tuple[TaskNetwork, ...]
    distance: str


def find_closest_task(
    target: TaskData,
    zoo: Mapping[str, ZooEntry],
    *,
    key: jax.Array,
    distance: str | DistanceOptions = DistanceOptions(),
    distance_options: DistanceOptions | None = None,
    seeds: int = 1,
    target_network: TaskNetwork | Sequence[TaskNetwork] | None = None,
    model_name: str = "small_vgg",
    epsilon_epochs: int = 4,
    distances: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> ClosestTask:
    """Stages 1–2 of Algorithm 1: the baseline closest to ``target``, with its uncertainty.

    Trains the target's ε-network N_t per seed (unless given), computes the column
    d[b, t] of the chosen distance for every baseline of ``zoo`` per seed (unless given)
    and takes the argmin of the mean column. Arguments are those of
    :func:`search_architecture`; with ``checkpoint_dir``, N_t and the column are saved
    there as ``target_network/`` and ``distances.json`` (seed i > 0: ``..._seed_i``).

    Example:
      >>> from ldnas_jax.data import Split
      >>> from ldnas_jax.models import make_model
      >>> rng = np.random.default_rng(0)
      >>> split = Split(rng.uniform(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> target = TaskData("T", 2, split, split, split)
      >>> net = TaskNetwork("T", "small_vgg", 2,
      ...                   dict(make_model("small_vgg", 2).init(jax.random.key(0), split.x[:1])),
      ...                   1.0, 0.1)
      >>> space = SearchSpace(("identity", "max_pool_3x3"), num_nodes=2)
      >>> zoo = {n: ZooEntry(net._replace(task=n), space.sample(jax.random.key(0), 1)[0],
      ...                    space, 0.5) for n in "AB"}
      >>> found = find_closest_task(target, zoo, key=jax.random.key(0), target_network=net,
      ...                      distances={"A": 0.7, "B": 0.2}, progress=False)
      >>> found.closest, found.win_shares.tolist()
      ('B', [0.0, 1.0])
    """
    checked = _check_closest_inputs(
        target, zoo, distance, distance_options, seeds, target_network, distances
    )
    return _closest_task(
        target,
        zoo,
        key,
        checked,
        model_name=model_name,
        epsilon_epochs=epsilon_epochs,
        progress=progress,
        stage=_stages(checkpoint_dir, resume),
    )


def _check_zoo(zoo: Mapping[str, ZooEntry], target: TaskData) -> None:
    if not zoo:
        raise ValueError("the zoo is empty: Algorithm 1 needs at least one baseline task")
    if target.name in zoo:
        raise ValueError(
            f"target {target.name!r} is itself in the zoo; remove it from the baselines"
        )


class _ClosestInputs(NamedTuple):
    distance: str
    options: DistanceOptions
    networks: list  # a given N_t or None, per seed
    columns: list  # a given {baseline: d[b, t]} or None, per seed


def _check_closest_inputs(
    target, zoo, distance, distance_options, seeds, target_network, distances
) -> _ClosestInputs:
    """The checks of :func:`find_closest_task`'s arguments, once, at the public boundary."""
    _check_target(target)
    _check_zoo(zoo, target)
    name, options = check_distance(distance, distance_options)
    seeds = _check_seeds(seeds)
    networks = _per_seed(target_network, seeds, "target_network", TaskNetwork)
    given = _per_seed(distances, seeds, "distances", Mapping)
    given = [None if d is None else _check_given_distances(d, zoo) for d in given]
    return _ClosestInputs(name, options, networks, given)


def _closest_task(
    target, zoo, key, checked: _ClosestInputs, *, model_name, epsilon_epochs, progress, stage
) -> ClosestTask:
    """:func:`find_closest_task` on checked arguments, saving under ``stage(...)``."""
    name, options, networks, given = checked
    net_key, distance_key = jax.random.split(key)
    target_networks, columns = [], []
    for seed, (network, column) in enumerate(zip(networks, given)):
        if network is None and (seed == 0 or column is None):  # seed 0's N_t is in the result
            network = train_or_load_task_network(
                target,
                stage(_seed_stage("target_network", seed)),
                key=seed_key(net_key, seed),
                model_name=model_name,
                epochs=epsilon_epochs,
                progress=progress,
            )
        if column is None:
            compute = functools.partial(
                distances_to_target,
                target,
                zoo,
                network,
                options=options,
                distance=name,
                key=seed_key(distance_key, seed),
            )
            column = resumable_distances(
                stage(_seed_stage("distances", seed) + ".json"), list(zoo), compute, distance=name
            )
        target_networks.append(network)
        columns.append([column[b] for b in zoo])
    per_seed = np.array(columns, dtype=np.float64)
    mean = dict(zip(zoo, per_seed.mean(axis=0).tolist()))
    return ClosestTask(
        min(mean, key=mean.get), mean, per_seed, win_shares(per_seed), tuple(target_networks), name
    )


def search_and_train(
    target: TaskData,
    space: SearchSpace,
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    initial: Genotype | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
) -> BaselineResult:
    """Stage 4 of Algorithm 1 in any space: FUSE search in ``space``, then the final training.

    The key is split into the search's and the final training's. LD-NAS calls it with the
    closest task's space; full-space FUSE with the full space; the space check with every
    baseline's space and the controls: one stage, so every space is searched and trained
    alike. With ``checkpoint_dir`` the search (``search/``) and the final training
    (``final/``) are saved every ``checkpoint_every`` iterations or epochs.

    Args:
      target: the task searched for; the search trains on its train split and moves α
        on its val split, the winner is scored on its test split.
      space: the search space.
      key: PRNG key.
      budget: search and final-training budget.
      initial: a genotype to seed the search's first candidates with (e.g. b*'s own).

    Returns:
      A :class:`BaselineResult` of method ``"fuse"``.

    Example:
      >>> from ldnas_jax.data import Split
      >>> rng = np.random.default_rng(0)
      >>> split = Split(rng.uniform(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> target = TaskData("T", 2, split, split, split)
      >>> budget = SearchBudget(
      ...     fuse=FuseConfig(max_rounds=1, steps_per_round=1, batch_size=8, channels=4, num_cells=1),
      ...     num_candidates=1, max_iterations=1, final=FinalTraining(epochs=1, batch_size=8))
      >>> space = SearchSpace(("identity", "max_pool_3x3"), num_nodes=2)
      >>> result = search_and_train(target, space, key=jax.random.key(0), budget=budget,
      ...                           progress=False)
      >>> result.method, result.search.genotype in space, 0 <= result.final.test_accuracy <= 1
      ('fuse', True, True)
    """
    _check_target(target)
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
    budget = fit_budget(budget, target)
    stage = _stages(checkpoint_dir, resume)
    return _search_and_train(
        target, space, key, budget, initial, progress, stage, checkpoint_every, resume
    )


def _search_and_train(
    target, space, key, budget, initial, progress, stage, checkpoint_every, resume
) -> BaselineResult:
    """:func:`search_and_train` on checked arguments, saving under ``stage(...)``."""
    search = _fuse_in(space, target, budget, initial, progress, checkpoint_every, resume)
    return _search_then_train(
        "fuse",
        search,
        target,
        key,
        budget,
        progress,
        stage,
        resume,
        checkpoint_every=checkpoint_every,
    )


def _fuse_in(space, target, budget, initial, progress, checkpoint_every, resume):
    """``search(train, val, key, directory)``: FUSE in ``space`` with ``budget``."""

    def search(train, val, search_key, directory):
        return fuse_search(
            space,
            train,
            val,
            key=search_key,
            num_classes=target.num_classes,
            initial=initial,
            progress=progress,
            checkpoint_dir=directory,
            checkpoint_every=checkpoint_every,
            resume=resume,
            num_candidates=budget.num_candidates,
            max_iterations=budget.max_iterations,
            patience=budget.patience,
            config=budget.fuse,
        )

    return search


def search_architecture(
    target: TaskData,
    zoo: dict[str, ZooEntry],
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    distance: str | DistanceOptions = DistanceOptions(),
    distance_options: DistanceOptions | None = None,
    seeds: int = 1,
    target_network: TaskNetwork | Sequence[TaskNetwork] | None = None,
    model_name: str = "small_vgg",
    epsilon_epochs: int = 4,
    start_from_baseline: bool = False,
    distances: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
) -> LDNASResult:
    """Algorithm 1: LD-NAS for one target task, composed of its public stages.

    1–2. :func:`find_closest_task`: trains the target's ε-network N_t (unless given), computes
       d[b, t] for every baseline b in ``zoo`` (with ``seeds`` > 1, one N_t and one column
       per seed) and takes b* = argmin_b of the mean d[b, t];
    3. the search space S = S_{b*} (b*'s cell structure and operations, ``zoo[b*].space``);
    4. :func:`search_and_train`: the FUSE search loop in S, then the winner c* trained
       from scratch.

    The key is split once: the first half drives stages 1–2, the second stage 4.

    Args:
      target: the target task's data (train, val, test).
      zoo: baselines from :func:`ldnas_jax.build_zoo` or :func:`ldnas_jax.load_zoo`.
      key: PRNG key; every random choice derives from it.
      budget: search and final-training budget.
      distance: the distance of the family that decides b*: a name of
        :data:`DISTANCE_NAMES` (``"log_det"``, eq. 2; ``"frechet"``, ``"task2vec"``,
        ``"cosine"``; ``"log_det_full"``, eq. 2 with full Fishers), or a
        :class:`DistanceOptions`, meaning ``"log_det"`` with those settings.
      distance_options: with a name, the Fisher estimator, label mode, examples, σ and
        normalisation (default :class:`DistanceOptions`).
      seeds: ε-networks N_t of the target, each with its own column d[b, t]; b* is the
        argmin of their mean. Seed 0 uses the key of a one-seed run (so ``seeds=1`` is
        that run), seed i > 0 the same keys folded with i.
      target_network: a trained N_t (seed 0's), or one per seed, to skip their training.
      start_from_baseline: seed c* with b*'s own architecture.
      distances: precomputed ``{baseline: d[b, t]}`` (seed 0's), or one per seed, to skip
        computing those columns.
      checkpoint_dir: when given, every step's product is saved there as it
        is done: ``target_network/`` (N_t, when trained here), ``distances.json``
        (when computed here; seed i > 0: ``target_network_seed_i/`` and
        ``distances_seed_i.json``), ``search/`` (FUSE iterations) and ``final/``
        (final-training epochs), every ``checkpoint_every`` iterations or epochs.
      resume: continue from what ``checkpoint_dir`` holds; the result equals
        that of an unbroken run. Without it a non-empty ``checkpoint_dir`` is
        refused (:class:`ldnas_jax.checkpoint.CheckpointError`).

    Example:
      A tiny run: random ε-networks for two baselines and the target, 8×8 images, one
      FUSE iteration of one candidate in a pooling-only space.

      >>> from ldnas_jax.data import Split
      >>> from ldnas_jax.models import make_model
      >>> rng = np.random.default_rng(0)
      >>> split = Split(rng.uniform(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> target = TaskData("T", 2, split, split, split)
      >>> def network(name, seed):
      ...     variables = make_model("small_vgg", 2).init(jax.random.key(seed), split.x[:1])
      ...     return TaskNetwork(name, "small_vgg", 2, dict(variables), 1.0, 0.1)
      >>> space = SearchSpace(("identity", "max_pool_3x3"), num_nodes=2)
      >>> genotype = space.sample(jax.random.key(0), 1)[0]
      >>> zoo = {n: ZooEntry(network(n, i), genotype, space, 0.5) for i, n in enumerate("AB")}
      >>> budget = SearchBudget(
      ...     fuse=FuseConfig(max_rounds=1, steps_per_round=1, batch_size=8, channels=4, num_cells=1),
      ...     num_candidates=1, max_iterations=1, final=FinalTraining(epochs=1, batch_size=8))
      >>> result = search_architecture(target, zoo, key=jax.random.key(0), budget=budget,
      ...                              target_network=network("T", 2), progress=False)
      >>> result.closest_task in zoo, result.search.genotype in result.space
      (True, True)
    """
    checked = _check_closest_inputs(
        target, zoo, distance, distance_options, seeds, target_network, distances
    )
    budget = fit_budget(budget, target)
    closest_key, search_key = jax.random.split(key)
    stage = _stages(checkpoint_dir, resume)  # one directory for all the stages
    found = _closest_task(
        target,
        zoo,
        closest_key,
        checked,
        model_name=model_name,
        epsilon_epochs=epsilon_epochs,
        progress=progress,
        stage=stage,
    )
    entry = zoo[found.closest]
    initial = entry.genotype if start_from_baseline else None
    outcome = _search_and_train(
        target, entry.space, search_key, budget, initial, progress, stage, checkpoint_every, resume
    )
    return LDNASResult(
        target.name,
        tuple(zoo),
        np.array([found.distances[b] for b in zoo]),
        found.closest,
        entry.space,
        outcome.search,
        outcome.final,
        outcome.search_seconds,  # a resumed search counts all its parts
        found.target_networks[0],
        found.distance,
        found.seed_distances,
        found.win_shares,
    )


def seed_key(key: jax.Array, seed: int) -> jax.Array:
    """The key of ε-network seed ``seed``: ``key`` itself for seed 0, else ``fold_in(key, seed)``.

    Seed 0 keeps the key of a one-seed run, so adding seeds leaves its result unchanged.

    Example:
      >>> key = jax.random.key(3)
      >>> seed_key(key, 0) is key, bool((jax.random.key_data(seed_key(key, 2))
      ...                                == jax.random.key_data(jax.random.fold_in(key, 2))).all())
      (True, True)
    """
    return key if seed == 0 else jax.random.fold_in(key, seed)


def _seed_stage(name: str, seed: int) -> str:
    """The checkpoint name of a per-seed step: ``name`` for seed 0 (as a one-seed run)."""
    return name if seed == 0 else f"{name}_seed_{seed}"


def _check_seeds(seeds) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)):
        raise TypeError(f"seeds must be an int >= 1, got {seeds!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    return int(seeds)


def _per_seed(value, seeds: int, what: str, kind: type) -> list:
    """``value`` as one item per seed: None (none given), one item (seed 0's) or ``seeds`` items."""
    if value is None:
        return [None] * seeds
    if isinstance(value, kind):
        return [value] + [None] * (seeds - 1)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(
            f"{what} must be a {kind.__name__} or a sequence of one per seed, "
            f"got {type(value).__name__}"
        )
    if len(value) != seeds:
        raise ValueError(f"{what} holds {len(value)} items for seeds={seeds}; give one per seed")
    for i, item in enumerate(value):
        if not isinstance(item, kind):
            raise TypeError(f"{what}[{i}] must be a {kind.__name__}, got {type(item).__name__}")
    return list(value)


def _stages(checkpoint_dir, resume: bool):
    """``stage(name)``: the path of one step's checkpoint under ``checkpoint_dir``, or None."""
    if checkpoint_dir is None:
        return lambda name: None
    root = prepare_run_directory(checkpoint_dir, resume=resume)
    return lambda name: root / name


def train_or_load_task_network(
    data: TaskData, directory: str | Path | None, **train_options
) -> TaskNetwork:
    """Loads a task's ε-network from ``directory`` where an earlier run saved it, else trains it
    with :func:`ldnas_jax.train_task_network` and saves it there (when ``directory`` is given).

    Example:
      >>> import tempfile
      >>> from ldnas_jax.data import Split
      >>> rng = np.random.default_rng(0)
      >>> split = Split(rng.uniform(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> data, directory = TaskData("T", 2, split, split, split), tempfile.mkdtemp()
      >>> net = train_or_load_task_network(data, f"{directory}/T", key=jax.random.key(0),
      ...                                  epochs=1, batch_size=8, progress=False)
      >>> again = train_or_load_task_network(data, f"{directory}/T")  # loaded, not trained
      >>> again.test_accuracy == net.test_accuracy
      True
    """
    directory = None if directory is None else Path(directory)
    if directory is not None and (directory / "meta.json").exists():
        network, _ = load_task_network(directory)
        if network.task != data.name:
            raise CheckpointError(
                f"{directory} holds the network of {network.task!r}, not of {data.name!r}"
            )
        return network
    network = train_task_network(data, **train_options)
    if directory is not None:
        save_task_network(network, directory, input_shape=data.train.x.shape[1:])
    return network


def resumable_distances(
    path: Path | None,
    names: list[str],
    compute: Callable[[], Mapping[str, float]],
    *,
    distance: str = "log_det",
) -> dict[str, float]:
    """``compute()``, a column ``{baseline: d[b, t]}``, or what an earlier run saved at ``path``.

    The file records which distance it holds, and a resumed run asking for another is
    refused. JSON floats round-trip exactly, so a resumed column equals a computed one.

    Raises:
      CheckpointError: ``path`` is corrupt, covers other baselines, or holds another distance.

    Example:
      >>> import tempfile
      >>> path = Path(tempfile.mkdtemp()) / "d.json"
      >>> resumable_distances(path, ["A"], lambda: {"A": 0.25}, distance="cosine")
      {'A': 0.25}
      >>> resumable_distances(path, ["A"], lambda: {"A": 9.0}, distance="cosine")  # read back
      {'A': 0.25}
    """
    if path is not None and path.exists():
        try:
            saved = json.loads(path.read_text())
            distances = saved["distances"]
            saved_distance = saved.get("distance", "log_det")  # files from before the family
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"distances at {path} are corrupt: {err}") from err
        if list(distances) != names:
            raise CheckpointError(
                f"distances at {path} cover {list(distances)}, not the zoo's tasks {names}"
            )
        if saved_distance != distance:
            raise CheckpointError(
                f"distances at {path} are {saved_distance!r}, not {distance!r}; use another "
                "checkpoint_dir"
            )
        return distances
    distances = {name: float(d) for name, d in compute().items()}
    if path is not None:
        write_json_atomic(path, {"distance": distance, "distances": distances})
    return distances


def random_search_baseline(
    target: TaskData,
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    space: SearchSpace | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> BaselineResult:
    """Random search over the full operation set with LD-NAS's budget, then the same final training.

    With ``checkpoint_dir`` the search (``search/``, after every sample) and
    the final training (``final/``) are checkpointed, as in
    :func:`search_architecture`.
    """
    _check_target(target)
    space = space or SearchSpace(SEARCHABLE_OPERATIONS, shared_cells=budget.shared_cells)
    budget = fit_budget(budget, target)

    def search(train, val, search_key, directory):
        return random_search(
            space,
            train,
            val,
            key=search_key,
            num_classes=target.num_classes,
            config=budget.random_search_config(),
            progress=progress,
            checkpoint_dir=directory,
            resume=resume,
        )

    return _search_then_train(
        "random_search",
        search,
        target,
        key,
        budget,
        progress,
        _stages(checkpoint_dir, resume),
        resume,
    )


def full_space_fuse_baseline(
    target: TaskData,
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> BaselineResult:
    """FUSE over the full operation set without task similarity, same budget and final training.

    With ``checkpoint_dir`` the search (``search/``) and final training
    (``final/``) are checkpointed as in :func:`search_architecture`.
    """
    full_space = SearchSpace(SEARCHABLE_OPERATIONS, shared_cells=budget.shared_cells)
    result = search_and_train(
        target,
        full_space,
        key=key,
        budget=budget,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
    )
    return result._replace(method="full_space_fuse")


def _search_then_train(
    method, search, target, key, budget, progress, stage, resume, checkpoint_every: int = 1
) -> BaselineResult:
    """``search(train, val, key, directory)`` on the target, then :func:`train_final` on its winner.

    ``stage(name)`` is the checkpoint path of a step (see :func:`_stages`).
    """
    search_key, final_key = jax.random.split(key)
    result = search(
        (target.train.x, target.train.y),
        (target.val.x, target.val.y),
        search_key,
        stage("search"),
    )
    final = train_final(
        result.genotype,
        target,
        key=final_key,
        budget=budget,
        progress=progress,
        checkpoint_dir=stage("final"),
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    return BaselineResult(method, result, final, result.seconds)
