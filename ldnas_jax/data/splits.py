"""The data types: a source `Loader`, and the containers a loaded task comes in."""

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = ["Split", "TaskData", "Loader"]

# A data source: loader(split) -> (images, labels), split "train" or "test".
Loader = Callable[[str], tuple[np.ndarray, np.ndarray]]


class Split(NamedTuple):
    """One split of a task.

    Attributes:
      x: float32 images of shape (N, H, W, C), values in [0, 1].
      y: int32 task labels of shape (N,), values in [0, num_classes).

    Example:
      >>> split = Split(np.zeros((2, 32, 32, 3), np.float32), np.array([0, 1], np.int32))
      >>> len(split.y)
      2
    """

    x: np.ndarray
    y: np.ndarray


class TaskData(NamedTuple):
    """A task's data, ready for training: train, validation and test splits.

    Attributes:
      name: the task's name.
      num_classes: number of task classes; every label lies in [0, num_classes).
      train: the training split.
      val: the validation split, carved from the source's *train* split (never from test).
      test: the source's test split.

    Example:
      >>> empty = Split(np.zeros((0, 32, 32, 3), np.float32), np.zeros((0,), np.int32))
      >>> TaskData("demo", 2, empty, empty, empty).num_classes
      2
    """

    name: str
    num_classes: int
    train: Split
    val: Split
    test: Split

    @property
    def sizes(self) -> dict[str, int]:
        """Examples in each split: what the task kept, after any subset of the source's classes,
        balancing and caps.

        Example:
          >>> one = Split(np.zeros((1, 2, 2, 1), np.float32), np.zeros((1,), np.int32))
          >>> TaskData("demo", 2, one, one, one).sizes
          {'train': 1, 'val': 1, 'test': 1}
        """
        return {"train": len(self.train.y), "val": len(self.val.y), "test": len(self.test.y)}

    def summary(self) -> str:
        """One line for reports: the task's classes and the examples kept in each split.

        Example:
          >>> one = Split(np.zeros((1, 2, 2, 1), np.float32), np.zeros((1,), np.int32))
          >>> TaskData("demo", 2, one, one, one).summary()
          'demo: 2 classes; train 1, val 1, test 1 examples'
        """
        sizes = ", ".join(f"{split} {n}" for split, n in self.sizes.items())
        return f"{self.name}: {self.num_classes} classes; {sizes} examples"
