"""Tests of ldnas_jax.data: tasks, sources, splits, batching and the embedded domains."""

import gzip
import hashlib
import pathlib
import struct

import numpy as np
import pytest

from ldnas_jax import data
from ldnas_jax.data import digits as digits_module
from ldnas_jax.data import objects as objects_module

MNIST_T10K = pathlib.Path("/work/shared/data/mnist-t10k")

# Expected task label of each source label 0..9, written out by hand from DESIGN.md §4.
EXPECTED_MAPS = {
    0: [0, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # digit 0 vs rest
    1: [1, 1, 1, 1, 1, 1, 0, 1, 1, 1],  # digit 6 vs rest
    2: [1, 0, 1, 0, 1, 0, 1, 0, 1, 0],  # odd (class 0) vs even (class 1)
    3: list(range(10)),  # all 10 digits
    4: [1, 0, 1, 0, 1, 1, 1, 1, 0, 1],  # {automobile=1, cat=3, ship=8} vs rest
    5: [1, 1, 1, 0, 1, 1, 1, 1, 0, 0],  # {cat=3, ship=8, truck=9} vs rest
    6: [3, 3, 0, 3, 3, 3, 1, 2, 3, 3],  # bird=2, frog=6, horse=7, other
    7: list(range(10)),  # all 10 classes
}
EXPECTED_CLASSES = {0: 2, 1: 2, 2: 2, 3: 10, 4: 2, 5: 2, 6: 4, 7: 10}


def row_hashes(x: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(np.ascontiguousarray(row).tobytes()).digest() for row in x}


def toy_loader(n_train=60, n_test=20, classes=3, shape=(4, 4, 1)):
    """A source whose every image is distinct (its index written in), labels cycling 0..classes-1."""

    def loader(split):
        n, offset = (n_train, 0) if split == "train" else (n_test, 10_000)
        images = (np.arange(n)[:, None, None, None] + offset) * np.ones((1,) + shape)
        return images.astype(np.float32) / (offset + n), np.arange(n) % classes

    return loader


def write_idx(path: pathlib.Path, array: np.ndarray, *, compress: bool) -> None:
    """Writes `array` in IDX format, independently of the library's reader."""
    codes = {
        np.dtype(np.uint8): 0x08,
        np.dtype(np.int8): 0x09,
        np.dtype(np.int16): 0x0B,
        np.dtype(np.int32): 0x0C,
        np.dtype(np.float32): 0x0D,
        np.dtype(np.float64): 0x0E,
    }
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


# ----------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("index", range(8))
def test_paper_and_embedded_task_label_maps(index):
    paper, embedded = data.PAPER_TASKS[index], data.EMBEDDED_TASKS[index]
    assert (paper.name, embedded.name) == (f"T{index}", f"E{index}")
    assert paper.source == ("mnist" if index < 4 else "cifar10")
    assert embedded.source == ("embedded_digits" if index < 4 else "embedded_objects")
    for task in (paper, embedded):
        assert task.num_classes == EXPECTED_CLASSES[index]
        mapped = task.map_labels(np.arange(10))
        assert mapped.dtype == np.int32
        assert mapped.tolist() == EXPECTED_MAPS[index]
        assert data.get_task(task.name) is task
    assert embedded.groups == paper.groups and embedded.rest == paper.rest


def test_paper_tasks_are_registered_in_order():
    names = data.list_tasks()
    assert names[:16] == [f"T{i}" for i in range(8)] + [f"E{i}" for i in range(8)]


def test_t6_has_four_classes_including_other():
    t6 = data.get_task("T6")
    assert t6.groups == ((2,), (6,), (7,)) and t6.rest
    assert t6.map_labels(np.array([2, 6, 7, 0, 9])).tolist() == [0, 1, 2, 3, 3]


def test_define_task_in_a_few_lines_and_load_it():
    task = data.define_task(
        "test_low_vs_high",
        "embedded_digits",
        [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]],
        description="digits 0-4 vs 5-9",
        overwrite=True,
    )
    assert task.groups == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)) and task.num_classes == 2
    loaded = data.load_task("test_low_vs_high", max_train=100, max_test=50)
    _, source_labels = data.embedded_digits("train")
    assert set(loaded.train.y.tolist()) == {0, 1}
    assert loaded.name == "test_low_vs_high" and loaded.num_classes == 2
    assert source_labels.size == data.DIGITS_TRAIN_SIZE


