"""A data source over TensorFlow Datasets' `tfds.data_source`, which reads without TensorFlow."""

import functools

import numpy as np

from ldnas_jax.data.images import check_image_options, prepare_images
from ldnas_jax.data.splits import Loader

__all__ = ["tfds_source"]


def _stack(
    data_source, image_key: str, label_key: str, description: str
) -> tuple[np.ndarray, np.ndarray]:
    """Reads every example of a random-access TFDS data source into two arrays."""
    n = len(data_source)
    if n == 0:
        raise ValueError(f"{description} is empty")
    first = data_source[0]
    missing = [key for key in (image_key, label_key) if key not in first]
    if missing:
        raise ValueError(
            f"{description}: examples have no {missing} feature; features: {sorted(first)}"
        )
    image = np.asarray(first[image_key])
    images = np.empty((n,) + image.shape, image.dtype)
    labels = np.empty(n, np.int64)
    for i in range(n):
        example = first if i == 0 else data_source[i]
        images[i] = example[image_key]
        labels[i] = example[label_key]
    return images, labels


# What to do when preparing a data set meets a missing module.
_MISSING_MODULE_ADVICE = {
    "tensorflow": (
        "TFDS needs TensorFlow to prepare this data set (its builder reads the downloaded "
        "files and encodes the images with it); reading a prepared one does not. Install it "
        "with `pip install \"ldnas_jax[prepare]\"` (Colab has it already), or prepare the data "
        "set on a machine that has it and pass its data_dir, or read local files with "
        "idx_source / npz_source."
    ),
}


def _missing_module(error: BaseException) -> str | None:
    """The name of the top-level module whose import failed somewhere in `error`'s chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ModuleNotFoundError) and error.name:
            return error.name.split(".")[0]
        error = error.__cause__ or error.__context__
    return None


def _advice(error: BaseException) -> str:
    """One hint for a failed TFDS read, naming what to install when a module is missing.

    Example:
      >>> _advice(ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow"))[:40]
      'TFDS needs TensorFlow to prepare this da'
    """
    module = _missing_module(error)
    if module in _MISSING_MODULE_ADVICE:
        return _MISSING_MODULE_ADVICE[module]
    if module is not None:
        return (
            f"Python module {module!r} is missing: `pip install {module}`, or reinstall "
            "ldnas_jax, which declares what TFDS needs."
        )
    return (
        "Prepare it there first (tfds.builder(name).download_and_prepare() on a machine with "
        "network access), or use an embedded or local-file source."
    )


def tfds_source(
    name: str,
    *,
    image_size: int | None = 32,
    channels: int | None = 3,
    data_dir=None,
    image_key: str = "image",
    label_key: str = "label",
    download: bool = True,
    cache: bool = True,
) -> Loader:
    """A data source reading a TFDS data set through `tfds.data_source` (no TensorFlow needed).

    The data set must already be prepared in `data_dir` (TFDS's default directory when None),
    or, with `download`, TFDS downloads and prepares it; failures raise a RuntimeError naming
    the data set and what to do. Reading needs no TensorFlow, but TFDS's MNIST and CIFAR-10
    builders use it to prepare: install the `prepare` extra (`pip install "ldnas_jax[prepare]"`)
    on the machine that prepares them. Images are resized to `image_size` x `image_size`
    (bilinear, uint8 kept as rounded uint8) and grey images tiled to `channels`, so MNIST's
    28x28x1 becomes 32x32x3 as in the paper; None keeps either as stored. TensorFlow Datasets
    is imported on the first call only.

    Args:
      name: TFDS name, e.g. "mnist", "cifar10", "fashion_mnist".
      image_size: output side length, or None.
      channels: output channels, or None.
      data_dir: TFDS data directory, or None for TFDS's default.
      image_key: feature holding the image.
      label_key: feature holding the integer label.
      download: let TFDS download and prepare a missing data set.
      cache: keep each split in memory after its first read (read-only arrays).

    Returns:
      A loader `loader(split) -> (images, labels)`; split is "train", "test", or any TFDS split
      string such as "train[:10%]".

    Example:
      >>> import tensorflow_datasets as tfds
      >>> with tfds.testing.mock_data(num_examples=4):
      ...   images, labels = tfds_source("mnist", cache=False)("test")
      >>> images.shape, images.dtype.name
      ((4, 32, 32, 3), 'uint8')
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty TFDS data set name; got {name!r}")
    check_image_options(image_size, channels)

    def loader(split: str) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(split, str):
            raise TypeError(f"split must be a str; got {type(split).__name__}")
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, only when used)

        try:
            # Random access needs ArrayRecord files; TFDS picks that format itself only when
            # no data_dir is given, and would otherwise prepare TFRecord files it cannot read.
            data_source = tfds.data_source(
                name,
                split=split,
                data_dir=data_dir,
                download=download,
                builder_kwargs={"file_format": "array_record"},
            )
        except Exception as error:  # TFDS raises many kinds (KeyError, ImportError, network errors)
            raise RuntimeError(
                f"could not read TFDS data set {name!r}, split {split!r}, from data_dir={data_dir!r}: "
                f"{error!r}. {_advice(error)}"
            ) from error
        images, labels = _stack(data_source, image_key, label_key, f"TFDS {name!r} split {split!r}")
        return prepare_images(images, image_size=image_size, channels=channels), labels

    if not cache:
        return loader

    @functools.lru_cache(maxsize=None)
    def cached_loader(split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = loader(split)
        images.flags.writeable = False  # shared by every caller: copy to modify
        labels.flags.writeable = False
        return images, labels

    return cached_loader
