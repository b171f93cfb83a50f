"""Tasks on a subset of a source's classes (issue 16): the examples of the named labels are kept,
the others dropped, in every split and for every kind of source."""

import gzip
import hashlib
import pathlib
import struct

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldnas_jax as ld
from ldnas_jax import data


def row_hashes(x: np.ndarray) -> list[bytes]:
    return [hashlib.sha1(np.ascontiguousarray(row).tobytes()).digest() for row in x]


def distinct_images(n: int, offset: int, shape=(6, 6, 1)) -> np.ndarray:
    """uint8 images that differ from each other: the index is written into the first pixels."""
    images = np.zeros((n,) + shape, np.uint8)
    index = np.arange(n) + offset
    images[:, 0, 0, 0], images[:, 0, 1, 0] = index % 256, index // 256
    return images


def expected_rows(images, labels, groups):
    """The source rows a subset task must keep, and their task labels: a plain loop."""
    rows, targets = [], []
    for image, label in zip(images, labels):
        for k, group in enumerate(groups):
            if int(label) in group:
                rows.append(image)
                targets.append(k)
    return np.stack(rows), np.array(targets)


def assert_keeps_exactly(loaded, loader, groups, *, scale=255.0):
    """train+val hold every kept source-train example once, test every kept source-test one,
    each with its task label; nothing else."""
    for source_split, parts in (("train", (loaded.train, loaded.val)), ("test", (loaded.test,))):
        images, labels = loader(source_split)
        rows, targets = expected_rows(np.asarray(images), np.asarray(labels), groups)
        expected = sorted(zip(row_hashes(rows.astype(np.float32) / scale), targets.tolist()))
        got = sorted(
            pair for part in parts for pair in zip(row_hashes(part.x), part.y.tolist())
        )
        assert got == expected, f"{source_split}: kept examples differ from the source's"


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    """IDX, written independently of the library's reader (uint8 only)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


# ----------------------------------------------------------------------------- every source kind


def test_cat_vs_dog_is_accepted_and_keeps_only_its_two_labels():
    task = data.define_task("cat_vs_dog", "cifar10", [[3], [5]], overwrite=True)
    assert task.num_classes == 2 and not task.rest
    assert task.keeps(np.array([3, 5, 0, 9, 5])).tolist() == [True, True, False, False, True]
    with pytest.raises(TypeError, match="integers"):
        task.keeps(np.array([3.0]))


def test_embedded_subset_keeps_exactly_the_named_labels():
    groups = ((3,), (5,))
    task = data.Task("test_subset_embedded", "embedded_objects", groups)
    loaded = data.load_task(task, val_fraction=0.1, seed=0)
    # 300 train and 100 test objects per class (balanced generator): 2 classes kept.
    assert loaded.sizes == {"train": 540, "val": 60, "test": 200}
    assert loaded.summary() == "test_subset_embedded: 2 classes; train 540, val 60, test 200 examples"
    assert_keeps_exactly(loaded, data.embedded_objects, groups, scale=1.0)


def test_npz_subset_with_both_splits_and_with_one_set(tmp_path):
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 5, 40), rng.integers(0, 5, 30)
    np.savez(
        tmp_path / "both.npz",
        x_train=distinct_images(40, 0),
        y_train=y_train,
        x_test=distinct_images(30, 1000),
        y_test=y_test,
    )
    groups = ((1,), (3, 4))
    task = data.Task("test_subset_npz", "unused", groups)
    loader = data.npz_source(tmp_path / "both.npz")
    loaded = data.load_task(task, source=loader, val_fraction=0.25)
    assert sum(loaded.sizes.values()) == int(np.isin(y_train, [1, 3, 4]).sum()) + int(
        np.isin(y_test, [1, 3, 4]).sum()
    )
    assert_keeps_exactly(loaded, loader, groups)

    np.savez(tmp_path / "one.npz", x=distinct_images(50, 0), y=np.arange(50) % 5)
    single = data.npz_source(tmp_path / "one.npz", test_fraction=0.2)
    loaded = data.load_task(task, source=single, val_fraction=0.25)
    assert_keeps_exactly(loaded, single, groups)


def test_idx_subset(tmp_path):
    labels = {"train": np.arange(60) % 10, "test": (np.arange(20) * 7) % 10}
    for split, offset in (("train", 0), ("test", 5000)):
        write_idx(tmp_path / f"{split}-images", distinct_images(len(labels[split]), offset)[..., 0])
        write_idx(tmp_path / f"{split}-labels", labels[split])
    loader = data.idx_source(
        tmp_path / "train-images",
        tmp_path / "train-labels",
        test_images_path=tmp_path / "test-images",
        test_labels_path=tmp_path / "test-labels",
        image_size=None,
        channels=None,
    )
    groups = ((0, 2), (7,))
    loaded = data.load_task(data.Task("test_subset_idx", "unused", groups), source=loader)
    assert loaded.sizes == {"train": 16, "val": 2, "test": 6}  # 18 of 60 train, 6 of 20 test
    assert_keeps_exactly(loaded, loader, groups)


def test_tfds_subset_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    groups = ((0, 1, 2, 3, 4), (5, 6, 7))  # labels 8 and 9 are left out
    with tfds.testing.mock_data(num_examples=40):
        loader = data.tfds_source("mnist")  # cached: the arrays compared are the ones loaded
        loaded = data.load_task(data.Task("test_subset_tfds", "mnist", groups), source=loader)
        source_train, source_test = loader("train")[1], loader("test")[1]
    assert np.isin(source_train, [8, 9]).any(), "the mock data must hold labels to drop"
    assert loaded.sizes["train"] + loaded.sizes["val"] == int((source_train < 8).sum())
    assert loaded.sizes["test"] == int((source_test < 8).sum())
    assert_keeps_exactly(loaded, loader, groups)


def test_rest_keeps_every_example():
    task = data.Task("test_subset_rest", "unused", ((0,), (1,)), rest=True)
    x, y = distinct_images(30, 0), np.arange(30) % 6
    loaded = data.load_task(task, source=lambda split: (x, y), val_fraction=0.2)
    assert loaded.sizes == {"train": 24, "val": 6, "test": 30}


# ----------------------------------------------------------------------------- balance, seeds, errors


def test_balance_caps_and_seeds_work_on_the_kept_examples():
    task = data.Task("test_subset_balance", "embedded_digits", ((3,), (5, 6)))  # 300 vs 600
    plain = data.load_task(task, seed=0)
    assert np.bincount(plain.train.y).tolist()[0] * 1.5 < np.bincount(plain.train.y)[1]
    balanced = data.load_task(task, balance=True, seed=0)
    for split in (balanced.train, balanced.val):
        counts = np.bincount(split.y, minlength=2)
        assert counts[0] == counts[1] > 0
    assert sum(np.bincount(balanced.train.y)) <= 2 * 300
    capped = data.load_task(task, balance=True, max_train=101, seed=0)
    assert np.bincount(capped.train.y).tolist() == [50, 50]

    again = data.load_task(task, seed=0)
    other = data.load_task(task, seed=1)
    for a, b in zip((plain.train, plain.val, plain.test), (again.train, again.val, again.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(plain.train.x, other.train.x)
    # Val and train are disjoint and together the 900 kept training digits, for either seed.
    for loaded in (plain, other):
        train, val = row_hashes(loaded.train.x), row_hashes(loaded.val.x)
        assert not set(train) & set(val) and len(train) + len(val) == 900


def test_a_subset_with_no_example_is_a_clear_error():
    task = data.Task("test_subset_empty", "unused", ((7,), (8,)))
    x, y = distinct_images(12, 0), np.arange(12) % 3

    with pytest.raises(ValueError, match=r"keeps source labels \[7, 8\], but split 'train' .* \[0, 1, 2\]"):
        data.load_task(task, source=lambda split: (x, y))

    def test_lacks_them(split):
        return (x, y + 6) if split == "train" else (x, y)

    with pytest.raises(ValueError, match="split 'test'"):
        data.load_task(task, source=test_lacks_them)


def test_too_few_kept_examples_to_hold_out_validation():
    task = data.Task("test_subset_tiny", "unused", ((0,), (1,)))
    x, y = distinct_images(10, 0), np.array([0] + [5] * 9)
    with pytest.raises(ValueError, match="1 kept training examples leave none"):
        data.load_task(task, source=lambda split: (x, y))


# ----------------------------------------------------------------------------- end to end


class TinyMLP(nn.Module):
    classes: int = 2

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(4)(x.reshape((x.shape[0], -1))))
        return nn.Dense(self.classes)(x)


def reference_fisher(apply_fn, params, x, y):
    """Mean over examples of squared per-example gradients of log p(y|x), by plain vmap(grad)."""

    def log_likelihood(p, xi, yi):
        return jax.nn.log_softmax(apply_fn(p, xi[None]))[0, yi]

    grads = jax.jit(jax.vmap(jax.grad(log_likelihood), in_axes=(None, 0, 0)))(params, x, y)
    return jax.tree.map(lambda g: np.mean(np.asarray(g, np.float64) ** 2, axis=0), grads)


def test_subset_task_fisher_and_distance_end_to_end():
    groups = ((3,), (5,))
    task = data.define_task("test_subset_three_vs_five", "embedded_digits", groups, overwrite=True)
    loaded = data.load_task("test_subset_three_vs_five", val_fraction=0.0, max_test=40)
    assert loaded.sizes == {"train": 600, "val": 0, "test": 40} and task.num_classes == 2

    model = TinyMLP()
    apply_fn = model.apply
    params_b = model.init(jax.random.key(1), loaded.train.x[:1])
    params_t = model.init(jax.random.key(2), loaded.train.x[:1])
    fisher_t = ld.fisher_diagonal(apply_fn, params_t, (loaded.train.x, loaded.train.y))
    fisher_b = ld.fisher_diagonal(apply_fn, params_b, (loaded.train.x, loaded.train.y))

    # The same Fisher from the source's own rows of digits 3 and 5, picked by hand: a mean is
    # order-free, so this holds exactly when load_task kept exactly those examples.
    images, labels = data.embedded_digits("train")
    x, y = expected_rows(np.asarray(images), np.asarray(labels), groups)
    expected_t = reference_fisher(apply_fn, params_t, jnp.asarray(x), jnp.asarray(y, jnp.int32))
    for got, want in zip(jax.tree.leaves(fisher_t), jax.tree.leaves(expected_t)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=1e-9)

    d = ld.log_det_distance(fisher_b, fisher_t)
    assert isinstance(d, float) and np.isfinite(d) and d > 0
    assert ld.log_det_distance(fisher_t, fisher_t) == 0.0
    # The test split is part of the task too: its labels are the two task classes only.
    assert set(loaded.test.y.tolist()) <= {0, 1}
