"""Checkpoint and resume of the library calls: stopped part-way and resumed, a run ends as
an unbroken one.

These tests stop a run by raising from the checkpoint writer right after a save,
which leaves on disk exactly what a kill at that moment would. The demo, killed
with SIGKILL in a subprocess and resumed, is tested in ``test_demo.py``, where it
shares the unbroken reference run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _small_models import MLP, ConvBN
from _toy_tasks import fuse_config, random_search_config, rbg_key, search_options, stripes

from ldnas_jax import nas
from ldnas_jax import resumable as resumable_module
from ldnas_jax._checks import NonFiniteError
from ldnas_jax.checkpoint import (
    CheckpointError,
    latest_step_checkpoint,
    load_checkpoint,
    save_step_checkpoint,
)
from ldnas_jax.nas import search as search_module
from ldnas_jax.train import train_classifier


class Interrupted(Exception):
    """Stands for a kill right after a checkpoint was written."""


def stop_after_save(monkeypatch, at_step):
    """Makes the resumable loop's checkpoint writer raise once step ``at_step`` is on disk."""

    def save(directory, step, tree, metadata=None, **kw):
        path = save_step_checkpoint(directory, step, tree, metadata, **kw)
        if step == at_step:
            raise Interrupted(path)
        return path

    monkeypatch.setattr(resumable_module, "save_step_checkpoint", save)


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_step_checkpoints_skip_a_killed_save_and_keep_the_newest(tmp_path):
    for step in range(3):
        save_step_checkpoint(tmp_path, step, {"w": np.full(2, float(step))}, {"step": step})
    # A save killed before its meta.json: never loaded, removed by the next save.
    (tmp_path / "step_00000003" / "state").mkdir(parents=True)
    assert latest_step_checkpoint(tmp_path).name == "step_00000002"
    tree, meta = load_checkpoint(latest_step_checkpoint(tmp_path))
    assert meta == {"step": 2} and tree["w"].tolist() == [2.0, 2.0]
    save_step_checkpoint(tmp_path, 4, {"w": np.zeros(2)}, {"step": 4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000002", "step_00000004"]


# --- train_classifier ------------------------------------------------------------------

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 8, 8, 3)).astype(np.float32)
Y = RNG.integers(0, 3, 48).astype(np.int32)
TRAIN_ARGS = {"key": jax.random.key(0), "batch_size": 16, "learning_rate": 1e-2, "progress": False}


def test_train_classifier_resumed_equals_unbroken(tmp_path, monkeypatch):
    # Reference: no checkpoints at all, so checkpointing must not change the result either.
    unbroken = train_classifier(ConvBN(), (X, Y), epochs=5, **TRAIN_ARGS)
    run = tmp_path / "train"
    stop_after_save(monkeypatch, at_step=2)
    with pytest.raises(Interrupted):
        train_classifier(
            ConvBN(), (X, Y), epochs=5, checkpoint_dir=run, checkpoint_every=2, **TRAIN_ARGS
        )
    assert latest_step_checkpoint(run).name == "step_00000002"
    monkeypatch.undo()
    resumed = train_classifier(
        ConvBN(),
        (X, Y),
        epochs=5,
        checkpoint_dir=run,
        checkpoint_every=2,
        resume=True,
        **TRAIN_ARGS,
    )
    assert_trees_equal(resumed.variables, unbroken.variables)  # params and batch_stats
    assert resumed.history == unbroken.history
    # Saved at epochs 4 and 5 (the last); the newest two are kept.
    assert sorted(p.name for p in run.iterdir()) == ["step_00000004", "step_00000005"]
    # A finished run resumes to its stored result without training.
    again = train_classifier(
        ConvBN(), (X, Y), epochs=5, checkpoint_dir=run, resume=True, **TRAIN_ARGS
    )
    assert_trees_equal(again.variables, unbroken.variables)


