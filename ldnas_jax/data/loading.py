"""Loading a task: source -> task labels -> float images -> seeded train / val / test splits."""

import numpy as np

from ldnas_jax.data.holdout import check_labels_match
from ldnas_jax.data.images import as_nhwc, to_unit_float
from ldnas_jax.data.sources import get_source
from ldnas_jax.data.splits import Loader, Split, TaskData
from ldnas_jax.data.tasks import Task, get_task

__all__ = ["load_task"]


def _resolve_task(task) -> Task:
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        return get_task(task)
    raise TypeError(f"task must be a Task or a task name; got {type(task).__name__}")


def _resolve_loader(task: Task, source) -> Loader:
    if source is None:
        return get_source(task.source)
    if isinstance(source, str):
        return get_source(source)
    if callable(source):
        return source
    raise TypeError(
        f"source must be None, a source name or a loader callable; got {type(source).__name__}"
    )


def _read(loader: Loader, split: str, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Calls the loader and checks what it returns."""
    what = f"source of task {task.name!r}, split {split!r}"
    result = loader(split)
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"{what}: a loader must return an (images, labels) pair")
    images, labels = as_nhwc(result[0], what=f"{what}: images"), np.asarray(result[1])
    check_labels_match(images, labels, what)
    if len(labels) == 0:
        raise ValueError(f"{what} is empty")
    return images, labels


def _kept(task: Task, source_labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of the examples of `split` that the task keeps; raises if it keeps none."""
    kept = np.flatnonzero(task.keeps(source_labels))
    if kept.size == 0:
        named = sorted(label for group in task.groups for label in group)
        present = np.unique(source_labels)
        raise ValueError(
            f"task {task.name!r} keeps source labels {named}, but split {split!r} of its "
            f"source holds none of them (its labels: {present[:20].tolist()})"
        )
    return kept


def _check_options(val_fraction, seed, max_train, max_test) -> None:
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0.0 <= val_fraction < 1.0
    ):
        raise ValueError(f"val_fraction must lie in [0, 1); got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative int; got {seed!r}")
    for cap, what in ((max_train, "max_train"), (max_test, "max_test")):
        if cap is None:
            continue
        if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)):
            raise TypeError(f"{what} must be a positive int or None; got {cap!r}")
        if cap < 1:
            raise ValueError(f"{what} must be a positive int or None; got {cap}")


