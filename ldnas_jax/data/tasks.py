"""Tasks as data: a data source plus a map from the source's labels to task classes.

Task class k is the set of source labels `groups[k]`. With `rest=True` every other source
label becomes one extra class, `len(groups)` ("rest" / "other"); without it the task is on a
subset of the source's classes, and loading drops the examples of every label in no group
(`define_task("cat_vs_dog", "cifar10", [[3], [5]])`). Defined tasks live in a registry keyed
by name, so the command line and configs can refer to them as strings.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["Task", "define_task", "get_task", "list_tasks"]

_TASKS: dict[str, "Task"] = {}


def _check_text(value, what: str, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str; got {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"{what} must not be empty")


def _normalise_groups(groups) -> tuple[tuple[int, ...], ...]:
    """Checks `groups` and returns it as a tuple of tuples of Python ints."""
    if isinstance(groups, (str, bytes)) or not isinstance(groups, (Sequence, np.ndarray)):
        raise TypeError(
            f"groups must be a sequence of label sequences, e.g. ((0,), (1, 2)); got {groups!r}"
        )
    normalised = []
    for k, group in enumerate(groups):
        if isinstance(group, (str, bytes)) or not isinstance(group, (Sequence, np.ndarray)):
            raise TypeError(f"groups[{k}] must be a sequence of integer labels; got {group!r}")
        if len(group) == 0:
            raise ValueError(
                f"groups[{k}] is empty; every task class needs at least one source label"
            )
        labels = []
        for label in group:
            if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
                raise TypeError(f"groups[{k}] holds {label!r}; labels must be integers")
            if label < 0:
                raise ValueError(f"groups[{k}] holds {label}; source labels must be non-negative")
            labels.append(int(label))
        normalised.append(tuple(labels))
    if not normalised:
        raise ValueError("groups is empty; a task needs at least one group")
    return tuple(normalised)


def _check_disjoint(groups: tuple[tuple[int, ...], ...]) -> None:
    owner: dict[int, int] = {}
    for k, group in enumerate(groups):
        for label in group:
            if label in owner:
                where = (
                    f"groups[{k}] twice"
                    if owner[label] == k
                    else f"groups[{owner[label]}] and groups[{k}]"
                )
                raise ValueError(f"groups overlap: source label {label} is in {where}")
            owner[label] = k


def _integer_labels(source_labels, task_name: str) -> np.ndarray:
    labels = np.asarray(source_labels)
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"task {task_name!r}: source labels must be integers; got dtype {labels.dtype}"
        )
    return labels


@dataclasses.dataclass(frozen=True)
class Task:
    """A classification task defined on a registered data source.

    Attributes:
      name: unique name, e.g. "T2".
      source: name of a registered data source, e.g. "mnist" or "embedded_digits".
      groups: task class k is the set of source labels `groups[k]`; groups must not overlap.
      rest: if True, every source label in no group maps to the extra class `len(groups)`;
        if False, examples whose label is in no group are not part of the task (see `keeps`).
      description: one line for reports.

    Example:
      >>> odd_even = Task("odd_even", "mnist", ((1, 3, 5, 7, 9), (0, 2, 4, 6, 8)))
      >>> odd_even.num_classes, odd_even.map_labels(np.array([3, 4])).tolist()
      (2, [0, 1])
    """

    name: str
    source: str
    groups: tuple[tuple[int, ...], ...]
    rest: bool = False
    description: str = ""

    def __post_init__(self):
        _check_text(self.name, "task name")
        _check_text(self.source, f"source of task {self.name!r}")
        _check_text(self.description, f"description of task {self.name!r}", allow_empty=True)
        if not isinstance(self.rest, (bool, np.bool_)):
            raise TypeError(f"rest must be a bool; got {self.rest!r}")
        groups = _normalise_groups(self.groups)
        _check_disjoint(groups)
        object.__setattr__(self, "groups", groups)  # frozen: store the normalised form once
        object.__setattr__(self, "rest", bool(self.rest))
        if self.num_classes < 2:
            raise ValueError(f"task {self.name!r} has a single class; add a group or set rest=True")

    @property
    def num_classes(self) -> int:
        """Number of task classes: one per group, plus one if `rest`."""
        return len(self.groups) + int(self.rest)

    def keeps(self, source_labels: np.ndarray) -> np.ndarray:
        """Which examples belong to the task: those whose source label is in a group, or all
        of them when the task has a rest class.

        Args:
          source_labels: integer array of any shape.

        Returns:
          bool array of the same shape.

        Example:
          >>> cat_vs_dog = Task("cat_vs_dog", "cifar10", ((3,), (5,)))
          >>> cat_vs_dog.keeps(np.array([3, 0, 5, 9])).tolist()
          [True, False, True, False]
        """
        labels = _integer_labels(source_labels, self.name)
        if self.rest:
            return np.ones(labels.shape, bool)
        return np.isin(labels, [label for group in self.groups for label in group])

    def map_labels(self, source_labels: np.ndarray) -> np.ndarray:
        """Maps source labels to task labels.

        Args:
          source_labels: integer array of any shape.

        Returns:
          int32 array of the same shape, values in [0, num_classes).

        Raises:
          TypeError: if the labels are not integers.
          ValueError: if a label is in no group and the task has no rest class (select the
            task's examples with `keeps` first, as `load_task` does).

        Example:
          >>> Task("zero", "mnist", ((0,),), rest=True).map_labels(np.array([0, 5])).tolist()
          [0, 1]
        """
        labels = _integer_labels(source_labels, self.name)
        known = np.array([label for group in self.groups for label in group], np.int64)
        classes = np.array([k for k, group in enumerate(self.groups) for _ in group], np.int32)
        order = np.argsort(known)
        known, classes = known[order], classes[order]
        position = np.clip(np.searchsorted(known, labels), 0, known.size - 1)
        found = known[position] == labels
        if not self.rest and not found.all():
            stray = np.unique(labels[~found])
            raise ValueError(
                f"task {self.name!r}: source labels {stray[:10].tolist()} are in no group "
                "and the task has no rest class (rest=False)"
            )
        return np.where(found, classes[position], np.int32(len(self.groups))).astype(np.int32)


def define_task(
    name: str,
    source: str,
    groups: Sequence[Sequence[int]],
    *,
    rest: bool = False,
    description: str = "",
    overwrite: bool = False,
) -> Task:
    """Defines a task, registers it under `name` and returns it.

    Args:
      name: unique task name.
      source: name of a registered data source (checked when the task is loaded).
      groups: sequence of label sequences; class k = source labels in groups[k].
      rest: map every other source label to the extra class len(groups). Without it, groups
        that name only some of the source's labels define a task on that subset: loading
        keeps the examples of those labels and drops the others, in every split.
      description: one line for reports.
      overwrite: replace an existing task of the same name instead of raising.

    Returns:
      The new `Task`.

    Example:
      >>> cats_dogs = define_task("cat_or_dog_vs_rest", "cifar10", [[3, 5]], rest=True, overwrite=True)
      >>> cats_dogs.num_classes
      2
      >>> int(define_task("cat_vs_dog", "cifar10", [[3], [5]], overwrite=True).keeps(np.arange(10)).sum())
      2
    """
    task = Task(name, source, groups, rest=rest, description=description)
    if name in _TASKS and not overwrite:
        raise ValueError(f"task {name!r} is already defined; pass overwrite=True to replace it")
    _TASKS[name] = task
    return task


def get_task(name: str) -> Task:
    """Returns the registered task called `name`.

    Example:
      >>> get_task("T2").groups
      ((1, 3, 5, 7, 9), (0, 2, 4, 6, 8))
    """
    if not isinstance(name, str):
        raise TypeError(f"task name must be a str; got {type(name).__name__}")
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(_TASKS)}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    """Names of all registered tasks, in the order they were defined.

    Example:
      >>> list_tasks()[:3]
      ['T0', 'T1', 'T2']
    """
    return list(_TASKS)