def nan_updates_from(step):
    """An Optax transformation that passes updates through, then makes them NaN from ``step``."""

    def update(updates, count, params=None):
        factor = jnp.where(count >= step, jnp.nan, 1.0)
        return jax.tree.map(lambda u: u * factor, updates), count + 1

    return optax.GradientTransformation(lambda params: jnp.zeros((), jnp.int32), update)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    # 48 examples / 16 = 3 steps per epoch; update 5 (0-based 4, epoch 2 step 2) is NaN,
    # so the loss of epoch 2 step 3 is the first NaN one.
    optimizer = optax.chain(optax.adam(1e-2), nan_updates_from(4))
    args = dict(TRAIN_ARGS, optimizer=optimizer)
    run = tmp_path / "train"
    with pytest.raises(NonFiniteError, match=r"epoch 2, step 3 of 3") as err:
        train_classifier(ConvBN(), (X, Y), epochs=3, checkpoint_dir=run, **args)
    kept = latest_step_checkpoint(run)
    assert kept.name == "step_00000001" and str(kept) in str(err.value)
    # The kept checkpoint is the one-epoch state, which never saw a NaN update.
    one_epoch = train_classifier(ConvBN(), (X, Y), epochs=1, **args)
    tree, meta = load_checkpoint(kept)
    assert meta["history"] == one_epoch.history
    assert_trees_equal(tree["params"], one_epoch.variables["params"])


def test_train_checkpoint_of_another_model_or_run_is_refused(tmp_path):
    run = tmp_path / "train"
    train_classifier(MLP(), (X, Y), epochs=1, checkpoint_dir=run, **TRAIN_ARGS)
    with pytest.raises(CheckpointError, match="pass resume=True"):
        train_classifier(MLP(), (X, Y), epochs=1, checkpoint_dir=run, **TRAIN_ARGS)
    with pytest.raises(CheckpointError, match="does not match|different tree structure"):
        train_classifier(ConvBN(), (X, Y), epochs=1, checkpoint_dir=run, resume=True, **TRAIN_ARGS)
    other_key = dict(TRAIN_ARGS, key=jax.random.key(1))
    with pytest.raises(CheckpointError, match="different run.*key"):
        train_classifier(MLP(), (X, Y), epochs=1, checkpoint_dir=run, resume=True, **other_key)


# --- fuse_search -----------------------------------------------------------------------


SPACE = nas.SearchSpace(("identity", "sep_conv_3x3", "conv_7x1_1x7"), num_nodes=2)
SEARCH_ARGS = search_options(
    fuse_config(max_rounds=1, steps_per_round=2),
    key=rbg_key(0),  # rbg: threefry's per-shape compile is slow on CPU
    num_candidates=1,
    max_iterations=2,
)
S_TRAIN, S_VAL = stripes(0, 64), stripes(1, 32)


@pytest.fixture(scope="module")
def unbroken_search():
    return nas.fuse_search(SPACE, S_TRAIN, S_VAL, **SEARCH_ARGS)


def test_fuse_search_resumed_equals_unbroken(unbroken_search, tmp_path, monkeypatch):
    run = tmp_path / "search"
    stop_after_save(monkeypatch, at_step=1)
    with pytest.raises(Interrupted):
        nas.fuse_search(SPACE, S_TRAIN, S_VAL, checkpoint_dir=run, **SEARCH_ARGS)
    monkeypatch.undo()
    resumed = nas.fuse_search(SPACE, S_TRAIN, S_VAL, checkpoint_dir=run, resume=True, **SEARCH_ARGS)
    assert resumed.genotype == unbroken_search.genotype
    assert resumed.history == unbroken_search.history  # candidates, α, winners: all equal
    assert resumed.iterations_run == 2
    assert latest_step_checkpoint(run).name == "step_00000002"

    # Mismatched or corrupt checkpoints are refused with a clear error, never reused.
    with pytest.raises(CheckpointError, match="pass resume=True"):
        nas.fuse_search(SPACE, S_TRAIN, S_VAL, checkpoint_dir=run, **SEARCH_ARGS)
    other_key = dict(SEARCH_ARGS, key=jax.random.key(1, impl="rbg"))
    with pytest.raises(CheckpointError, match="different run.*key"):
        nas.fuse_search(SPACE, S_TRAIN, S_VAL, checkpoint_dir=run, resume=True, **other_key)
    other_space = nas.SearchSpace(("identity", "sep_conv_3x3"), num_nodes=2)
    with pytest.raises(CheckpointError, match="different run.*space"):
        nas.fuse_search(other_space, S_TRAIN, S_VAL, checkpoint_dir=run, resume=True, **SEARCH_ARGS)
    other_config = dict(SEARCH_ARGS, config=SEARCH_ARGS["config"]._replace(steps_per_round=3))
    with pytest.raises(CheckpointError, match="different run.*fuse_options.*steps_per_round"):
        nas.fuse_search(SPACE, S_TRAIN, S_VAL, checkpoint_dir=run, resume=True, **other_config)
    (latest_step_checkpoint(run) / "meta.json").write_text("{half a file")
    with pytest.raises(CheckpointError, match="corrupt"):
        nas.fuse_search(SPACE, S_TRAIN, S_VAL, checkpoint_dir=run, resume=True, **SEARCH_ARGS)


