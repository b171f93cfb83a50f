"""Orbax checkpoints with JSON metadata: round trip, and what is refused rather than cast."""

import numpy as np
import pytest

from ldnas_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    tree = {"params": {"w": np.arange(6.0).reshape(2, 3)}, "stats": {"m": np.ones(2)}}
    save_checkpoint(tmp_path / "c", tree, {"step": 7})
    restored, meta = load_checkpoint(tmp_path / "c", like=tree)
    np.testing.assert_array_equal(restored["params"]["w"], tree["params"]["w"])
    assert meta == {"step": 7}
    with pytest.raises(CheckpointError, match="does not match|shape"):
        load_checkpoint(
            tmp_path / "c", like={"params": {"w": np.zeros((2, 4))}, "stats": {"m": np.ones(2)}}
        )
    with pytest.raises(CheckpointError, match="meta.json missing"):
        load_checkpoint(tmp_path / "absent")
    (tmp_path / "c" / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "c")


def test_checkpoint_stored_as_another_dtype_is_refused_not_cast(tmp_path):
    tree = {"w": np.array([0.25, 1.5, -2.75], np.float32), "n": np.arange(2, dtype=np.int32)}
    save_checkpoint(tmp_path / "c", tree)
    restored, _ = load_checkpoint(tmp_path / "c", like=tree)
    assert restored["w"].dtype == np.float32
    np.testing.assert_array_equal(restored["w"], tree["w"])  # fractions survive: no cast
    for like in (
        {"w": np.zeros(3, np.int8), "n": tree["n"]},
        {"w": tree["w"], "n": np.zeros(2, np.float32)},
    ):
        with pytest.raises(CheckpointError, match=r"dtype (float32|int32) .* expected dtype"):
            load_checkpoint(tmp_path / "c", like=like)
    with pytest.raises(CheckpointError, match="different tree structure"):
        load_checkpoint(tmp_path / "c", like={"w": tree["w"], "m": tree["n"]})
