"""A data source reading images and labels from a numpy `.npz` archive."""

import os

import numpy as np

from ldnas_jax.data.holdout import (
    check_labels_match,
    check_test_fraction,
    hold_out_test,
    split_loader,
)
from ldnas_jax.data.images import check_image_options, prepare_images
from ldnas_jax.data.splits import Loader

__all__ = ["npz_source"]


def npz_source(
    path: str | os.PathLike,
    *,
    x_key: str = "x",
    y_key: str = "y",
    x_train_key: str = "x_train",
    y_train_key: str = "y_train",
    x_test_key: str = "x_test",
    y_test_key: str = "y_test",
    test_fraction: float = 0.2,
    split_seed: int = 0,
    image_size: int | None = None,
    channels: int | None = None,
) -> Loader:
    """A data source reading a `.npz` archive.

    The archive holds either both splits, under `x_train`/`y_train`/`x_test`/`y_test` (the
    Keras layout), or one set under `x`/`y`, of which a fixed seeded random `test_fraction`
    (20% by default) is held out as "test" and the rest serves as "train". The key names are
    configurable. Images are (N, H, W) or (N, H, W, C), uint8 in [0, 255] or float in [0, 1];
    labels are integers (N,). By default images are kept at their stored size and channels;
    `image_size` and `channels` resize (bilinear) and tile grey images. The archive is read on
    the first call and cached.

    Args:
      path: the `.npz` file.
      x_key, y_key: keys of the single-set layout.
      x_train_key, y_train_key, x_test_key, y_test_key: keys of the two-split layout, which wins
        when all four are present.
      test_fraction: share held out as "test" in the single-set layout, in (0, 1).
      split_seed: seed of that hold-out.
      image_size: output side length, or None to keep it.
      channels: output channels, or None to keep them.

    Returns:
      A loader `loader(split) -> (images, labels)` for split "train" or "test".

    Example:
      >>> import tempfile, pathlib
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.npz"
      >>> np.savez(path, x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2)
      >>> npz_source(path)("train")[0].shape
      (8, 8, 8, 1)
    """
    check_image_options(image_size, channels)
    check_test_fraction(test_fraction)
    split_keys = (x_train_key, y_train_key, x_test_key, y_test_key)

    def read_splits():
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if set(split_keys) <= keys:
                stored = {
                    "train": (archive[x_train_key], archive[y_train_key]),
                    "test": (archive[x_test_key], archive[y_test_key]),
                }
            elif {x_key, y_key} <= keys:
                stored = {"all": (archive[x_key], archive[y_key])}
            else:
                raise ValueError(
                    f"{path}: expected keys {list(split_keys)} or {[x_key, y_key]}; "
                    f"found {sorted(keys)}"
                )
        for name, (images, labels) in stored.items():
            check_labels_match(images, labels, f"{path} ({name})")
        if "all" in stored:
            stored = hold_out_test(*stored["all"], test_fraction=test_fraction, seed=split_seed)
        return {
            split: (prepare_images(images, image_size=image_size, channels=channels), labels)
            for split, (images, labels) in stored.items()
        }

    return split_loader(read_splits, description=f"npz archive {os.fspath(path)!r}")
