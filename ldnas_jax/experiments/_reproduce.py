"""The paper's experimental protocol: Figure 1's distance tables over seeds, then Tables 1–2.

Two stages, each a function that the ``reproduce`` command and the notebooks call:

1. :func:`distance_tables`: for each of S seeds, train one ε-network per task
   (seed s initialises every network), compute every pairwise distance
   ``D[b, t] = dist(F_{b,t}, F_{t,t})`` of each chosen distance
   (:mod:`ldnas_jax.tasks._family`), and summarise the S tables by their
   element-wise mean and standard deviation (population, ``ddof=0``), as Figure 1.
2. :func:`search_comparison`: for one target, LD-NAS in the space of the task
   closest in the mean table, random search and FUSE over the full space with the
   same budget, and hand-designed networks (VGG-16, ResNet-18, DenseNet-121)
   trained with the same final-training epochs and data, as Tables 1–2.

Search cost is reported in seconds and in device-hours with the device kind, so
a GPU run gives the GPU-hours the paper's tables count (in days).
"""

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from ldnas_jax.data import TaskData
from ldnas_jax.distances import closest_tasks
from ldnas_jax.models import make_model
from ldnas_jax.nas import count_params
from ldnas_jax.pipeline import (
    DISTANCE_NAMES,
    SearchBudget,
    check_distance,
    distance_matrices,
    final_training,
    full_space_fuse_baseline,
    random_search_baseline,
    search_architecture,
)
from ldnas_jax.tasks import (
    DistanceOptions,
    TaskNetwork,
    check_distance_options,
    train_task_network,
)
from ldnas_jax.train import evaluate
from ldnas_jax.zoo import (
    ArchitectureOptions,
    ZooEntry,
    find_task_architecture,
    shared_head_classes,
    task_key,
)

HAND_DESIGNED = ("vgg16", "resnet18", "densenet121")
DEFAULT_DISTANCES = ("log_det", "frechet", "task2vec")
# Tasks searched in Tables 1 and 2 (T3 on MNIST, T6 on CIFAR-10), by index in the family.
PAPER_TARGET_INDICES = (3, 6)


class EpsilonOptions(NamedTuple):
    """How each ε-approximation network is trained (the paper: VGG-16)."""

    model_name: str = "small_vgg"
    epochs: int = 4
    batch_size: int = 64
    learning_rate: float = 3e-3
    epsilon: float = 0.1
    # None: exactly ``epochs``; else train on until validation accuracy >= 1 - ε, at most this.
    max_epochs: int | None = None


def train_epsilon_network(
    data: TaskData, options: EpsilonOptions, *, key: jax.Array, progress: bool = True
) -> TaskNetwork:
    """:func:`ldnas_jax.tasks.train_task_network` with every setting taken from ``options``."""
    return train_task_network(
        data,
        key=key,
        model_name=options.model_name,
        epochs=options.epochs,
        max_epochs=options.max_epochs,
        batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        epsilon=options.epsilon,
        progress=progress,
    )


class DistanceTables(NamedTuple):
    """Figure 1: per-seed, mean and std K×K tables of each distance (rows sources, columns targets).

    Attributes:
      names: the K task names, in row/column order.
      per_seed: ``{distance: (S, K, K) array}``.
      mean, std: ``{distance: (K, K) array}``; the mean and population std over seeds.
      closest: ``{distance: {target: closest baseline in the mean table}}``.
      networks: the ε-networks of the first seed, in ``names`` order (reused by the search).
      test_accuracy: per seed, ``{task: test accuracy of its ε-network}``.
      seconds: wall-clock time of the whole stage.
    """

    names: tuple[str, ...]
    per_seed: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    closest: dict[str, dict[str, str]]
    networks: tuple[TaskNetwork, ...]
    test_accuracy: list[dict[str, float]]
    seconds: float


def device_info() -> dict[str, Any]:
    """The accelerator the run used: platform, device kind and count.

    Example:
      >>> sorted(device_info())
      ['count', 'device_kind', 'platform']
    """
    device = jax.devices()[0]
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "count": jax.device_count(),
    }