def test_define_task_rejects_duplicate_names_unless_overwrite():
    data.define_task("test_duplicate", "embedded_digits", [[0]], rest=True, overwrite=True)
    with pytest.raises(ValueError, match="already defined"):
        data.define_task("test_duplicate", "embedded_digits", [[1]], rest=True)
    replaced = data.define_task(
        "test_duplicate", "embedded_digits", [[1]], rest=True, overwrite=True
    )
    assert data.get_task("test_duplicate") is replaced


def test_unknown_task_and_source_errors_name_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'nope'; known: T0, T1"):
        data.get_task("nope")
    with pytest.raises(ValueError, match=r"unknown source 'nope'; known: .*embedded_digits"):
        data.get_source("nope")
    with pytest.raises(ValueError, match="unknown source"):
        data.load_task(data.Task("test_bad_source", "nope", ((0,),), rest=True))


@pytest.mark.parametrize(
    "groups, rest, error, match",
    [
        (((0, 1), (1, 2)), False, ValueError, "overlap: source label 1"),
        (((0, 0),), True, ValueError, "overlap: source label 0"),
        ((), True, ValueError, "groups is empty"),
        (((0,), ()), False, ValueError, r"groups\[1\] is empty"),
        (((0,),), False, ValueError, "single class"),
        (((-1,), (2,)), False, ValueError, "non-negative"),
        (((0.5,), (2,)), False, TypeError, "integers"),
        ("01", False, TypeError, "sequence"),
    ],
)
def test_invalid_groups_raise(groups, rest, error, match):
    with pytest.raises(error, match=match):
        data.Task("test_invalid", "embedded_digits", groups, rest=rest)


def test_map_labels_rejects_unlisted_labels_without_rest_and_non_integers():
    task = data.Task("test_strict", "embedded_digits", ((0,), (1,)))
    assert task.map_labels(np.array([1, 0, 1])).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match=r"source labels \[5, 7\] are in no group"):
        task.map_labels(np.array([0, 5, 7, 5]))
    with pytest.raises(TypeError, match="integers"):
        task.map_labels(np.array([0.0, 1.0]))


# ----------------------------------------------------------------------------- load_task


def test_splits_are_disjoint_and_val_comes_from_the_source_train_split():
    loaded = data.load_task("E3", val_fraction=0.1, seed=0)
    train, val, test = (row_hashes(split.x) for split in (loaded.train, loaded.val, loaded.test))
    assert len(loaded.val.y) == 300 and len(loaded.train.y) == 2700 and len(loaded.test.y) == 1000
    assert not train & val and not train & test and not val & test
    source_train = row_hashes(data.embedded_digits("train")[0])
    assert val <= source_train and train <= source_train


def test_load_task_outputs_float_images_in_unit_range_and_int_labels():
    loaded = data.load_task("E6", max_train=200, max_test=100)
    for split in (loaded.train, loaded.val, loaded.test):
        assert split.x.dtype == np.float32 and split.x.shape[1:] == (32, 32, 3)
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        assert split.y.dtype == np.int32 and split.y.min() >= 0 and split.y.max() < 4
    assert loaded.num_classes == 4


def test_uint8_sources_are_scaled_to_unit_range():
    def loader(split):
        return np.full((10, 2, 2, 1), 255, np.uint8), np.arange(10) % 2

    loaded = data.load_task(
        data.Task("test_uint8", "unused", ((0,), (1,))), source=loader, val_fraction=0.2
    )
    assert loaded.train.x.dtype == np.float32 and np.all(loaded.train.x == 1.0)


