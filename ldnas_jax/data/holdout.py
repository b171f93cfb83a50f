"""Serving "train" and "test" from files that may hold only one split, or from a generator.

When a file gives a single split (e.g. only MNIST's t10k files are at hand), a fixed,
seeded random `test_fraction` of it is held out as "test" and the rest serves as "train".
The two never overlap, and the same seed always holds out the same examples. The embedded
domains draw each split from its own seed instead (:func:`seeded_splits`).
"""

import functools
from collections.abc import Callable

import numpy as np

from ldnas_jax.data.splits import Loader

__all__ = [
    "SPLITS",
    "check_labels_match",
    "check_split",
    "check_test_fraction",
    "hold_out_test",
    "read_only",
    "seeded_splits",
    "split_loader",
]

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


def read_only(pair: Pair) -> Pair:
    """``pair`` with both arrays made read-only: they are cached and shared, so callers
    must copy to modify.

    Example:
      >>> images, labels = read_only((np.zeros((1, 1, 1, 1)), np.zeros(1, int)))
      >>> images.flags.writeable, labels.flags.writeable
      (False, False)
    """
    for array in pair:
        array.flags.writeable = False
    return pair


def check_split(split, *, source: str | None = None) -> None:
    """Raises ValueError unless ``split`` is "train" or "test"; the message names ``source``.

    Example:
      >>> check_split("val", source="zeros")
      Traceback (most recent call last):
      ...
      ValueError: zeros: split must be 'train' or 'test'; got 'val'
    """
    if split not in SPLITS:
        named = f"{source}: " if source else ""
        raise ValueError(f"{named}split must be 'train' or 'test'; got {split!r}")


def seeded_splits(
    *, seeds: dict[str, int], sizes: dict[str, int]
) -> Callable[[Callable[[np.random.Generator, int], Pair]], Callable[[str], Pair]]:
    """Turns ``draw(rng, size)`` into ``generate(split)``, a generated domain's cached splits.

    ``generate(split)`` checks ``split``, then draws ``sizes[split]`` examples with
    ``default_rng(seeds[split])`` once per process; the arrays are :func:`read_only`.
    ``generate.__wrapped__(split)`` draws them anew, past the cache.

    Example:
      >>> @seeded_splits(seeds={"train": 0, "test": 1}, sizes={"train": 3, "test": 2})
      ... def generate(rng, size):
      ...     return rng.random((size, 1, 1, 1)), np.zeros(size, int)
      >>> generate("test")[0].shape, generate("test") is generate("test")
      ((2, 1, 1, 1), True)
    """

    def decorate(draw: Callable[[np.random.Generator, int], Pair]) -> Callable[[str], Pair]:
        @functools.cache
        def generate(split: str) -> Pair:
            check_split(split)
            return read_only(draw(np.random.default_rng(seeds[split]), sizes[split]))

        return generate

    return decorate


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
        lambda: {k: read_only(v) for k, v in read_splits().items()}
    )

    def loader(split: str) -> Pair:
        check_split(split, source=description)
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