def search_cost(seconds: float, device: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Search time in seconds and device-hours; ``gpu_hours`` only when the device is a GPU.

    One device is counted: the search runs on the first device.

    Example:
      >>> search_cost(7200.0, {"platform": "gpu", "device_kind": "H100", "count": 1})["gpu_hours"]
      2.0
    """
    device = device_info() if device is None else device
    hours = seconds / 3600.0
    return {
        "search_seconds": seconds,
        "search_device_hours": hours,
        "gpu_hours": hours if device["platform"] == "gpu" else None,
        "device_kind": device["device_kind"],
    }


def summarize_seeds(per_seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise mean and population standard deviation over the seed axis (axis 0).

    Example:
      >>> m, s = summarize_seeds(np.array([[[0.0, 1.0]], [[0.0, 3.0]]]))
      >>> m.tolist(), s.tolist()
      ([[0.0, 2.0]], [[0.0, 1.0]])
    """
    stack = np.asarray(per_seed, np.float64)
    if stack.ndim != 3 or stack.shape[0] < 1:
        raise ValueError(f"per_seed must be an (S, K, K) array with S >= 1, got {stack.shape}")
    return stack.mean(axis=0), stack.std(axis=0)


def distance_tables(
    datas: Sequence[TaskData],
    *,
    seeds: Sequence[int],
    epsilon: EpsilonOptions = EpsilonOptions(),
    distance: DistanceOptions = DistanceOptions(),
    distances: Sequence[str] = DEFAULT_DISTANCES,
    progress: bool = True,
) -> DistanceTables:
    """Figure 1: ε-networks over seeds and the mean/std tables of every chosen distance.

    For seed s, task i's network starts from ``fold_in(key(s), i)``; the Fishers
    are evaluated on each target's train split (at most ``distance.max_examples``).

    Args:
      datas: the K tasks (K >= 2).
      seeds: the initialisation seeds (the paper: 10).
      epsilon: ε-network model and training.
      distance: Fisher estimator, label mode, σ, normalisation, examples per Fisher.
      distances: names of :data:`ldnas_jax.pipeline.DISTANCE_NAMES` (the diagonal
        distances and ``"log_det_full"``); the first one drives the search.
      progress: show progress bars.

    Example:
      Two tiny tasks of 8×8 images, one epoch, two seeds:

      >>> from ldnas_jax.data import Split
      >>> rng = np.random.default_rng(0)
      >>> split = lambda: Split(rng.uniform(size=(16, 8, 8, 3)).astype(np.float32),
      ...                       np.arange(16) % 2)
      >>> datas = [TaskData(name, 2, split(), split(), split()) for name in "AB"]
      >>> tables = distance_tables(datas, seeds=[0, 1], epsilon=EpsilonOptions(epochs=1,
      ...     batch_size=8), distance=DistanceOptions(max_examples=4), progress=False)
      >>> tables.per_seed["log_det"].shape, tables.closest["frechet"]
      ((2, 2, 2), {'A': 'B', 'B': 'A'})
    """
    if len(datas) < 2:
        raise ValueError(f"the distance tables need at least two tasks, got {len(datas)}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    distance = check_distance_options(distance)
    chosen = list(distances)
    unknown = [d for d in chosen if d not in DISTANCE_NAMES]
    if unknown or not chosen:
        raise ValueError(
            f"unknown distances {unknown or '(none given)'}; known: {', '.join(DISTANCE_NAMES)}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"distances repeat: {chosen}")
    for name in chosen:
        check_distance(name, distance)  # e.g. "log_det_full" takes the empirical Fisher only
    names = tuple(d.name for d in datas)
    start = time.perf_counter()
    per_seed = {name: [] for name in chosen}
    accuracies, first_networks = [], ()
    for seed in seeds:
        key = jax.random.key(seed)
        networks = tuple(
            train_epsilon_network(data, epsilon, key=jax.random.fold_in(key, i), progress=progress)
            for i, data in enumerate(datas)
        )
        first_networks = first_networks or networks
        accuracies.append({n.task: n.test_accuracy for n in networks})
        matrices = distance_matrices(
            networks,
            [d.train for d in datas],
            [d.num_classes for d in datas],
            chosen,
            options=distance,
            key=jax.random.fold_in(key, 10_000),
            progress=progress,
        )
        for name in chosen:
            per_seed[name].append(matrices[name])
    stacks = {name: np.stack(tables) for name, tables in per_seed.items()}
    summaries = {name: summarize_seeds(stack) for name, stack in stacks.items()}
    mean = {name: m for name, (m, _) in summaries.items()}
    std = {name: s for name, (_, s) in summaries.items()}
    return DistanceTables(
        names,
        stacks,
        mean,
        std,
        closest_tasks(mean, names),
        first_networks,
        accuracies,
        time.perf_counter() - start,
    )


def paper_targets(names: Sequence[str]) -> list[str]:
    """The tasks the paper searches for (T3, T6, or E3, E6), among ``names``.

    Example:
      >>> paper_targets(["E0", "E3", "E5", "E6"]), paper_targets(["T1", "T2"])
      (['E3', 'E6'], [])
    """
    wanted = {f"{prefix}{i}" for prefix in ("T", "E") for i in PAPER_TARGET_INDICES}
    return [n for n in names if n in wanted]


def build_task_zoo(
    datas: Sequence[TaskData],
    networks: Sequence[TaskNetwork],
    *,
    key: jax.Array,
    architecture: ArchitectureOptions = ArchitectureOptions(),
    progress: bool = True,
) -> dict[str, ZooEntry]:
    """A zoo from ε-networks already trained: each task's architecture by random search.

    :func:`ldnas_jax.build_zoo` does the same but trains the ε-networks again;
    here the first seed's networks of :func:`distance_tables` are reused. Task i
    searches with ``fold_in(key, i)``.

    Example:
      >>> from ldnas_jax.data import Split
      >>> rng = np.random.default_rng(0)
      >>> split = Split(rng.uniform(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> data = TaskData("A", 2, split, split, split)
      >>> network = TaskNetwork("A", "small_vgg", 2, dict(make_model("small_vgg", 2).init(
      ...     jax.random.key(0), split.x[:1])), 1.0, 0.1)
      >>> from ldnas_jax.nas import RandomSearchConfig
      >>> tiny = ArchitectureOptions(
      ...     RandomSearchConfig(num_samples=1, train_steps=1, batch_size=8, channels=4, num_cells=1),
      ...     operations=("identity", "max_pool_3x3"))
      >>> zoo = build_task_zoo([data], [network], key=jax.random.key(1), architecture=tiny,
      ...                      progress=False)
      >>> zoo["A"].network is network, zoo["A"].genotype in zoo["A"].space
      (True, True)
    """
    if len(datas) != len(networks):
        raise ValueError(f"need one network per task, got {len(networks)} for {len(datas)} tasks")
    zoo, head_classes = {}, shared_head_classes(datas)
    for i, (data, network) in enumerate(zip(datas, networks)):
        if network.task != data.name:
            raise ValueError(f"network {i} is for task {network.task!r}, not {data.name!r}")
        found = find_task_architecture(
            data,
            key=task_key(key, data.name),
            options=architecture,
            head_classes=head_classes,
            progress=progress,
        )
        zoo[data.name] = ZooEntry(network, *found)
    return zoo


def fit_hand_designed(
    name: str,
    target: TaskData,
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    progress: bool = True,
):
    """The model ``name`` and its training on ``target``, with the final training of searched networks.

    Same epochs, batch, data and optimiser as :func:`~ldnas_jax.pipeline.train_final`; returns
    ``(model, TrainResult)``.
    """
    model = make_model(name, target.num_classes)
    result = final_training(
        model, target, key=key, budget=budget, progress=progress, description=f"train {name}"
    )
    return model, result


def train_hand_designed(
    name: str,
    target: TaskData,
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    progress: bool = True,
) -> dict[str, Any]:
    """Trains a hand-designed network like the searched ones: same epochs, batch, data, optimiser.

    Example:
      >>> from ldnas_jax.data import Split
      >>> from ldnas_jax.pipeline import FinalTraining
      >>> rng = np.random.default_rng(0)
      >>> split = Split(rng.uniform(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> row = train_hand_designed("small_vgg", TaskData("T", 2, split, split, split),
      ...     key=jax.random.key(0), budget=SearchBudget(final=FinalTraining(1, 8)),
      ...     progress=False)
      >>> row["method"], row["kind"], 0 <= row["test_accuracy"] <= 1
      ('small_vgg', 'hand-designed', True)
    """
    start = time.perf_counter()
    model, result = fit_hand_designed(name, target, key=key, budget=budget, progress=progress)
    accuracy = evaluate(model, result.variables, (target.test.x, target.test.y))["accuracy"]
    return _row(
        name,
        "hand-designed",
        accuracy,
        count_params(result.variables["params"]),
        train_seconds=time.perf_counter() - start,
    )


def search_comparison(
    target: TaskData,
    zoo: Mapping[str, ZooEntry],
    distances: Mapping[str, float],
    *,
    key: jax.Array,
    budget: SearchBudget = SearchBudget(),
    target_network: TaskNetwork | None = None,
    hand_designed: Sequence[str] = HAND_DESIGNED,
    baselines: bool = True,
    progress: bool = True,
    distance: str = "log_det",
) -> dict[str, Any]:
    """Tables 1–2 for one target: LD-NAS, random search, full-space FUSE, hand-designed networks.

    Args:
      target: the target task's data.
      zoo: baseline tasks (the target itself is left out if present).
      distances: ``{baseline: d[b, t]}``, e.g. the target's column of the mean table.
      key: PRNG key; LD-NAS, each baseline and each hand-designed network get their own.
      budget: search and final-training budget, shared by every method.
      target_network: the target's ε-network (needed by Algorithm 1 only for distances,
        which are given here; it is kept in the result).
      hand_designed: model names trained with the final-training budget.
      baselines: also run random search and full-space FUSE.
      distance: the name of the distance that ``distances`` holds (of
        :data:`ldnas_jax.pipeline.DISTANCE_NAMES`), recorded in the result.

    Returns:
      ``{"target", "distance", "closest_task", "distances", "search_space", "rows"}``; each row has
      ``method``, ``kind``, ``test_accuracy``, ``num_params``, ``params_millions`` and the
      search cost (seconds, device-hours, GPU-hours on GPU, device kind) or ``None``.

    Example:
      LD-NAS alone (no baselines, no hand-designed network) on a tiny target, from given
      distances and a hand-made zoo of two baselines:

      >>> from ldnas_jax.data import Split
      >>> from ldnas_jax.nas import SearchSpace
      >>> rng = np.random.default_rng(0)
      >>> split = Split(rng.uniform(size=(16, 8, 8, 3)).astype(np.float32), np.arange(16) % 2)
      >>> target = TaskData("T", 2, split, split, split)
      >>> network = TaskNetwork("A", "small_vgg", 2, dict(make_model("small_vgg", 2).init(
      ...     jax.random.key(0), split.x[:1])), 1.0, 0.1)
      >>> space = SearchSpace(("identity", "max_pool_3x3"), num_nodes=2)
      >>> genotype = space.sample(jax.random.key(0), 1)[0]
      >>> zoo = {n: ZooEntry(network._replace(task=n), genotype, space, 0.5) for n in "AB"}
      >>> from ldnas_jax.nas import FuseConfig
      >>> from ldnas_jax.pipeline import FinalTraining
      >>> budget = SearchBudget(
      ...     fuse=FuseConfig(max_rounds=1, steps_per_round=1, batch_size=8, channels=4, num_cells=1),
      ...     num_candidates=1, max_iterations=1, final=FinalTraining(epochs=1, batch_size=8))
      >>> table = search_comparison(target, zoo, {"A": 0.2, "B": 0.1}, key=jax.random.key(0),
      ...     budget=budget, hand_designed=(), baselines=False, progress=False)
      >>> table["closest_task"], [row["method"] for row in table["rows"]]
      ('B', ['ld_nas'])
    """
    zoo = {name: entry for name, entry in zoo.items() if name != target.name}
    distances = {name: float(distances[name]) for name in zoo}
    device = device_info()
    keys = jax.random.split(key, 3 + len(hand_designed))
    ld = search_architecture(
        target,
        zoo,
        key=keys[0],
        budget=budget,
        distance=distance,
        target_network=target_network,
        distances=distances,
        progress=progress,
    )
    rows = [
        _row(
            "ld_nas",
            "search",
            ld.final.test_accuracy,
            ld.final.num_params,
            genotype=json.loads(ld.search.genotype.to_json()),
            search_space=list(ld.space.operations),
            **search_cost(ld.search_seconds, device),
        )
    ]
    if baselines:
        for run, k in ((random_search_baseline, keys[1]), (full_space_fuse_baseline, keys[2])):
            result = run(target, key=k, budget=budget, progress=progress)
            rows.append(
                _row(
                    result.method,
                    "search",
                    result.final.test_accuracy,
                    result.final.num_params,
                    genotype=json.loads(result.final.genotype.to_json()),
                    **search_cost(result.search_seconds, device),
                )
            )
    for name, k in zip(hand_designed, keys[3:]):
        rows.append(train_hand_designed(name, target, key=k, budget=budget, progress=progress))
    return {
        "target": target.name,
        "distance": ld.distance,
        "closest_task": ld.closest_task,
        "distances": distances,
        "search_space": list(ld.space.operations),
        "device": device,
        "rows": rows,
    }


def _row(method: str, kind: str, accuracy: float, num_params: int, **extra) -> dict[str, Any]:
    base = {
        "method": method,
        "kind": kind,
        "test_accuracy": float(accuracy),
        "num_params": int(num_params),
        "params_millions": num_params / 1e6,
        "search_seconds": None,
        "search_device_hours": None,
        "gpu_hours": None,
        "device_kind": None,
    }
    return {**base, **extra}
