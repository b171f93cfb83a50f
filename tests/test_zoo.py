"""The baseline zoo: resumed inside an ε-network's training, its index, its task names.

Only the resume test trains, a tiny network for two epochs of two steps; the other checks
fire before any training.
"""

import functools
import json

import jax
import numpy as np
import pytest
from _tiny_runs import stand_in_for_the_architecture_search
from _toy_tasks import stripes_task

from ldnas_jax import resumable as resumable_module
from ldnas_jax import zoo as zoo_module
from ldnas_jax.checkpoint import CheckpointError, latest_step_checkpoint, save_step_checkpoint
from ldnas_jax.models import SmallVGG, registry
from ldnas_jax.zoo import build_zoo, load_zoo


class Interrupted(Exception):
    """Stands for a kill right after a checkpoint was written."""


def test_zoo_build_interrupted_inside_training_resumes_to_the_unbroken_zoo(tmp_path, monkeypatch):
    # The architecture search is not what resumes here (and would double the runtime): a
    # fixed genotype stands in for it, so only the ε-network's training is under test.
    stand_in_for_the_architecture_search(monkeypatch)
    # A one-stage VGG compiles in a fraction of small_vgg's time; it goes by name, as a zoo's does.
    monkeypatch.setitem(
        registry._BUILDERS, "one_stage_vgg", functools.partial(SmallVGG, features=(4,), hidden=0)
    )
    data = [stripes_task("A")]
    args = {
        "model_name": "one_stage_vgg",
        "key": jax.random.key(0, impl="rbg"),  # rbg: fast to compile on CPU
        "epochs": 2,
        "progress": False,
    }
    unbroken = build_zoo(data, **args)["A"]

    def save_then_stop(directory, step, tree, metadata=None, **kw):
        path = save_step_checkpoint(directory, step, tree, metadata, **kw)
        if step == 1:
            raise Interrupted(path)  # what a kill after epoch 1's checkpoint leaves
        return path

    monkeypatch.setattr(resumable_module, "save_step_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        build_zoo(data, directory=tmp_path, **args)
    assert latest_step_checkpoint(tmp_path / "A" / "training").name == "step_00000001"
    assert not (tmp_path / "A" / "meta.json").exists()
    monkeypatch.setattr(resumable_module, "save_step_checkpoint", save_step_checkpoint)

    restored_epochs = []
    real_resume_from = resumable_module.resume_from

    def spy(*a, **kw):
        restored = real_resume_from(*a, **kw)
        restored_epochs.append(None if restored is None else len(restored[1]["history"]))
        return restored

    monkeypatch.setattr(resumable_module, "resume_from", spy)
    resumed = build_zoo(data, directory=tmp_path, **args)["A"]
    assert restored_epochs == [1]  # continued after epoch 1, did not start over
    assert resumed.network.test_accuracy == unbroken.network.test_accuracy
    # The finished entry replaces its epoch checkpoints, and the zoo reloads as built.
    assert not (tmp_path / "A" / "training").exists()
    reloaded = load_zoo(tmp_path)["A"].network.variables
    for variables in (resumed.network.variables, reloaded):
        assert jax.tree.structure(variables) == jax.tree.structure(unbroken.network.variables)
        for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(unbroken.network.variables)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "text", ["{not json", json.dumps({"names": ["A"]}), json.dumps({"tasks": 3}), "[1, 2]"]
)
def test_corrupt_zoo_index_is_a_checkpoint_error(tmp_path, text):
    (tmp_path / "zoo.json").write_text(text)
    with pytest.raises(CheckpointError, match="zoo index .* is corrupt"):
        load_zoo(tmp_path)


def test_build_zoo_refuses_duplicate_task_names_before_training(monkeypatch):
    def no_training(*a, **kw):
        raise AssertionError("trained before checking the task names")

    monkeypatch.setattr(zoo_module, "train_task_network", no_training)
    tasks = [stripes_task("A", n=4), stripes_task("B", n=4), stripes_task("A", n=4, seed=1)]
    with pytest.raises(ValueError, match=r"distinct.*\['A'\]"):
        build_zoo(tasks, key=jax.random.key(0), progress=False)
