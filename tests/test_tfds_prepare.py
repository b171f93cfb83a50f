"""TFDS's download-and-prepare path, driven offline as far as it goes (issue 15, item 2).

`load_task("T3")` on a fresh install failed inside TFDS with `No module named
'importlib_resources'`: TFDS imports it to prepare a data set but does not declare it. The
mock-data tests never reach that path. Here MNIST is prepared through `tfds_source` with TFDS's
download manager replaced by one that hands over tiny IDX files written by the test, so no
network is used and every module the prepare path imports before and after the download is
exercised. A missing module fails the test.
"""

import importlib.util
import struct

import numpy as np
import pytest

from ldnas_jax import data
from ldnas_jax.data import tfds_loader

tfds = pytest.importorskip("tensorflow_datasets")

HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None
LABELS = {"train": np.array([3, 1, 4, 1, 5, 9]), "test": np.array([2, 6, 5, 3])}
# Example i's image holds the value 10 * i + 7 in every pixel, so each can be told apart.
IMAGES = {split: np.full((len(y), 28, 28), 10 * np.arange(len(y))[:, None, None] + 7)
          for split, y in LABELS.items()}


def write_raw_idx(path, array: np.ndarray) -> str:
    """Uncompressed IDX, as TFDS's download manager leaves the files after extraction."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    return str(path)


@pytest.fixture
def offline_mnist(tmp_path, monkeypatch):
    """MNIST's builder sees tiny local files instead of a download; returns what it was asked."""
    from tensorflow_datasets.image_classification import mnist

    files = {}
    for split, labels in LABELS.items():
        files[f"{split}_data"] = write_raw_idx(tmp_path / f"{split}-images", IMAGES[split])
        files[f"{split}_labels"] = write_raw_idx(tmp_path / f"{split}-labels", labels)
    requested = []

    def download_and_extract(self, url_or_urls):
        requested.append(sorted(url_or_urls))
        return dict(files)

    def no_network(*args, **kwargs):
        raise AssertionError("the prepare path tried to download")

    # The download hosts count as reachable (tfds_source probes them before downloading).
    monkeypatch.setattr(tfds_loader, "unreachable", lambda hosts, timeout=None: None)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", download_and_extract)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", no_network)
    monkeypatch.setattr(mnist, "_TRAIN_EXAMPLES", len(LABELS["train"]))
    monkeypatch.setattr(mnist, "_TEST_EXAMPLES", len(LABELS["test"]))
    return requested


def test_modules_the_prepare_path_imports_are_installed():
    # TFDS's dataset builder imports these to prepare; TFDS itself does not declare
    # importlib_resources for Python >= 3.9.
    for module in ("importlib_resources", "etils.epath", "array_record.python.array_record_module"):
        assert importlib.util.find_spec(module) is not None, f"{module} is not installed"
    import importlib_resources

    assert importlib_resources.abc.Traversable  # what TFDS's builder reads from it


def test_mnist_prepares_offline_through_tfds_source(tmp_path, offline_mnist):
    loader = data.tfds_source("mnist", data_dir=tmp_path / "tfds", cache=False)
    if HAS_TENSORFLOW:
        for split, written in LABELS.items():
            images, labels = loader(split)  # prepared as ArrayRecord, read back at random
            assert images.shape == (len(written), 32, 32, 3) and images.dtype == np.uint8
            # TFDS shuffles examples when it writes them; each image still has its own label.
            index = (images[:, 0, 0, 0].astype(int) - 7) // 10
            np.testing.assert_array_equal(np.sort(index), np.arange(len(written)))
            np.testing.assert_array_equal(labels, written[index])
    else:
        # Without TensorFlow the path goes as far as TFDS's MNIST builder reading the files
        # (with tf.io.gfile): past the builder, its checksums and the download manager.
        with pytest.raises(RuntimeError, match=r"needs TensorFlow .*ldnas_jax\[prepare\]"):
            loader("train")
    assert offline_mnist and offline_mnist[0] == [
        "test_data", "test_labels", "train_data", "train_labels"
    ], "the prepare path stopped before the download step"


def test_a_missing_module_is_named_with_what_to_install():
    from ldnas_jax.data.tfds_loader import _advice

    missing = ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")
    try:
        raise KeyError("wrapped") from missing
    except KeyError as error:
        advice = _advice(error)
    assert "'importlib_resources' is missing" in advice and "pip install importlib_resources" in advice
    assert "Prepare it there first" in _advice(ValueError("no network"))
