"""Algorithm 1 end to end and its checks, zoo persistence, the distances command: tiny sizes."""

import json

import jax
import numpy as np
import pytest
from _tiny_runs import tiny_architecture_search, tiny_budget
from _toy_tasks import stripes_task

import ldnas_jax as ld
from ldnas_jax import pipeline as pipeline_module
from ldnas_jax import zoo as zoo_module
from ldnas_jax._checks import NonFiniteError
from ldnas_jax.checkpoint import CheckpointError
from ldnas_jax.cli import main
from ldnas_jax.data import load_task
from ldnas_jax.distances import mean_log_det, pair_reference
from ldnas_jax.experiments import _reproduce as reproduce_module
from ldnas_jax.pipeline import (
    DistanceOptions,
    full_space_fuse_baseline,
    random_search_baseline,
    search_architecture,
)
from ldnas_jax.tasks import fisher_on_task, load_task_network, save_task_network
from ldnas_jax.zoo import ArchitectureOptions, build_zoo, load_zoo

# Three operations, one a convolution: the zoo's search compiles a small program.
TINY_ARCH = ArchitectureOptions(
    search=tiny_architecture_search(num_samples=1, train_steps=2),
    operations=("identity", "max_pool_3x3", "sep_conv_3x3"),
)
TINY_BUDGET = tiny_budget(steps_per_round=2, final_batch_size=16)


def _tiny(name):
    return load_task(name, max_train=90, max_test=32)


def _build_tiny_zoo(directory):
    return build_zoo(
        [_tiny("E0"), _tiny("E7")],
        key=jax.random.key(0),
        epochs=1,
        architecture=TINY_ARCH,
        directory=directory,
        progress=False,
    )


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    directory = tmp_path_factory.mktemp("zoo")
    zoo = _build_tiny_zoo(directory)
    return zoo, directory


@pytest.mark.slow  # builds the tiny zoo: Algorithm 1's first stage end to end
def test_zoo_persists_and_reloads_without_retraining(tiny_zoo, monkeypatch):
    zoo, directory = tiny_zoo
    assert list(zoo) == ["E0", "E7"]
    loaded = load_zoo(directory)
    for name in zoo:
        assert loaded[name].genotype == zoo[name].genotype
        assert loaded[name].space == zoo[name].space
        assert set(loaded[name].genotype.operations) <= set(loaded[name].space.operations)
        # The architecture was searched in the options' operations only.
        assert set(loaded[name].space.operations) <= set(TINY_ARCH.operations)
        for a, b in zip(
            jax.tree.leaves(loaded[name].network.variables),
            jax.tree.leaves(zoo[name].network.variables),
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def no_training(*args, **kwargs):
        raise AssertionError("a saved zoo entry was trained again")

    monkeypatch.setattr(zoo_module, "train_task_network", no_training)
    resumed = _build_tiny_zoo(directory)
    assert resumed["E7"].genotype == zoo["E7"].genotype


@pytest.mark.slow  # builds the tiny zoo: Algorithm 1's first stage end to end
def test_padded_head_matches_explicit_zero_logits(tiny_zoo):
    zoo, _ = tiny_zoo
    net = zoo["E0"].network  # 2-class head
    target = _tiny("E7")  # 10 labels
    fisher = fisher_on_task(net, target.train, 10, label_mode="pad", max_examples=16, method="vmap")
    model = net.model
    state = {k: v for k, v in net.variables.items() if k != "params"}
    padded = lambda p, x: jax.numpy.pad(model.apply({"params": p, **state}, x), ((0, 0), (0, 8)))
    expected = ld.fisher_diagonal(
        padded, net.variables["params"], (target.train.x[:16], target.train.y[:16]), method="vmap"
    )
    for a, b in zip(jax.tree.leaves(fisher), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)


@pytest.mark.slow
def test_search_architecture_follows_the_closest_task(tiny_zoo):
    zoo, _ = tiny_zoo
    target = _tiny("E6")
    options = DistanceOptions(max_examples=32)
    result = search_architecture(
        target,
        zoo,
        key=jax.random.key(1),
        budget=TINY_BUDGET,
        distance=options,
        epsilon_epochs=1,
        progress=False,
    )
    assert result.closest_task == result.baselines[int(np.argmin(result.distances))]
    assert result.space == zoo[result.closest_task].space
    assert result.search.genotype in result.space
    assert 0.0 <= result.final.test_accuracy <= 1.0 and result.final.num_params > 0
    # the trained final network comes back: its own predictions give the reported accuracy
    final = result.final
    logits = final.model.apply(final.variables, target.test.x, train=False)
    accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=-1) == target.test.y))
    assert accuracy == pytest.approx(final.test_accuracy, abs=1e-6)
    assert final.num_params == sum(np.size(p) for p in jax.tree.leaves(final.variables["params"]))
    # the distance to each baseline is eq. 2 recomputed from the two Fishers, σ relative to
    # the target's own Fisher (the default normalisation) for both
    own = fisher_on_task(result.target_network, target.train, 4, max_examples=32)
    other = fisher_on_task(zoo["E0"].network, target.train, 4, max_examples=32)
    r_t = pair_reference(own)
    expected = abs(mean_log_det(other, reference=r_t) - mean_log_det(own, reference=r_t))
    assert result.distances[0] == pytest.approx(expected, rel=1e-6)


