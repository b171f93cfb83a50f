"""The baseline task zoo: for each learned task, its ε-network, its architecture and its search space.

The paper assumes each baseline's best architecture and search space are
known, found by random search; :func:`build_zoo` does exactly that. A zoo is
saved with Orbax (network variables) plus JSON (everything else), one
directory per task, so a new target reuses it without retraining::

    ZOO/zoo.json            {"tasks": [...]}
    ZOO/<task>/state/       Orbax checkpoint of the ε-network's variables
    ZOO/<task>/meta.json    model, accuracy, genotype, search space, input shape
    ZOO/<task>/training/    epoch checkpoints of the ε-network while it trains

Building with ``directory=`` saves each entry as soon as it is done and skips
entries already saved, so an interrupted build resumes where it stopped, down
to the last checkpointed epoch of the ε-network that was training.
"""

import json
import shutil
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from ldnas_jax.checkpoint import (
    CheckpointError,
    write_json_atomic,
)
from ldnas_jax.data import TaskData
from ldnas_jax.nas import (
    SEARCHABLE_OPERATIONS,
    Genotype,
    RandomSearchConfig,
    SearchSpace,
    best_sample,
    random_search,
    search_space_from_genotype,
)
from ldnas_jax.tasks import (
    TaskNetwork,
    load_task_network,
    save_task_network,
    train_task_network,
)


class ZooEntry(NamedTuple):
    """One baseline task: ε-network N_b, architecture c_b found by random search, space S_b.

    Attributes:
      network: the ε-network N_b.
      genotype: the architecture c_b chosen on the task's validation split.
      space: S_b, the operations and cell structure of c_b (never ``zero``).
      search_accuracy: validation accuracy of ``genotype`` in the search.
      quality: the quality gate (:func:`architecture_quality`): c_b's test accuracy
        against the median of the other random genotypes trained the same way;
        None for entries saved before the gate existed.
    """

    network: TaskNetwork
    genotype: Genotype
    space: SearchSpace
    search_accuracy: float
    quality: dict | None = None


class ZooQualityWarning(UserWarning):
    """A zoo architecture does not beat the median random genotype of its own task."""


# Fewest reference genotypes for the quality gate to be measured at all.
MIN_GATE_REFERENCES = 5


# The random search of each baseline's architecture (see ArchitectureOptions).
ARCHITECTURE_SEARCH = RandomSearchConfig(
    num_samples=6, train_steps=200, batch_size=32, channels=8, num_cells=2
)


class ArchitectureOptions(NamedTuple):
    """Budget of the random search that finds each baseline's architecture.

    ``train_steps`` comes from ``python -m benchmarks.zoo_budget`` (docs/results/zoo.md): on
    E6, 8 random genotypes of the full space trained for 400 steps; Spearman's ρ between
    their validation ranking after 25, 50, 100 and 200 steps and their final test ranking
    was 0.12, −0.05, 0.45 and 0.74. Before about 100 steps every genotype still predicts
    the majority class; 200 is the smallest budget whose ranking agrees. Random search
    rather than FUSE over the full space, because each sample's score is its own (FUSE's
    pick is a property of the mixture, see ``benchmarks.fuse_pick_rate``), and the same
    samples give the quality gate its references: ``num_samples`` − 1 >= 5 of them.

    Example:
      >>> ArchitectureOptions().search.train_steps, ArchitectureOptions().search.num_cells
      (200, 2)
    """

    search: RandomSearchConfig = ARCHITECTURE_SEARCH
    # One cell type, as in the paper's baselines ("4 nodes and 6 operations"): the
    # induced space then keeps about 4-5 of the 8 searchable operations.
    shared_cells: bool = True
    # The operations random search draws from: every searchable one (all but ``zero``).
    # Fewer compile a smaller program, e.g. for a quick zoo in tests and examples.
    operations: tuple[str, ...] = SEARCHABLE_OPERATIONS


class TaskArchitecture(NamedTuple):
    """What :func:`find_task_architecture` found: c_b, S_b, its validation score and gate."""

    genotype: Genotype
    space: SearchSpace
    val_accuracy: float
    quality: dict