def _select(
    order: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    balance: bool,
    cap: int | None,
    what: str,
) -> np.ndarray:
    """Keeps a prefix of the shuffled `order`: at most `cap` examples, balanced if asked.

    Balancing keeps, of every class, its first k examples in `order`, with k the size of the
    smallest class (and at most cap // num_classes), so it inherits the seeded shuffle.
    """
    if not balance or order.size == 0:
        return order if cap is None else order[:cap]
    classes = labels[order]
    counts = np.bincount(classes, minlength=num_classes)
    if counts.min() == 0:
        raise ValueError(
            f"cannot balance the {what}: class {int(np.argmin(counts))} has no examples"
        )
    per_class = int(counts.min()) if cap is None else min(int(counts.min()), cap // num_classes)
    if per_class == 0:
        raise ValueError(
            f"cannot balance the {what}: a cap of {cap} is smaller than the {num_classes} classes"
        )
    # Rank of each example within its class, in shuffled order.
    rank = np.empty(order.size, np.int64)
    for k in range(num_classes):
        members = np.flatnonzero(classes == k)
        rank[members] = np.arange(members.size)
    return order[rank < per_class]


def _split(images: np.ndarray, kept: np.ndarray, labels: np.ndarray, chosen: np.ndarray) -> Split:
    """The chosen examples; `labels` and `chosen` index the kept examples, `kept` the source."""
    return Split(to_unit_float(images[kept[chosen]]), labels[chosen].astype(np.int32))


def load_task(
    task: Task | str,
    *,
    val_fraction: float = 0.1,
    balance: bool = False,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    source=None,
) -> TaskData:
    """Loads a task's train, validation and test splits as float32 NHWC images in [0, 1].

    Steps, all deterministic for a given `seed`:
    1. Read the source's "train" and "test" splits, keep the examples the task covers (all
       of them with a rest class; those whose label is in a group otherwise) and map source
       labels to task labels.
    2. Shuffle the kept train examples; the first `val_fraction` (rounded; at least one example
       when val_fraction > 0) becomes "val", the rest "train". Validation never comes from test.
    3. With `balance`, downsample every class of train and of val to the size of that split's
       smallest class (test keeps its natural distribution).
    4. Cap train at `max_train` examples, and val in proportion, at
       round(max_train * val_fraction / (1 - val_fraction)); cap the shuffled test at `max_test`.
       Caps take a prefix of the shuffled data, so they stay class-representative (and exactly
       balanced with `balance`).

    Args:
      task: a `Task` or the name of a registered one, e.g. "E3".
      val_fraction: share of the source's train split held out for validation, in [0, 1).
      balance: equalise class counts in train and val by downsampling.
      seed: seed of the shuffles.
      max_train: optional cap on the training split size.
      max_test: optional cap on the test split size.
      source: overrides `task.source`: a registered source name or a loader callable.

    Returns:
      A `TaskData` with float32 (N, H, W, C) images in [0, 1] and int32 labels in
      [0, task.num_classes); its `sizes` count the examples kept in each split.

    Raises:
      ValueError: for an unknown task or source, an empty split, val_fraction outside [0, 1),
        a split holding no example of the task's labels, or too few examples to split or
        balance.
      DataSourceError: the task's TFDS data set (T0-T7) is not prepared and cannot be
        downloaded; the message says how to read local files instead.

    Example:
      >>> data = load_task("E0", max_train=200, max_test=100)
      >>> data.train.x.shape, data.num_classes, len(data.val.y)
      ((200, 32, 32, 3), 2, 22)

      A task on two of the ten digits keeps only their examples:

      >>> from ldnas_jax.data.tasks import define_task
      >>> three_vs_five = define_task("three_vs_five", "embedded_digits", [[3], [5]], overwrite=True)
      >>> load_task(three_vs_five).summary()
      'three_vs_five: 2 classes; train 540, val 60, test 200 examples'
    """
    task = _resolve_task(task)
    _check_options(val_fraction, seed, max_train, max_test)
    loader = _resolve_loader(task, source)
    train_images, train_source_labels = _read(loader, "train", task)
    test_images, test_source_labels = _read(loader, "test", task)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            f"task {task.name!r}: train images are {train_images.shape[1:]} but test images "
            f"are {test_images.shape[1:]}"
        )
    train_kept = _kept(task, train_source_labels, "train")
    test_kept = _kept(task, test_source_labels, "test")
    train_labels = task.map_labels(train_source_labels[train_kept])
    test_labels = task.map_labels(test_source_labels[test_kept])

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_labels))
    n_val = int(round(val_fraction * len(order)))
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n_val >= len(order):
        raise ValueError(
            f"task {task.name!r}: {len(order)} kept training examples leave none for training "
            f"after holding out val_fraction={val_fraction}"
        )
    val_cap = (
        None
        if max_train is None
        else max(1, int(round(max_train * val_fraction / (1 - val_fraction))))
    )
    options = dict(num_classes=task.num_classes, balance=balance)
    train = _select(
        order[n_val:], train_labels, cap=max_train, what=f"train split of {task.name!r}", **options
    )
    val = _select(
        order[:n_val], train_labels, cap=val_cap, what=f"val split of {task.name!r}", **options
    )
    test = rng.permutation(len(test_labels))[:max_test]
    return TaskData(
        name=task.name,
        num_classes=task.num_classes,
        train=_split(train_images, train_kept, train_labels, train),
        val=_split(train_images, train_kept, train_labels, val),
        test=_split(test_images, test_kept, test_labels, test),
    )