def test_search_architecture_rejects_an_empty_zoo():
    with pytest.raises(ValueError, match="zoo is empty"):
        search_architecture(_tiny("E6"), {}, key=jax.random.key(0), progress=False)


@pytest.mark.slow
def test_distances_command_writes_matrix_and_heatmap(tmp_path, capsys, monkeypatch):
    out, nets = tmp_path / "d", tmp_path / "nets"
    argv = [
        "distances",
        "--tasks",
        "E0",
        "E4",
        "E7",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--max-train",
        "48",
        "--fisher-examples",
        "16",
        "--out",
        str(out),
        "--no-progress",
        "--networks",
        str(nets),
    ]
    assert main(argv) == 0
    result = json.loads((out / "distances.json").read_text())
    mean, std = np.array(result["mean"]), np.array(result["std"])
    assert result["names"] == ["E0", "E4", "E7"] and mean.shape == (3, 3) and std.shape == (3, 3)
    np.testing.assert_array_equal(np.diag(mean), 0.0)
    assert np.all(mean >= 0) and np.array(result["per_seed"]).shape == (2, 3, 3)
    assert set(result["closest"]) == {"E0", "E4", "E7"}
    assert {"jax", "flax", "optax"} <= set(result["versions"])
    assert (out / "distances.png").stat().st_size > 1000
    assert "closest baseline to E7" in capsys.readouterr().out

    # a second run loads the saved ε-networks instead of training and reproduces the table

    def no_training(*args, **kwargs):
        raise AssertionError("a saved ε-network was trained again")

    monkeypatch.setattr(reproduce_module, "train_task_network", no_training)
    assert main([*argv, "--resume"]) == 0
    again = json.loads((out / "distances.json").read_text())
    np.testing.assert_allclose(np.array(again["per_seed"]), np.array(result["per_seed"]), rtol=1e-6)


@pytest.mark.slow  # builds the tiny zoo: Algorithm 1's first stage end to end
def test_a_network_checkpoint_that_does_not_fit_its_model_is_refused(tiny_zoo, tmp_path):
    zoo, _ = tiny_zoo
    save_task_network(zoo["E0"].network, tmp_path / "n", input_shape=(32, 32, 3))
    meta_path = tmp_path / "n" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["metadata"]["num_classes"] = 10  # the stored head has 2 classes
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match|shape"):
        load_task_network(tmp_path / "n")


def test_unknown_task_on_the_command_line_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distances", "--tasks", "E0", "NOPE", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown task 'NOPE'")
    assert not out.exists()


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