def task_key(key: jax.Array, name: str) -> jax.Array:
    """The key of one task: ``key`` folded with a stable hash of the task's name.

    A task's architecture then depends on its name, not on its place in a list.

    Example:
      >>> a = task_key(jax.random.key(0), "E5")
      >>> bool((jax.random.key_data(a) == jax.random.key_data(task_key(jax.random.key(0), "E5"))).all())
      True
    """
    return jax.random.fold_in(key, zlib.crc32(str(name).encode()) & 0x7FFFFFFF)


def architecture_quality(history: Sequence[dict], chosen: int) -> dict:
    """The quality gate of a random search: the chosen sample against the others' median.

    The winner was picked on validation accuracy, so its validation score is biased
    upward; the gate compares *test* accuracies, which no choice has seen: the
    winner's against the median of the other samples, random genotypes of the same
    space trained the same way. With fewer than :data:`MIN_GATE_REFERENCES` others
    the gate is not measured (``beats_random_median`` is None).

    Example:
      >>> runs = [{"val_accuracy": v, "test_accuracy": t}
      ...         for v, t in [(0.9, 0.85), (0.7, 0.7), (0.6, 0.72), (0.8, 0.74),
      ...                      (0.5, 0.5), (0.65, 0.66)]]
      >>> gate = architecture_quality(runs, 0)
      >>> gate["random_median_test_accuracy"], gate["beats_random_median"]
      (0.7, True)
    """
    others = [h["test_accuracy"] for i, h in enumerate(history) if i != chosen]
    test = history[chosen]["test_accuracy"]
    median = float(np.median(others)) if others else None
    measured = len(others) >= MIN_GATE_REFERENCES
    return {
        "val_accuracy": history[chosen]["val_accuracy"],
        "test_accuracy": test,
        "random_test_accuracies": others,
        "random_median_test_accuracy": median,
        "margin": None if median is None else test - median,
        "beats_random_median": bool(test > median) if measured else None,
    }


def find_task_architecture(
    data: TaskData,
    *,
    key: jax.Array,
    space: SearchSpace | None = None,
    options: ArchitectureOptions = ArchitectureOptions(),
    head_classes: int | None = None,
    progress: bool = True,
) -> TaskArchitecture:
    """Random search over ``space`` for a task's architecture, with its quality gate.

    ``space`` defaults to ``options.operations`` (every searchable operation: all but
    ``zero``) with ``options.shared_cells``. The best
    sample on validation accuracy (ties: the lower validation loss) is the task's
    architecture c_b; its test accuracy is compared with the other samples' median
    (:func:`architecture_quality`), and a c_b that does not beat it raises a
    :class:`ZooQualityWarning`.

    ``head_classes`` (see :func:`~ldnas_jax.nas.random_search`) lets the tasks of
    a zoo share one compiled search program: :func:`build_zoo` passes the largest
    class count of its tasks.
    """
    space = space or SearchSpace(tuple(options.operations), shared_cells=options.shared_cells)
    result = random_search(
        space,
        (data.train.x, data.train.y),
        (data.val.x, data.val.y),
        key=key,
        num_classes=data.num_classes,
        config=options.search
        if head_classes is None
        else options.search._replace(head_classes=head_classes),
        progress=progress,
        test=(data.test.x, data.test.y),
    )
    chosen = best_sample(result.history)
    quality = architecture_quality(result.history, chosen)
    if quality["beats_random_median"] is False:
        warnings.warn(
            f"{data.name}: the searched architecture's test accuracy "
            f"{quality['test_accuracy']:.3f} does not beat the median "
            f"{quality['random_median_test_accuracy']:.3f} of the other random genotypes",
            ZooQualityWarning,
            stacklevel=2,
        )
    return TaskArchitecture(
        result.genotype,
        search_space_from_genotype(result.genotype),
        float(result.history[chosen]["val_accuracy"]),
        quality,
    )


