"""Follow-ups of issue 6: a zoo build resumed inside an ε-network's training, and the
validation gaps an audit found (checkpoint dtypes, zoo index, evaluate/train inputs, the
pipeline's options, the NAS keys).

Only the zoo test trains, a tiny network for two epochs of two steps; every other check
fires before any training.
"""

import functools
import json

import jax
import numpy as np
import pytest
from _small_models import MLP

from ldnas_jax import nas
from ldnas_jax import pipeline as pipeline_module
from ldnas_jax import train as train_module
from ldnas_jax import zoo as zoo_module
from ldnas_jax._checks import NonFiniteError
from ldnas_jax.checkpoint import (
    CheckpointError,
    latest_step_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_step_checkpoint,
)
from ldnas_jax.data import Split, TaskData
from ldnas_jax.models import SmallVGG, registry
from ldnas_jax.pipeline import (
    DistanceOptions,
    full_space_fuse_baseline,
    random_search_baseline,
    search_architecture,
)
from ldnas_jax.train import evaluate, init_variables, is_epsilon_approximation, train_classifier
from ldnas_jax.zoo import build_zoo, load_zoo


def stripes_task(name, n=32, size=8, seed=0):
    """Horizontal (0) vs vertical (1) noisy stripes, the same arrays in every split."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int32)
    rows = (np.arange(size)[None, :] + rng.integers(0, 2, n)[:, None]) % 2
    horizontal = np.repeat(rows[:, :, None], size, axis=2)
    x = np.where(y[:, None, None] == 0, horizontal, horizontal.transpose(0, 2, 1))
    x = (x[..., None].repeat(3, axis=-1) + 0.1 * rng.normal(size=(n, size, size, 3))).astype(
        np.float32
    )
    split = Split(x, y)
    return TaskData(name, 2, split, split, split)


class Interrupted(Exception):
    """Stands for a kill right after a checkpoint was written."""


# ------------------------------------------------------------------- zoo resume


def test_zoo_build_interrupted_inside_training_resumes_to_the_unbroken_zoo(tmp_path, monkeypatch):
    # The architecture search is not what resumes here (and would double the runtime): a
    # fixed genotype stands in for it, so only the ε-network's training is under test.
    space = nas.SearchSpace(("identity", "sep_conv_3x3"), num_nodes=2, shared_cells=True)
    genotype = space.sample(jax.random.key(0), 1)[0]
    monkeypatch.setattr(
        zoo_module,
        "find_task_architecture",
        lambda *a, **kw: (genotype, nas.search_space_from_genotype(genotype), 0.5),
    )
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

    monkeypatch.setattr(train_module, "save_step_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        build_zoo(data, directory=tmp_path, **args)
    assert latest_step_checkpoint(tmp_path / "A" / "training").name == "step_00000001"
    assert not (tmp_path / "A" / "meta.json").exists()
    monkeypatch.setattr(train_module, "save_step_checkpoint", save_step_checkpoint)

    restored_epochs = []
    real_resume_from = train_module.resume_from

    def spy(*a, **kw):
        restored = real_resume_from(*a, **kw)
        restored_epochs.append(None if restored is None else restored[1]["epoch"])
        return restored

    monkeypatch.setattr(train_module, "resume_from", spy)
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


# ------------------------------------------------------------------- checkpoint dtypes


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


# ------------------------------------------------------------------- zoo index


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


# ------------------------------------------------------------------- evaluate / train

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 2, 3, 2)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2], np.int32)  # MLP has 3 logits


@pytest.fixture(scope="module")
def mlp_variables():
    return init_variables(MLP(), jax.random.key(0), X)


def test_evaluate_matches_a_numpy_reference_and_refuses_bad_input(mlp_variables):
    logits = np.asarray(MLP().apply(mlp_variables, X), np.float64)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    got = evaluate(MLP(), mlp_variables, (X, Y), batch_size=4)  # two batches, one ragged
    assert got["accuracy"] == np.mean(logits.argmax(1) == Y)
    np.testing.assert_allclose(got["loss"], -log_p[np.arange(6), Y].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), found range \[0, 3\]"):
        evaluate(MLP(), mlp_variables, (X, np.array([0, 1, 2, 3, 1, 0])))
    for bad, error in ((0, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="batch_size"):
            evaluate(MLP(), mlp_variables, (X, Y), batch_size=bad)
    nan = jax.tree.map(lambda a: a * np.nan, mlp_variables)
    with pytest.raises(NonFiniteError, match="variables contains NaN"):
        evaluate(MLP(), nan, (X, Y))


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"train": (X, np.array([0, 1, 2, 3, 1, 0]))}, ValueError, r"labels must lie in \[0, 3\)"),
        ({"train": (X[..., 0], Y)}, ValueError, r"NHWC.*ndim 4.*\(6, 2, 3\)"),
        ({"epochs": 1.5}, TypeError, "epochs must be an int"),
        ({"epochs": 0}, ValueError, "epochs must be >= 1"),
        ({"key": 0}, TypeError, "key must be a JAX PRNG key"),
        ("nan_variables", NonFiniteError, "initial variables contains NaN"),
    ],
)
def test_train_classifier_refuses_bad_input_before_training(
    mlp_variables, monkeypatch, changes, error, match
):
    def no_step(*a, **kw):
        raise AssertionError("compiled a train step before checking the input")

    monkeypatch.setattr(train_module, "_train_step", no_step)
    args = {
        "train": (X, Y),
        "key": jax.random.key(0),
        "epochs": 1,
        "batch_size": 2,
        "progress": False,
    }
    if changes == "nan_variables":
        changes = {"variables": jax.tree.map(lambda a: a * np.nan, mlp_variables)}
    with pytest.raises(error, match=match):
        train_classifier(MLP(), **{**args, **changes})


def test_init_variables_needs_a_batch_and_a_key():
    with pytest.raises(ValueError, match=r"non-empty batch.*\(0, 2, 3, 2\)"):
        init_variables(MLP(), jax.random.key(0), X[:0])
    with pytest.raises(TypeError, match="PRNG key"):
        init_variables(MLP(), 0, X)


@pytest.mark.parametrize("accuracy", [-0.1, 1.5, float("nan")])
def test_epsilon_approximation_needs_an_accuracy_in_the_unit_interval(accuracy):
    assert is_epsilon_approximation(0.9, 0.1) and not is_epsilon_approximation(0.89, 0.1)
    with pytest.raises(ValueError, match=r"accuracy must lie in \[0, 1\]"):
        is_epsilon_approximation(accuracy, 0.1)


# ------------------------------------------------------------------- pipeline


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"distance": DistanceOptions(sigma=0.0)}, ValueError, "sigma must be a finite number"),
        ({"distance": DistanceOptions(sigma=float("nan"))}, ValueError, "sigma"),
        ({"distance": DistanceOptions(sigma="1")}, TypeError, "sigma must be a real number"),
        ({"distance": DistanceOptions(normalize="l2")}, ValueError, "unknown normalize"),
        ({"distance": DistanceOptions(estimator="fast")}, ValueError, "unknown estimator"),
        ({"distance": DistanceOptions(label_mode="drop")}, ValueError, "unknown label_mode"),
        ({"distances": {"B": float("nan")}}, NonFiniteError, r"distances\['B'\] is nan"),
        ({"distances": {"B": -1.0}}, ValueError, "distance is >= 0"),
        ({"distances": {"C": 1.0}}, ValueError, "exactly the zoo's tasks"),
    ],
)
def test_search_architecture_checks_options_before_training_the_target(
    monkeypatch, kwargs, error, match
):
    def no_training(*a, **kw):
        raise AssertionError("trained N_t before checking the options")

    monkeypatch.setattr(pipeline_module, "train_or_load_task_network", no_training)
    zoo = {"B": None}  # never reached: every check fires first
    with pytest.raises(error, match=match):
        search_architecture(stripes_task("T", n=4), zoo, key=jax.random.key(0), **kwargs)


@pytest.mark.parametrize(
    "run", [search_architecture, random_search_baseline, full_space_fuse_baseline]
)
def test_pipeline_targets_must_be_task_data(run):
    task = stripes_task("T", n=4)
    args = (task.train, {"B": None}) if run is search_architecture else (task.train,)
    with pytest.raises(TypeError, match="target must be a TaskData.*got Split"):
        run(*args, key=jax.random.key(0))


# ------------------------------------------------------------------- NAS keys


def test_nas_searches_and_sampling_check_the_key_first():
    space = nas.SearchSpace(("identity", "sep_conv_3x3"), num_nodes=2)
    task = stripes_task("T", n=8)
    data = (task.train.x, task.train.y)
    # Reference: a real key works and draws genotypes of the space.
    assert all(g in space for g in space.sample(jax.random.key(0), 2))
    for bad in (0, np.zeros(2, np.float32), jax.random.split(jax.random.key(0), 2)):
        with pytest.raises((TypeError, ValueError), match="key must be"):
            space.sample(bad, 2)
        with pytest.raises((TypeError, ValueError), match="key must be"):
            nas.fuse_search(space, data, data, key=bad, num_classes=2, progress=False)
        with pytest.raises((TypeError, ValueError), match="key must be"):
            nas.random_search(space, data, data, key=bad, num_classes=2, progress=False)
