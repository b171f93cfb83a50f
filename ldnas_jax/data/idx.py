"""MNIST's IDX file format, read without any dependency, and a data source built on it.

An IDX file is: two zero bytes, a dtype code, the number of dimensions d, then d big-endian
uint32 sizes, then the values in big-endian C order. Files may be gzip-compressed.
"""

import gzip
import os
import struct

import numpy as np

from ldnas_jax.data.holdout import (
    check_labels_match,
    check_test_fraction,
    hold_out_test,
    split_loader,
)
from ldnas_jax.data.images import check_image_options, prepare_images
from ldnas_jax.data.splits import Loader

__all__ = ["read_idx", "idx_source"]

# IDX dtype codes -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path) -> bytes:
    with open(path, "rb") as file:
        data = file.read()
    # Decide by content, not by name: ".gz" files are sometimes stored decompressed.
    return gzip.decompress(data) if data[:2] == _GZIP_MAGIC else data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (plain or gzip-compressed) into a numpy array in native byte order.

    Args:
      path: the file, e.g. "t10k-images-idx3-ubyte.gz".

    Returns:
      The array, with the shape and dtype the header declares (MNIST images: uint8 (N, 28, 28)).

    Raises:
      ValueError: for a malformed header or a size that does not match the header.

    Example:
      >>> import tempfile, pathlib
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.idx"
      >>> _ = path.write_bytes(bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([7, 1, 4]))
      >>> read_idx(path).tolist()
      [7, 1, 4]
    """
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (the first two bytes must be zero)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: unknown IDX dtype code 0x{code:02x}; known: "
            + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_size != expected:
        raise ValueError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(data) - header_size}"
        )
    values = np.frombuffer(data, dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _read_pair(images_path, labels_path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim not in (3, 4):
        raise ValueError(
            f"{images_path}: expected images of shape (N, H, W) or (N, H, W, C); got {images.shape}"
        )
    check_labels_match(images, labels, f"{images_path} / {labels_path}")
    return images, labels.astype(np.int64)


def idx_source(
    images_path,
    labels_path,
    *,
    test_images_path=None,
    test_labels_path=None,
    image_size: int | None = 32,
    channels: int | None = 3,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> Loader:
    """A data source reading MNIST-style IDX files (plain or gzip).

    With both pairs of files, `images_path`/`labels_path` serve "train" and the test paths serve
    "test". With only one pair (for example only MNIST's t10k files), a fixed seeded random
    `test_fraction` of it (20% by default) serves "test" and the rest "train"; the two are
    disjoint and the same `split_seed` always picks the same examples.

    Images are resized to `image_size` x `image_size` (bilinear) and grey images tiled to
    `channels`, as the paper does for MNIST; pass None to keep either as stored. Files are read
    on the first call and cached.

    Args:
      images_path: IDX images, shape (N, H, W) or (N, H, W, C).
      labels_path: IDX labels, shape (N,).
      test_images_path: optional IDX test images.
      test_labels_path: optional IDX test labels (give both test paths or neither).
      image_size: output side length, or None.
      channels: output channels, or None.
      test_fraction: share held out as "test" when no test files are given, in (0, 1).
      split_seed: seed of that hold-out.

    Returns:
      A loader `loader(split) -> (images, labels)` for split "train" or "test".

    Example:
      Ten 28x28 grey images and their labels, as MNIST's t10k files hold 10,000:

      >>> import tempfile, pathlib
      >>> folder = pathlib.Path(tempfile.mkdtemp())
      >>> header = lambda *shape: bytes([0, 0, 0x08, len(shape)]) + b"".join(
      ...     n.to_bytes(4, "big") for n in shape)
      >>> _ = (folder / "images").write_bytes(header(10, 28, 28) + bytes(10 * 28 * 28))
      >>> _ = (folder / "labels").write_bytes(header(10) + bytes(range(10)))
      >>> loader = idx_source(folder / "images", folder / "labels")
      >>> loader("train")[0].shape, loader("test")[0].shape
      ((8, 32, 32, 3), (2, 32, 32, 3))
    """
    if (test_images_path is None) != (test_labels_path is None):
        raise ValueError("give both test_images_path and test_labels_path, or neither")
    check_image_options(image_size, channels)
    check_test_fraction(test_fraction)

    def read_splits():
        if test_images_path is None:
            images, labels = _read_pair(images_path, labels_path)
            parts = hold_out_test(images, labels, test_fraction=test_fraction, seed=split_seed)
        else:
            parts = {
                "train": _read_pair(images_path, labels_path),
                "test": _read_pair(test_images_path, test_labels_path),
            }
        return {
            split: (prepare_images(x, image_size=image_size, channels=channels), y)
            for split, (x, y) in parts.items()
        }

    return split_loader(read_splits, description=f"IDX files {os.fspath(images_path)!r}")