def test_same_seed_same_data_and_different_seeds_differ():
    first = data.load_task("E4", seed=3, max_train=300)
    again = data.load_task("E4", seed=3, max_train=300)
    other = data.load_task("E4", seed=4, max_train=300)
    for a, b in zip(first[2:], again[2:]):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(first.train.x, other.train.x)
    assert not np.array_equal(first.test.y, other.test.y)


def test_balance_equalises_train_and_val_class_counts():
    unbalanced = data.load_task("E0")  # digit 0 vs rest: about 1 in 10 is class 0
    assert np.bincount(unbalanced.train.y)[0] * 5 < np.bincount(unbalanced.train.y)[1]
    balanced = data.load_task("E0", balance=True, seed=1)
    for split in (balanced.train, balanced.val):
        counts = np.bincount(split.y, minlength=2)
        assert counts[0] == counts[1] > 0
    assert len(balanced.test.y) == data.DIGITS_TEST_SIZE  # test keeps its natural distribution


def test_balance_with_a_cap_stays_exactly_balanced():
    loaded = data.load_task("E6", balance=True, max_train=101)
    assert np.bincount(loaded.train.y).tolist() == [25, 25, 25, 25]


def test_caps_keep_every_class_and_scale_val():
    loaded = data.load_task("E7", max_train=450, max_test=120, val_fraction=0.1)
    assert len(loaded.train.y) == 450 and len(loaded.test.y) == 120 and len(loaded.val.y) == 50
    assert set(loaded.train.y.tolist()) == set(range(10))
    assert np.bincount(loaded.train.y).min() >= 25  # shuffled before capping: no class starved


def test_zero_val_fraction_gives_an_empty_val_split():
    loaded = data.load_task(
        data.Task("test_toy", "unused", ((0,), (1,), (2,))), source=toy_loader(), val_fraction=0.0
    )
    assert loaded.val.x.shape == (0, 4, 4, 1) and len(loaded.train.y) == 60


def test_source_override_accepts_a_registered_name():
    data.register_source("test_toy_source", toy_loader(), overwrite=True)
    task = data.Task("test_toy_named", "embedded_digits", ((0,), (1,), (2,)))
    loaded = data.load_task(task, source="test_toy_source", val_fraction=0.25)
    assert len(loaded.train.y) == 45 and len(loaded.val.y) == 15 and len(loaded.test.y) == 20


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(val_fraction=1.0), ValueError, "val_fraction"),
        (dict(val_fraction=-0.1), ValueError, "val_fraction"),
        (dict(max_train=0), ValueError, "max_train"),
        (dict(max_test=2.5), TypeError, "max_test"),
        (dict(seed=-1), TypeError, "seed"),
        (dict(source=3), TypeError, "source"),
    ],
)
def test_load_task_rejects_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        data.load_task("E0", **kwargs)


