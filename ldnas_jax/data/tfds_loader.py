"""A data source over TensorFlow Datasets' `tfds.data_source`, which reads without TensorFlow."""

import contextlib
import functools
import logging
import shutil
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from ldnas_jax.data.images import check_image_options, prepare_images
from ldnas_jax.data.splits import Loader

__all__ = ["DataSourceError", "tfds_source"]

# Seconds the download hosts get to accept a connection before a data set counts as
# unreachable. TFDS itself retries a dead host for about 3.5 minutes (urllib3 backoff).
PROBE_TIMEOUT_S = 3.0
# TFDS may fetch a prepared copy from its own bucket before trying the data set's URLs.
_TFDS_MIRROR_URL = "https://storage.googleapis.com/tfds-data/"

# Local files that can stand in for a TFDS data set, on the command line and in Python.
_LOCAL_FILES_HINT = {
    "mnist": (
        "Read MNIST's IDX files instead: `--mnist-dir DIR` on the command line (DIR holding "
        "t10k-images-idx3-ubyte[.gz] and its labels, train-* too if you have them), or "
        "register_source('mnist', idx_source(images, labels), overwrite=True) in Python."
    ),
    "cifar10": (
        "Read CIFAR-10 from an .npz archive (x_train, y_train, x_test, y_test) instead: "
        "`--npz-source cifar10=PATH` on the command line, or "
        "register_source('cifar10', npz_source(PATH), overwrite=True) in Python."
    ),
}


class DataSourceError(RuntimeError):
    """A data source cannot deliver its data; the one-line message says why and what to do.

    Raised for a TFDS data set that is neither prepared nor downloadable (no network), or
    that TFDS cannot read or prepare (a missing module, a broken data directory).
    """


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


def download_hosts(urls) -> list[tuple[str, int]]:
    """The (host, port) pairs a download of `urls` connects to first, proxies included.

    An http(s) URL's own host, or the proxy configured for its scheme (HTTPS_PROXY, ...)
    unless NO_PROXY exempts the host; other schemes (local paths, gs://) are skipped.

    Example:
      >>> download_hosts(["https://example.org/a.gz", "http://example.org:8080/b", "/tmp/c"])
      [('example.org', 443), ('example.org', 8080)]
    """
    proxies = urllib.request.getproxies()
    hosts = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname):
            parts = urllib.parse.urlsplit(proxies[parts.scheme])
        host = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        if host[0] and host not in hosts:
            hosts.append(host)
    return hosts


def unreachable(hosts, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if any of `hosts` accepts a TCP connection within `timeout` s, else why none did.

    The hosts are tried at once, each in a daemon thread, so a resolver or a host that never
    answers costs `timeout` seconds in all, not one retry schedule per host.

    Example:
      >>> unreachable([])
      'no download host is known'
    """
    if not hosts:
        return "no download host is known"
    outcomes = {}  # host -> None (it answered) or why not

    def attempt(host):
        # A daemon thread may outlive the call: nothing it meets may escape as an unhandled
        # thread exception (a patched or half-torn-down socket module included).
        try:
            connection = socket.create_connection(host, timeout=timeout)
            if connection is not None:
                connection.close()
            outcomes[host] = None
        except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
            outcomes[host] = str(error) or type(error).__name__

    threads = [threading.Thread(target=attempt, args=(host,), daemon=True) for host in hosts]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(outcomes.get(host, "") is None for host in hosts):
        return None
    host, port = hosts[0]
    return f"{host}:{port}: {outcomes.get(hosts[0]) or f'no answer within {timeout:g} s'}"


@contextlib.contextmanager
def _removing_partial_downloads(downloads: Path):
    """On failure, removes the `*.tmp.*` folders a download left under `downloads`."""

    def partial():
        return set(downloads.glob("**/*.tmp.*")) if downloads.is_dir() else set()

    before = partial()
    try:
        yield
    except BaseException:
        for path in sorted(partial() - before, reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _quiet_absl():
    """Holds back TFDS's (absl's) warnings while the block runs; errors still show."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def _offline_message(name: str, where, reason: str) -> str:
    return " ".join([
        f"TFDS data set {name!r} is not prepared in {where} and cannot be downloaded:",
        f"{reason} (no network?).",
        *([_LOCAL_FILES_HINT[name]] if name in _LOCAL_FILES_HINT else []),
        f"Or prepare it where there is a network (tfds.builder({name!r}).download_and_prepare())",
        "and pass that data directory.",
    ])


def _open_tfds(tfds, name: str, split: str, data_dir, download: bool):
    """`tfds.data_source` of one split, downloading only after a fast reachability check.

    A prepared data set is read without touching the network. Otherwise, when `download`
    allows it, the download hosts must answer within PROBE_TIMEOUT_S, or a DataSourceError
    says so at once; a download that fails later leaves no partial files behind.
    """

    def open_split(download_now: bool):
        # Random access needs ArrayRecord files; TFDS picks that format itself only when
        # no data_dir is given, and would otherwise prepare TFRecord files it cannot read.
        return tfds.data_source(
            name,
            split=split,
            data_dir=data_dir,
            download=download_now,
            builder_kwargs={"file_format": "array_record"},
        )

    try:
        with _quiet_absl():  # TFDS warns about the folder it is about to find missing
            return open_split(False)
    except Exception:  # pylint: disable=broad-except  (not prepared, or prepared elsewise)
        if not download:
            raise
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    if builder.url_infos:  # a builder without recorded URLs is left to TFDS
        urls = [*builder.url_infos, _TFDS_MIRROR_URL]
        reason = unreachable(download_hosts(urls))
        if reason is not None:
            raise DataSourceError(_offline_message(name, builder.data_dir_root, reason))
    with _removing_partial_downloads(Path(builder.data_dir_root) / "downloads"):
        return open_split(True)


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
    or, with `download`, TFDS downloads and prepares it. Before downloading, the download hosts
    must accept a connection within PROBE_TIMEOUT_S seconds, so that without a network the
    call fails at once instead of after TFDS's minutes of retries; a failed download leaves no
    partial files. Failures raise a DataSourceError (a RuntimeError) naming the data set and
    what to do, for MNIST and CIFAR-10 how to read local files instead. Reading needs no
    TensorFlow, but TFDS's MNIST and CIFAR-10
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
      string such as "train[:10%]". The loader raises DataSourceError when the data set can be
      neither read nor downloaded.

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
            data_source = _open_tfds(tfds, name, split, data_dir, download)
        except DataSourceError:
            raise
        except Exception as error:  # TFDS raises many kinds (KeyError, ImportError, network errors)
            raise DataSourceError(
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
