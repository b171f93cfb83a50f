"""Command-line options that point the built-in data sources at local files."""

import argparse
from pathlib import Path

from ldnas_jax.data import idx_source, npz_source, register_source


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--mnist-dir`` and ``--npz-source``: data sources read from local files."""
    parser.add_argument(
        "--mnist-dir",
        default=None,
        metavar="DIR",
        help="read source 'mnist' (tasks T0-T3) from MNIST IDX files in this directory instead "
        "of TFDS: t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], and the "
        "train-* pair if present",
    )
    parser.add_argument(
        "--npz-source",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="register an .npz file as data source NAME, e.g. cifar10=cifar10.npz for "
        "tasks T4-T7 (repeatable)",
    )


def register_sources_from_args(args: argparse.Namespace) -> None:
    """Registers the sources ``--mnist-dir`` and ``--npz-source`` name (no file is written).

    Raises:
      ValueError: a malformed ``--npz-source`` or a directory without MNIST IDX files.
    """
    if getattr(args, "mnist_dir", None):
        register_source("mnist", mnist_idx_loader(Path(args.mnist_dir)), overwrite=True)
    for item in getattr(args, "npz_source", []):
        name, _, path = item.partition("=")
        if not path:
            raise ValueError(f"--npz-source expects NAME=PATH, got {item!r}")
        register_source(name, npz_source(path), overwrite=True)


def mnist_idx_loader(directory: Path):
    """An IDX loader for a directory holding MNIST's train and/or t10k files."""

    def find(prefix, kind):
        hits = sorted(directory.glob(f"{prefix}-{kind}-idx*"))
        return hits[0] if hits else None

    train_images, train_labels = find("train", "images"), find("train", "labels")
    test_images, test_labels = find("t10k", "images"), find("t10k", "labels")
    if train_images and train_labels:
        return idx_source(
            train_images, train_labels, test_images_path=test_images, test_labels_path=test_labels
        )
    if test_images and test_labels:  # only the test set: carve a disjoint test part from it
        return idx_source(test_images, test_labels)
    raise ValueError(f"no MNIST IDX files found in {directory}")