def test_load_task_rejects_bad_sources():
    task = data.Task("test_three", "unused", ((0,), (1,), (2,)))
    with pytest.raises(ValueError, match="empty"):
        data.load_task(task, source=lambda split: (np.zeros((0, 4, 4, 1)), np.zeros(0, int)))
    with pytest.raises(ValueError, match=r"keeps source labels \[0, 1, 2\], but split 'train'"):
        data.load_task(task, source=lambda split: (np.zeros((4, 4, 4, 1)), np.full(4, 5)))
    with pytest.raises(ValueError, match="images but"):
        data.load_task(task, source=lambda split: (np.zeros((5, 4, 4, 1)), np.zeros(4, int)))
    with pytest.raises(TypeError, match="pair"):
        data.load_task(task, source=lambda split: np.zeros((5, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        data.load_task(task, source=lambda split: (np.full((9, 4, 4, 1), 2.0), np.arange(9) % 3))
    with pytest.raises(TypeError, match="Task or a task name"):
        data.load_task(7)


# ----------------------------------------------------------------------------- batching


def test_iterate_batches_covers_every_example_once_with_a_ragged_last_batch():
    x, y = np.arange(10)[:, None] * np.ones((1, 3)), np.arange(10)
    batches = list(data.iterate_batches(x, y, 4, seed=0))
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    seen = np.concatenate([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb)  # x and y stay paired
    again = np.concatenate([yb for _, yb in data.iterate_batches(x, y, 4, seed=0)])
    np.testing.assert_array_equal(seen, again)
    in_order = np.concatenate([yb for _, yb in data.iterate_batches(x, y, 4)])
    assert in_order.tolist() == list(range(10))
    assert [len(yb) for _, yb in data.iterate_batches(x, y, 4, drop_remainder=True)] == [4, 4]


@pytest.mark.parametrize(
    "x, y, batch_size, error",
    [
        (np.zeros((4, 2)), np.zeros(4), 0, ValueError),
        (np.zeros((4, 2)), np.zeros(3), 2, ValueError),
        (np.zeros((0, 2)), np.zeros(0), 2, ValueError),
        (np.zeros((4, 2)), np.zeros(4), 2.0, TypeError),
    ],
)
def test_iterate_batches_rejects_bad_input_when_called(x, y, batch_size, error):
    with pytest.raises(error):
        data.iterate_batches(x, y, batch_size)  # raises before any batch is drawn


# ----------------------------------------------------------------------------- embedded domains


@pytest.mark.parametrize("name", ["embedded_digits", "embedded_objects"])
def test_embedded_domains_shapes_ranges_and_balance(name):
    loader = data.get_source(name)
    for split, n in (("train", 3000), ("test", 1000)):
        x, y = loader(split)
        assert x.shape == (n, 32, 32, 3) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.05
        assert np.bincount(y, minlength=10).tolist() == [n // 10] * 10
        assert not x.flags.writeable  # the per-process cache cannot be corrupted
    train, test = loader("train")[0], loader("test")[0]
    assert not row_hashes(train) & row_hashes(test)


@pytest.mark.parametrize("module", [digits_module, objects_module])
def test_embedded_generation_is_deterministic(module):
    fresh_x, fresh_y = module._generate.__wrapped__("test")  # bypass the cache: regenerate
    cached_x, cached_y = module._generate("test")
    np.testing.assert_array_equal(fresh_x, cached_x)
    np.testing.assert_array_equal(fresh_y, cached_y)


def test_embedded_digits_are_grey_on_black_and_objects_are_coloured():
    digits, _ = data.embedded_digits("test")
    assert np.array_equal(digits[..., 0], digits[..., 2])
    assert np.median(digits) < 0.15  # mostly black background
    objects, _ = data.embedded_objects("test")
    assert np.abs(objects[..., 0] - objects[..., 1]).mean() > 0.1


@pytest.mark.parametrize("loader", [data.embedded_digits, data.embedded_objects])
def test_embedded_classes_differ_on_average(loader):
    x, y = loader("train")
    means = np.stack([x[y == k].mean(axis=0).ravel() for k in range(10)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distances[~np.eye(10, dtype=bool)].min() > 0.1
    with pytest.raises(ValueError, match="split"):
        loader("validation")


# ----------------------------------------------------------------------------- sources


def test_register_source_rules():
    def loader(split):
        return np.zeros((2, 4, 4, 1)), np.zeros(2, int)

    data.register_source("test_registered", loader, overwrite=True)
    assert data.get_source("test_registered") is loader
    builtins = {"mnist", "cifar10", "embedded_digits", "embedded_objects"}
    assert builtins | {"test_registered"} <= set(data.list_sources())
    with pytest.raises(ValueError, match="already registered"):
        data.register_source("test_registered", loader)
    with pytest.raises(ValueError, match="already registered"):
        data.register_source("mnist", loader)
    with pytest.raises(TypeError, match="callable"):
        data.register_source("test_not_callable", 42)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_roundtrip(tmp_path, compress):
    rng = np.random.default_rng(0)
    arrays = {
        "images": rng.integers(0, 256, (7, 5, 6), dtype=np.uint8),
        "labels": rng.integers(0, 10, 7).astype(np.uint8),
        "ints": rng.integers(-1000, 1000, (3, 2)).astype(np.int32),
        "floats": rng.random((2, 3, 4)).astype(np.float32),
    }
    for name, array in arrays.items():
        path = tmp_path / f"{name}.idx"
        write_idx(path, array, compress=compress)
        read = data.read_idx(path)
        assert read.dtype == array.dtype and read.dtype.isnative
        np.testing.assert_array_equal(read, array)


def test_idx_rejects_malformed_files(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(bytes([1, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes(3))
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(path)
    path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 3) + bytes(3))
    with pytest.raises(ValueError, match="dtype code 0x07"):
        data.read_idx(path)
    path.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 4) + bytes(3))
    with pytest.raises(ValueError, match="declares shape"):
        data.read_idx(path)


def test_idx_source_with_both_splits_resizes_and_tiles(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 12), ("test", 5)):
        write_idx(
            tmp_path / f"{split}-images",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            compress=True,
        )
        write_idx(
            tmp_path / f"{split}-labels", rng.integers(0, 10, n).astype(np.uint8), compress=False
        )
    loader = data.idx_source(
        tmp_path / "train-images",
        tmp_path / "train-labels",
        test_images_path=tmp_path / "test-images",
        test_labels_path=tmp_path / "test-labels",
    )
    x, y = loader("test")
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (5,)
    assert np.array_equal(x[..., 0], x[..., 1])
    loaded = data.load_task("T3", source=loader, val_fraction=0.25)
    assert loaded.train.x.shape == (9, 32, 32, 3) and loaded.train.x.dtype == np.float32
    with pytest.raises(ValueError, match="both"):
        data.idx_source("a", "b", test_images_path="c")


def test_idx_source_with_one_pair_holds_out_a_fixed_disjoint_test_part(tmp_path):
    images = np.arange(50, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    write_idx(tmp_path / "images.gz", images, compress=True)
    write_idx(tmp_path / "labels.gz", (np.arange(50) % 10).astype(np.uint8), compress=True)
    loader = data.idx_source(
        tmp_path / "images.gz",
        tmp_path / "labels.gz",
        image_size=None,
        channels=None,
        test_fraction=0.2,
    )
    (x_train, _y_train), (x_test, y_test) = loader("train"), loader("test")
    assert x_train.shape == (40, 4, 4, 1) and x_test.shape == (10, 4, 4, 1)
    ids_train, ids_test = set(x_train[:, 0, 0, 0].tolist()), set(x_test[:, 0, 0, 0].tolist())
    assert not ids_train & ids_test and ids_train | ids_test == set(range(50))
    np.testing.assert_array_equal(y_test, x_test[:, 0, 0, 0] % 10)  # labels stay with their images
    again = data.idx_source(
        tmp_path / "images.gz", tmp_path / "labels.gz", image_size=None, channels=None
    )
    np.testing.assert_array_equal(again("test")[0], x_test)
    with pytest.raises(ValueError, match="test_fraction"):
        data.idx_source(tmp_path / "images.gz", tmp_path / "labels.gz", test_fraction=1.0)
    with pytest.raises(ValueError, match="split"):
        loader("val")


@pytest.mark.skipif(not MNIST_T10K.exists(), reason="real MNIST t10k files are not on this machine")
def test_idx_source_reads_the_real_mnist_t10k_files():
    images = data.read_idx(MNIST_T10K / "t10k-images-idx3-ubyte.gz")
    labels = data.read_idx(MNIST_T10K / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    loader = data.idx_source(
        MNIST_T10K / "t10k-images-idx3-ubyte.gz", MNIST_T10K / "t10k-labels-idx1-ubyte.gz"
    )
    loaded = data.load_task("T2", source=loader, max_train=500, max_test=200)
    assert loaded.train.x.shape == (500, 32, 32, 3) and loaded.test.x.shape == (200, 32, 32, 3)
    assert 0.0 <= loaded.train.x.min() and loaded.train.x.max() <= 1.0


def test_npz_roundtrip_with_both_splits(tmp_path):
    rng = np.random.default_rng(2)
    arrays = dict(
        x_train=rng.integers(0, 256, (8, 6, 6, 3), dtype=np.uint8),
        y_train=np.arange(8) % 2,
        x_test=rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8),
        y_test=np.arange(4) % 2,
    )
    np.savez(tmp_path / "both.npz", **arrays)
    loader = data.npz_source(tmp_path / "both.npz")
    for split in ("train", "test"):
        x, y = loader(split)
        np.testing.assert_array_equal(x, arrays[f"x_{split}"])
        np.testing.assert_array_equal(y, arrays[f"y_{split}"])
    assert data.npz_source(tmp_path / "both.npz", image_size=12)("test")[0].shape == (4, 12, 12, 3)


def test_npz_single_set_is_carved_and_custom_keys_work(tmp_path):
    x = np.linspace(0.0, 1.0, 20, dtype=np.float32)[:, None, None] * np.ones((1, 3, 3), np.float32)
    np.savez(tmp_path / "single.npz", pixels=x, targets=np.arange(20) % 4)
    loader = data.npz_source(
        tmp_path / "single.npz", x_key="pixels", y_key="targets", test_fraction=0.25
    )
    (x_train, _), (x_test, _) = loader("train"), loader("test")
    assert x_train.shape == (15, 3, 3, 1) and x_test.shape == (5, 3, 3, 1)
    assert not row_hashes(x_train) & row_hashes(x_test)
    with pytest.raises(ValueError, match="expected keys"):
        data.npz_source(tmp_path / "single.npz")("train")


def test_tfds_mnist_offline_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        loader = data.tfds_source("mnist", cache=False)
        images, labels = loader("train")
        assert (
            images.shape == (12, 32, 32, 3) and images.dtype == np.uint8 and labels.shape == (12,)
        )
        loaded = data.load_task("T3", source=loader, val_fraction=0.25)
    for split in (loaded.train, loaded.val, loaded.test):
        assert split.x.shape[1:] == (32, 32, 3) and split.x.dtype == np.float32
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
    assert len(loaded.train.y) == 9 and len(loaded.val.y) == 3


def test_tfds_cifar10_offline_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        loaded = data.load_task(
            "T6", source=data.tfds_source("cifar10", cache=False), val_fraction=0.2
        )
    assert loaded.num_classes == 4 and loaded.train.x.shape == (8, 32, 32, 3)
    assert (
        loaded.train.x.dtype == np.float32
        and 0.0 <= loaded.train.x.min()
        and loaded.train.x.max() <= 1.0
    )
    assert loaded.test.y.max() < 4


def test_tfds_source_rejects_bad_options():
    with pytest.raises(ValueError, match="image_size"):
        data.tfds_source("mnist", image_size=0)
    with pytest.raises(TypeError, match="channels"):
        data.tfds_source("mnist", channels="3")


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    "shape, size",
    [
        ((2, 28, 28, 1), 32),  # MNIST-like upsampling
        ((2, 32, 32, 3), 12),  # shrinking: antialiased
        ((1, 9, 13, 2), (5, 20)),  # non-square, mixed
    ],
)
def test_resize_matches_jax_bilinear(shape, size):
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(3).random(shape, dtype=np.float32)
    height, width = (size, size) if isinstance(size, int) else size
    expected = np.asarray(jax.image.resize(x, (shape[0], height, width, shape[3]), "bilinear"))
    np.testing.assert_allclose(data.resize_images(x, size), expected, atol=1e-5)


def test_resize_keeps_uint8_and_its_range():
    x = np.random.default_rng(4).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    resized = data.resize_images(x, 32)
    assert resized.dtype == np.uint8 and resized.shape == (3, 32, 32, 1)
    assert abs(float(resized.mean()) - float(x.mean())) < 2.0
