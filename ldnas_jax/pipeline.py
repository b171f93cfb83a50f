"""Algorithm 1 end to end: distances to the zoo, the closest task, its search space, FUSE, final training.

This is the one layer that joins the Fisher/distance code and the NAS code.
The two baselines of the paper's tables run through the same final training,
with the same search budget:

* :func:`random_search_baseline`: random search over the full operation set;
* :func:`full_space_fuse_baseline`: FUSE over the full operation set, no task similarity.
"""

import json
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np

from ldnas_jax._checks import NonFiniteError, is_real_number_dtype
from ldnas_jax.checkpoint import CheckpointError, prepare_run_directory, write_json_atomic
from ldnas_jax.data import TaskData
from ldnas_jax.nas import (
    ALL_OPERATIONS,
    FuseConfig,
    Genotype,
    SearchResult,
    SearchSpace,
    Skeleton,
    count_params,
    fuse_search,
    random_search,
)
from ldnas_jax.tasks._networks import (
    TaskNetwork,
    load_task_network,
    save_task_network,
    train_task_network,
)

# DistanceOptions lives next to the pair loop; importable from here as before.
from ldnas_jax.tasks._options import DistanceOptions, check_distance_options
from ldnas_jax.tasks._pairs import column_distances
from ldnas_jax.train import evaluate, train_classifier
from ldnas_jax.zoo import ZooEntry


class SearchBudget(NamedTuple):
    """The search and final-training budget, shared by LD-NAS and its baselines.

    LD-NAS and full-space FUSE evaluate ``num_candidates`` new genotypes per
    iteration for ``max_iterations`` iterations, training each FUSE mixture for
    ``max_rounds × steps_per_round`` weight steps. Random search gets the same
    number of genotypes, each trained for the same number of steps.
    """

    num_candidates: int = 3
    max_iterations: int = 3
    patience: int | None = None
    max_rounds: int = 6
    patience_k: int = 3
    steps_per_round: int = 10
    batch_size: int = 32
    channels: int = 8
    num_cells: int = 3
    final_epochs: int = 6
    final_batch_size: int = 64
    # Cell structure of the full-space baselines; LD-NAS takes its own from b*.
    shared_cells: bool = True

    def fuse_config(self) -> FuseConfig:
        """The options of every FUSE run of the search (:func:`ldnas_jax.nas.fuse_search`).

        Example:
          >>> SearchBudget(max_rounds=2, channels=4).fuse_config()[:1]
          (2,)
        """
        return FuseConfig(
            max_rounds=self.max_rounds,
            patience_k=self.patience_k,
            steps_per_round=self.steps_per_round,
            batch_size=self.batch_size,
            channels=self.channels,
            num_cells=self.num_cells,
        )


def fit_budget(budget: SearchBudget, target: TaskData) -> SearchBudget:
    """Caps the search batch at the size of the smallest split it draws from (small targets)."""
    return budget._replace(
        batch_size=min(budget.batch_size, len(target.train.x), len(target.val.x))
    )


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


class LDNASResult(NamedTuple):
    """Everything Algorithm 1 produced for one target."""

    target: str
    baselines: tuple[str, ...]
    distances: np.ndarray  # d[b, t] for each baseline b, in ``baselines`` order
    closest_task: str
    space: SearchSpace
    search: SearchResult
    final: FinalNetwork
    search_seconds: float
    target_network: TaskNetwork


