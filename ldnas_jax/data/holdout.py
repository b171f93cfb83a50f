"""Serving "train" and "test" from files that may hold only one split.

When a file gives a single split (e.g. only MNIST's t10k files are at hand), a fixed,
seeded random `test_fraction` of it is held out as "test" and the rest serves as "train".
The two never overlap, and the same seed always holds out the same examples.
"""

import functools
from collections.abc import Callable

import numpy as np

from ldnas_jax.data.splits import Loader

__all__ = ["hold_out_test", "split_loader", "check_test_fraction", "check_labels_match", "SPLITS"]

Pair = tuple[np.ndarray, np.ndarray]
SPLITS = ("train", "test")


def hold_out_test(
    images: np.ndarray, labels: np.ndarray, *, test_fraction: float, seed: int = 0
) -> dict[str, Pair]:
    """Splits one (images, labels) pair into disjoint "train" and "test" parts.

    A seeded random `test_fraction` of the examples (rounded, at least one) becomes "test";
    both parts keep the file's order.

    Example:
      >>> parts = hold_out_test(np.zeros((10, 2, 2, 1)), np.arange(10), test_fraction=0.2)
      >>> len(parts["train"][1]), len(parts["test"][1])
      (8, 2)
    """
    check_test_fraction(test_fraction)
    n = len(labels)
    if n < 2:
        raise ValueError(f"need at least 2 examples to hold out a test split; got {n}")
    n_test = min(max(1, int(round(test_fraction * n))), n - 1)
    is_test = np.zeros(n, bool)
    is_test[np.random.default_rng(seed).permutation(n)[:n_test]] = True
    return {
        "train": (images[~is_test], labels[~is_test]),
        "test": (images[is_test], labels[is_test]),
    }


def check_test_fraction(test_fraction) -> None:
    """Raises unless 0 < test_fraction < 1."""
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0.0 < test_fraction < 1.0
    ):
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction!r}")


def _freeze(pair: Pair) -> Pair:
    for array in pair:
        array.flags.writeable = False  # cached and shared: callers must copy to modify
    return pair


def split_loader(read_splits: Callable[[], dict[str, Pair]], *, description: str) -> Loader:
    """Wraps a function reading {"train": pair, "test": pair} into a cached source loader.

    The files are read on the first call only; the arrays served are read-only.

    Example:
      >>> loader = split_loader(lambda: {"train": (np.zeros((2, 1, 1, 1)), np.zeros(2, int)),
      ...                                "test": (np.zeros((1, 1, 1, 1)), np.zeros(1, int))},
      ...                       description="zeros")
      >>> loader("test")[0].shape
      (1, 1, 1, 1)
    """
    read_once = functools.lru_cache(maxsize=1)(
        lambda: {k: _freeze(v) for k, v in read_splits().items()}
    )

    def loader(split: str) -> Pair:
        if split not in SPLITS:
            raise ValueError(f"{description}: split must be 'train' or 'test'; got {split!r}")
        return read_once()[split]

    loader.__doc__ = f"Source loader for {description}: loader(split) -> (images, labels)."
    return loader


def check_labels_match(images: np.ndarray, labels: np.ndarray, what: str) -> None:
    """Raises unless `labels` is 1-D, integer and as long as `images`."""
    if labels.ndim != 1:
        raise ValueError(f"{what}: labels must be 1-D; got shape {labels.shape}")
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{what}: labels must be integers; got dtype {labels.dtype}")
    if len(images) != len(labels):
        raise ValueError(f"{what}: {len(images)} images but {len(labels)} labels")
