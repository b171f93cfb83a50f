"""Data for ldnas_jax: data sources, the paper's tasks, seeded splits and batching.

A *source* is a callable `loader(split) -> (images, labels)`. A *task* is a source plus a
map from source labels to task classes. `load_task` turns a task into float32 NHWC train,
validation and test splits. Two procedurally generated domains, "embedded_digits" and
"embedded_objects", need no download and back the tasks E0-E7, which mirror the paper's
T0-T7 (MNIST and CIFAR-10 through TFDS).

Example:
  >>> from ldnas_jax import data
  >>> task = data.define_task("low_vs_high", "embedded_digits", [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]],
  ...                         description="digits 0-4 vs 5-9", overwrite=True)
  >>> split = data.load_task(task, max_train=50).train
  >>> split.x.shape, sorted(set(split.y.tolist()))
  ((50, 32, 32, 3), [0, 1])
"""

from ldnas_jax.data.batching import iterate_batches, pad_rows
from ldnas_jax.data.digits import DIGITS_TEST_SIZE, DIGITS_TRAIN_SIZE, embedded_digits
from ldnas_jax.data.objects import (
    OBJECT_CLASSES,
    OBJECTS_TEST_SIZE,
    OBJECTS_TRAIN_SIZE,
    embedded_objects,
)
from ldnas_jax.data.idx import idx_source, read_idx
from ldnas_jax.data.images import resize_images
from ldnas_jax.data.loading import load_task
from ldnas_jax.data.npz import npz_source
from ldnas_jax.data.paper_tasks import CIFAR10_CLASSES, EMBEDDED_TASKS, PAPER_TASKS
from ldnas_jax.data.sources import get_source, list_sources, register_source
from ldnas_jax.data.splits import Loader, Split, TaskData
from ldnas_jax.data.tasks import Task, define_task, get_task, list_tasks
from ldnas_jax.data.tfds_loader import DataSourceError, tfds_source

__all__ = [
    # containers
    "Split",
    "TaskData",
    "Loader",
    # tasks
    "Task",
    "define_task",
    "get_task",
    "list_tasks",
    "PAPER_TASKS",
    "EMBEDDED_TASKS",
    # sources
    "register_source",
    "get_source",
    "list_sources",
    "tfds_source",
    "DataSourceError",
    "idx_source",
    "npz_source",
    "read_idx",
    "embedded_digits",
    "embedded_objects",
    # loading and batching
    "load_task",
    "iterate_batches",
    "pad_rows",
    "resize_images",
    # constants
    "CIFAR10_CLASSES",
    "OBJECT_CLASSES",
    "DIGITS_TRAIN_SIZE",
    "DIGITS_TEST_SIZE",
    "OBJECTS_TRAIN_SIZE",
    "OBJECTS_TEST_SIZE",
]