def shared_head_classes(datas: Sequence[TaskData]) -> int | None:
    """The largest class count of ``datas``: one head size, so one compiled architecture search.

    Example:
      >>> import numpy as np
      >>> from ldnas_jax.data import Split
      >>> split = Split(np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, np.int32))
      >>> shared_head_classes([TaskData("A", 2, *[split] * 3), TaskData("B", 10, *[split] * 3)])
      10
    """
    return max((data.num_classes for data in datas), default=None)


def build_zoo(
    datas: Sequence[TaskData],
    *,
    key: jax.Array,
    model_name: str = "small_vgg",
    epochs: int = 4,
    max_epochs: int | None = None,
    architecture: ArchitectureOptions = ArchitectureOptions(),
    directory: str | Path | None = None,
    checkpoint_every: int = 1,
    progress: bool = True,
) -> dict[str, ZooEntry]:
    """Trains an ε-network and searches an architecture for every baseline task.

    Args:
      datas: the baseline tasks' data.
      key: PRNG key; each task uses :func:`task_key` of its name, so an entry does
        not change with the other tasks or their order.
      model_name: the ε-network (``"small_vgg"`` on CPU, ``"vgg16"`` as in the paper).
      epochs: ε-network training epochs (the least, with ``max_epochs``).
      max_epochs: optional cap: each ε-network trains past ``epochs`` until its
        validation accuracy reaches 1 − ε, at most this many epochs, and keeps its
        best epoch on validation (see :func:`~ldnas_jax.tasks.train_task_network`).
      architecture: random-search budget per task.
      directory: when given, each finished entry is saved there at once and
        entries already saved are loaded instead of rebuilt (resume); the
        ε-network's training is checkpointed under ``<task>/training/``.
      checkpoint_every: epochs between ε-network checkpoints (with ``directory``).

    Returns:
      ``{task name: ZooEntry}`` in the order of ``datas``.

    Raises:
      ValueError: two tasks share a name (one entry would overwrite the other).
    """
    names = [getattr(data, "name", None) for data in datas]
    duplicates = sorted({n for n in names if names.count(n) > 1}, key=str)
    if duplicates:
        raise ValueError(f"task names must be distinct, got {duplicates} more than once")
    head_classes = shared_head_classes(datas)
    zoo = {}
    for data in datas:
        task_dir = Path(directory) / data.name if directory is not None else None
        if task_dir is not None and (task_dir / "meta.json").exists():
            zoo[data.name] = load_zoo_entry(task_dir)
            continue
        key_of_task = task_key(key, data.name)
        network = train_task_network(
            data,
            key=jax.random.fold_in(key_of_task, 0),
            model_name=model_name,
            epochs=epochs,
            max_epochs=max_epochs,
            progress=progress,
            checkpoint_dir=None if task_dir is None else task_dir / "training",
            checkpoint_every=checkpoint_every,
            resume=True,
        )
        found = find_task_architecture(
            data,
            key=jax.random.fold_in(key_of_task, 1),
            options=architecture,
            head_classes=head_classes,
            progress=progress,
        )
        zoo[data.name] = ZooEntry(
            network, found.genotype, found.space, found.val_accuracy, found.quality
        )
        if task_dir is not None:
            save_zoo_entry(zoo[data.name], task_dir, input_shape=data.train.x.shape[1:])
            # The entry is complete (meta.json written): its epoch checkpoints are spent.
            shutil.rmtree(task_dir / "training", ignore_errors=True)
            write_json_atomic(Path(directory) / "zoo.json", {"tasks": list(zoo)})
    return zoo


def save_zoo_entry(entry: ZooEntry, directory: str | Path, *, input_shape: Sequence[int]) -> None:
    """Saves one baseline: its network (Orbax) with genotype and search space as metadata."""
    save_task_network(
        entry.network,
        directory,
        input_shape=input_shape,
        extra={
            "genotype": json.loads(entry.genotype.to_json()),
            "space": {
                "operations": list(entry.space.operations),
                "num_nodes": entry.space.num_nodes,
                "shared_cells": entry.space.shared_cells,
            },
            "search_accuracy": entry.search_accuracy,
            "quality": entry.quality,
        },
    )