def test_random_search_resumed_equals_unbroken(tmp_path, monkeypatch):
    config = random_search_config(num_samples=3, train_steps=2)
    args = search_options(config, key=rbg_key(2))
    unbroken = nas.random_search(SPACE, S_TRAIN, S_VAL, **args)
    run = tmp_path / "random"
    stop_after_save(monkeypatch, at_step=2)
    with pytest.raises(Interrupted):
        nas.random_search(SPACE, S_TRAIN, S_VAL, checkpoint_dir=run, **args)
    monkeypatch.undo()
    trained = []  # only the sample after the checkpoint is trained again
    real = search_module.make_train_and_evaluate
    monkeypatch.setattr(
        search_module,
        "make_train_and_evaluate",
        lambda *a: trained.append(1) or real(*a),
    )
    resumed = nas.random_search(SPACE, S_TRAIN, S_VAL, checkpoint_dir=run, resume=True, **args)
    assert len(trained) == 1
    assert resumed.genotype == unbroken.genotype
    assert resumed.history == unbroken.history  # genotypes and validation accuracies, in order
    assert latest_step_checkpoint(run).name == "step_00000003"
    with pytest.raises(CheckpointError, match="different run.*num_samples"):
        nas.random_search(
            SPACE,
            S_TRAIN,
            S_VAL,
            checkpoint_dir=run,
            resume=True,
            **dict(args, config=config._replace(num_samples=4)),
        )


def test_nan_in_fuse_search_names_the_iteration_and_keeps_the_checkpoint(
    unbroken_search, tmp_path, monkeypatch
):
    # fuse_search runs each iteration's FUSE through fuse_on_checked (its data checked once).
    real_run_fuse, results = search_module.fuse_on_checked, []

    def poisoned(*args, **kwargs):
        if results:  # second iteration: the first run's outcome with a NaN training loss
            nan = np.full_like(results[0].train_loss_history, np.nan)
            return results[0]._replace(train_loss_history=nan)
        results.append(real_run_fuse(*args, **kwargs))
        return results[0]

    monkeypatch.setattr(search_module, "fuse_on_checked", poisoned)
    run = tmp_path / "search"
    with pytest.raises(
        NonFiniteError, match="iteration 2: training loss became nan in round 1"
    ) as err:
        nas.fuse_search(SPACE, S_TRAIN, S_VAL, checkpoint_dir=run, **SEARCH_ARGS)
    kept = latest_step_checkpoint(run)
    assert kept.name == "step_00000001" and str(kept) in str(err.value)
    # The kept checkpoint holds the first iteration exactly as the unbroken search ran it.
    tree, meta = load_checkpoint(kept)
    assert meta["history"] == unbroken_search.history[:1]
    # ...and the PRNG key the second iteration splits: the third part of the first split.
    next_key = jax.random.split(SEARCH_ARGS["key"], 3)[2]
    np.testing.assert_array_equal(tree["key"], jax.random.key_data(next_key))
    assert nas.Genotype.from_json(meta["best"]) == nas.Genotype.from_json(
        unbroken_search.history[0]["winner"]
    )