def distances_to_target(
    target: TaskData,
    zoo: dict[str, ZooEntry],
    target_network: TaskNetwork,
    *,
    options: DistanceOptions = DistanceOptions(),
    key: jax.Array | None = None,
) -> dict[str, float]:
    """d[b, t] for every baseline b in the zoo, F_{b,t} and F_{t,t} on the target's train data.

    The target's column of :func:`ldnas_jax.task_distances` with the same key
    (:func:`ldnas_jax.tasks.column_distances`), keyed by the zoo's names.

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
    """
    _check_target(target)
    column = column_distances(
        [entry.network for entry in zoo.values()],
        target_network,
        target.train,
        target.num_classes,
        options=check_distance_options(options),
        key=key,
    )["log_det"]
    return {name: column[entry.network.task] for name, entry in zoo.items()}


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
      >>> budget = SearchBudget(channels=4, num_cells=1, final_epochs=1, final_batch_size=8)
      >>> final = train_final(space.sample(jax.random.key(0), 1)[0], TaskData("T", 2, *[split] * 3),
      ...                     key=jax.random.key(1), budget=budget, progress=False)
      >>> 0 <= final.test_accuracy <= 1, len(final.history)
      (True, 1)
    """
    model = Skeleton(
        genotype, target.num_classes, channels=budget.channels, num_cells=budget.num_cells
    )
    result = train_classifier(
        model,
        (target.train.x, target.train.y),
        key=key,
        epochs=budget.final_epochs,
        batch_size=budget.final_batch_size,
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


def search_architecture(
    target: TaskData,
    zoo: dict[str, ZooEntry],
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    distance: DistanceOptions = DistanceOptions(),
    target_network: TaskNetwork | None = None,
    model_name: str = "small_vgg",
    epsilon_epochs: int = 4,
    start_from_baseline: bool = False,
    distances: dict[str, float] | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
) -> LDNASResult:
    """Algorithm 1: LD-NAS for one target task.

    1. Trains the target's ε-network N_t (unless given) and computes d[b, t]
       for every baseline b in ``zoo``;
    2. takes b* = argmin_b d[b, t];
    3. sets the search space S = S_{b*} (b*'s cell structure and operations);
    4. runs the FUSE search loop in S and trains the winner c* from scratch.

    Args:
      target: the target task's data (train, val, test).
      zoo: baselines from :func:`ldnas_jax.build_zoo` or :func:`ldnas_jax.load_zoo`.
      key: PRNG key; every random choice derives from it.
      budget: search and final-training budget.
      distance: estimator, label mode, σ and normalisation of the distance.
      target_network: a trained N_t, to skip its training.
      start_from_baseline: seed c* with b*'s own architecture.
      distances: precomputed ``{baseline: d[b, t]}``, to skip step 1.
      checkpoint_dir: when given, every step's product is saved there as it
        is done: ``target_network/`` (N_t, when trained here), ``distances.json``
        (when computed here), ``search/`` (FUSE iterations) and ``final/``
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
      >>> budget = SearchBudget(num_candidates=1, max_iterations=1, max_rounds=1,
      ...                       steps_per_round=1, batch_size=8, channels=4, num_cells=1,
      ...                       final_epochs=1, final_batch_size=8)
      >>> result = search_architecture(target, zoo, key=jax.random.key(0), budget=budget,
      ...                              target_network=network("T", 2), progress=False)
      >>> result.closest_task in zoo, result.search.genotype in result.space
      (True, True)
    """
    _check_target(target)
    distance = check_distance_options(distance)
    if not zoo:
        raise ValueError("the zoo is empty: Algorithm 1 needs at least one baseline task")
    if distances is not None:
        distances = _check_given_distances(distances, zoo)
    if target.name in zoo:
        raise ValueError(
            f"target {target.name!r} is itself in the zoo; remove it from the baselines"
        )
    budget = fit_budget(budget, target)
    net_key, distance_key, search_key, final_key = jax.random.split(key, 4)
    stage = _stages(checkpoint_dir, resume)
    if target_network is None:
        target_network = train_or_load_task_network(
            target,
            stage("target_network"),
            key=net_key,
            model_name=model_name,
            epochs=epsilon_epochs,
            progress=progress,
        )
    if distances is None:
        distances = _distances(
            stage("distances.json"),
            list(zoo),
            lambda: distances_to_target(
                target, zoo, target_network, options=distance, key=distance_key
            ),
        )
    closest = min(distances, key=distances.get)
    entry = zoo[closest]
    search = fuse_search(
        entry.space,
        (target.train.x, target.train.y),
        (target.val.x, target.val.y),
        key=search_key,
        num_classes=target.num_classes,
        initial=entry.genotype if start_from_baseline else None,
        progress=progress,
        checkpoint_dir=stage("search"),
        checkpoint_every=checkpoint_every,
        resume=resume,
        num_candidates=budget.num_candidates,
        max_iterations=budget.max_iterations,
        patience=budget.patience,
        config=budget.fuse_config(),
    )
    search_seconds = search.seconds  # a resumed search counts all its parts
    final = train_final(
        search.genotype,
        target,
        key=final_key,
        budget=budget,
        progress=progress,
        checkpoint_dir=stage("final"),
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    return LDNASResult(
        target.name,
        tuple(zoo),
        np.array([distances[b] for b in zoo]),
        closest,
        entry.space,
        search,
        final,
        search_seconds,
        target_network,
    )


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


def _distances(path: Path | None, names: list[str], compute) -> dict[str, float]:
    """Computes d[b, t], or reads it from ``path`` where an earlier run wrote it."""
    if path is not None and path.exists():
        try:
            distances = json.loads(path.read_text())["distances"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"distances at {path} are corrupt: {err}") from err
        if list(distances) != names:
            raise CheckpointError(
                f"distances at {path} cover {list(distances)}, not the zoo's tasks {names}"
            )
        return distances
    distances = {name: float(d) for name, d in compute().items()}
    if path is not None:
        write_json_atomic(path, {"distances": distances})
    return distances


class BaselineResult(NamedTuple):
    """A comparison method's outcome on the same target and budget."""

    method: str
    search: SearchResult
    final: FinalNetwork
    search_seconds: float


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
    space = space or SearchSpace(ALL_OPERATIONS, shared_cells=budget.shared_cells)
    budget = fit_budget(budget, target)

    def search(train, val, search_key, directory):
        return random_search(
            space,
            train,
            val,
            key=search_key,
            num_classes=target.num_classes,
            num_samples=budget.num_candidates * budget.max_iterations,
            train_steps=budget.max_rounds * budget.steps_per_round,
            batch_size=budget.batch_size,
            channels=budget.channels,
            num_cells=budget.num_cells,
            progress=progress,
            checkpoint_dir=directory,
            resume=resume,
        )

    return _search_then_train(
        "random_search", search, target, key, budget, progress, checkpoint_dir, resume
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
    _check_target(target)
    budget = fit_budget(budget, target)

    def search(train, val, search_key, directory):
        return fuse_search(
            SearchSpace(ALL_OPERATIONS, shared_cells=budget.shared_cells),
            train,
            val,
            key=search_key,
            num_classes=target.num_classes,
            progress=progress,
            checkpoint_dir=directory,
            resume=resume,
            num_candidates=budget.num_candidates,
            max_iterations=budget.max_iterations,
            patience=budget.patience,
            config=budget.fuse_config(),
        )

    return _search_then_train(
        "full_space_fuse", search, target, key, budget, progress, checkpoint_dir, resume
    )


def _search_then_train(
    method, search, target, key, budget, progress, checkpoint_dir, resume
) -> BaselineResult:
    """``search(train, val, key, directory)`` on the target, then :func:`train_final` on its winner."""
    search_key, final_key = jax.random.split(key)
    stage = _stages(checkpoint_dir, resume)
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
        resume=resume,
    )
    return BaselineResult(method, result, final, result.seconds)