def load_zoo_entry(directory: str | Path) -> ZooEntry:
    """Loads one baseline saved by :func:`save_zoo_entry`; bad or mismatched files raise CheckpointError."""
    network, meta = load_task_network(directory)
    try:
        genotype = Genotype.from_json(json.dumps(meta["genotype"]))
        space = SearchSpace(
            tuple(meta["space"]["operations"]),
            meta["space"]["num_nodes"],
            shared_cells=meta["space"].get("shared_cells", False),
        )
        return ZooEntry(network, genotype, space, meta["search_accuracy"], meta.get("quality"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"zoo entry at {directory} has invalid metadata: {err}") from err


def save_zoo(
    zoo: dict[str, ZooEntry], directory: str | Path, *, input_shape: Sequence[int]
) -> None:
    """Saves every entry and the index ``zoo.json``."""
    for name, entry in zoo.items():
        save_zoo_entry(entry, Path(directory) / name, input_shape=input_shape)
    write_json_atomic(Path(directory) / "zoo.json", {"tasks": list(zoo)})


# The prebuilt zoo of the embedded tasks E0-E7 that ships inside the package.
EMBEDDED_ZOO = Path(__file__).parent / "zoo_data" / "embedded"


def prebuilt_zoo_tasks() -> list[str]:
    """The tasks of the prebuilt zoo (:data:`EMBEDDED_ZOO`), read from its index alone.

    Example:
      >>> prebuilt_zoo_tasks()
      ['E0', 'E1', 'E2', 'E3', 'E4', 'E5', 'E6', 'E7']
    """
    return _zoo_index(EMBEDDED_ZOO)


def _zoo_index(directory: str | Path) -> list[str]:
    index = Path(directory) / "zoo.json"
    if not index.exists():
        raise CheckpointError(f"no zoo at {directory} (zoo.json missing)")
    try:
        tasks = json.loads(index.read_text())["tasks"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"zoo index {index} is corrupt: {type(err).__name__}: {err}") from err
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise CheckpointError(f"zoo index {index} is corrupt: tasks must be a list of names")
    return tasks


def load_zoo(directory: str | Path | None = None) -> dict[str, ZooEntry]:
    """Loads a zoo saved by :func:`save_zoo` or :func:`build_zoo`.

    Without ``directory``, the prebuilt zoo of the embedded tasks E0-E7 that ships
    with the package (:data:`EMBEDDED_ZOO`), built by
    ``python -m ldnas_jax zoo --out ldnas_jax/zoo_data/embedded --epochs 3 --max-epochs 8``:
    each entry's ε-network and an architecture searched on its task, with the
    quality gate of :func:`architecture_quality` (``entry.quality``).

    Raises:
      CheckpointError: ``zoo.json`` missing, not JSON, or without a list of
        task names under ``"tasks"``; an entry missing or corrupt.

    Example:
      >>> import tempfile
      >>> import numpy as np
      >>> from ldnas_jax.models import make_model
      >>> variables = make_model("small_vgg", 2).init(jax.random.key(0), np.zeros((1, 8, 8, 3)))
      >>> network = TaskNetwork("A", "small_vgg", 2, dict(variables), 0.9, 0.1)
      >>> space = SearchSpace(("identity", "max_pool_3x3"), num_nodes=2)
      >>> entry = ZooEntry(network, space.sample(jax.random.key(0), 1)[0], space, 0.5)
      >>> directory = tempfile.mkdtemp()
      >>> save_zoo({"A": entry}, directory, input_shape=(8, 8, 3))
      >>> zoo = load_zoo(directory)
      >>> list(zoo), zoo["A"].genotype == entry.genotype, zoo["A"].network.test_accuracy
      (['A'], True, 0.9)
    """
    directory = EMBEDDED_ZOO if directory is None else directory
    return {name: load_zoo_entry(Path(directory) / name) for name in _zoo_index(directory)}
