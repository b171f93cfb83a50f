"""Algorithm 1 driven by every distance of the family, and b* from several ε-network seeds.

Tiny sizes: 8×8 images, randomly initialised networks where training is not the subject,
a one-candidate FUSE budget. Each column is checked against the distance computed by hand
from the two Fishers (or gradient matrices) of each pair.
"""

import shutil

import jax
import numpy as np
import pytest
from _tiny_runs import tiny_budget
from _toy_tasks import stripes_task

from ldnas_jax import pipeline as pipeline_module
from ldnas_jax.checkpoint import CheckpointError
from ldnas_jax.cli import build_parser, main
from ldnas_jax.commands import demo
from ldnas_jax.distances import full_log_det_distance, make_task_distances
from ldnas_jax.experiments._reproduce import EpsilonOptions, distance_tables
from ldnas_jax.models import make_model
from ldnas_jax.nas import SearchSpace
from ldnas_jax.pipeline import (
    DISTANCE_NAMES,
    DistanceOptions,
    distance_matrices,
    distances_to_target,
    search_architecture,
)
from ldnas_jax.tasks import TaskNetwork, fisher_on_task
from ldnas_jax.tasks._family import gradients_on_task
from ldnas_jax.zoo import ZooEntry

BUDGET = tiny_budget(steps_per_round=1, final_batch_size=8)
OPTIONS = DistanceOptions(max_examples=8)
SPACE = SearchSpace(("identity", "max_pool_3x3"), num_nodes=2)
TARGET = stripes_task("T", n=16)


def _network(name: str, seed: int, num_classes: int = 2) -> TaskNetwork:
    variables = make_model("small_vgg", num_classes).init(jax.random.key(seed), TARGET.train.x[:1])
    return TaskNetwork(name, "small_vgg", num_classes, dict(variables), 1.0, 0.1)


@pytest.fixture(scope="module")
def zoo() -> dict[str, ZooEntry]:
    # Three baselines, one with a 3-class head (the label route of unequal heads).
    genotype = SPACE.sample(jax.random.key(0), 1)[0]
    return {
        name: ZooEntry(_network(name, seed, classes), genotype, SPACE, 0.5)
        for name, seed, classes in (("A", 1, 2), ("B", 2, 3), ("C", 3, 2))
    }


def _by_hand(name: str, zoo, target_network: TaskNetwork) -> dict[str, float]:
    """d[b, t] from each pair's own Fishers, the registry function applied directly."""
    split, classes = TARGET.train, TARGET.num_classes
    if name == "log_det_full":
        own = gradients_on_task(target_network, split, classes, max_examples=8)
        return {
            b: full_log_det_distance(
                gradients_on_task(e.network, split, classes, max_examples=8), own
            )
            for b, e in zoo.items()
        }
    pair = make_task_distances()[name]  # the default σ and normalisation, as OPTIONS
    own = fisher_on_task(target_network, split, classes, max_examples=8)
    return {
        b: pair(fisher_on_task(e.network, split, classes, max_examples=8), own)
        for b, e in zoo.items()
    }


def _search(zoo, **kwargs):
    """Algorithm 1 for TARGET with key 0 under the tiny budget."""
    return search_architecture(
        TARGET, zoo, key=jax.random.key(0), budget=BUDGET, progress=False, **kwargs
    )


def test_the_family_names_are_the_registry_s_and_the_full_log_det():
    assert DISTANCE_NAMES == ("log_det", "frechet", "task2vec", "cosine", "log_det_full")


@pytest.mark.parametrize("name", DISTANCE_NAMES)
@pytest.mark.slow
def test_each_distance_drives_the_search_to_the_argmin_of_its_own_column(name, zoo):
    target_network = _network("T", 7)
    result = _search(zoo, distance=name, distance_options=OPTIONS, target_network=target_network)
    expected = _by_hand(name, zoo, target_network)
    np.testing.assert_allclose(result.distances, [expected[b] for b in zoo], rtol=1e-5)
    assert result.closest_task == min(expected, key=expected.get)
    assert result.distance == name
    assert result.seed_distances.shape == (1, 3)
    np.testing.assert_array_equal(result.seed_distances[0], result.distances)
    assert result.win_shares.tolist() == [float(b == result.closest_task) for b in zoo]
    assert result.space == zoo[result.closest_task].space


def test_the_distances_differ_so_the_name_is_what_routes_them(zoo):
    target_network = _network("T", 7)
    columns = {
        name: distances_to_target(TARGET, zoo, target_network, options=OPTIONS, distance=name)
        for name in DISTANCE_NAMES
    }
    values = [tuple(round(v, 9) for v in column.values()) for column in columns.values()]
    assert len(set(values)) == len(DISTANCE_NAMES)


def test_a_table_s_column_is_the_pipeline_s_column(zoo):
    target_network = _network("T", 7)
    networks = [e.network for e in zoo.values()] + [target_network]
    k = len(networks)
    tables = distance_matrices(
        networks, [TARGET.train] * k, [2] * k, DISTANCE_NAMES, options=OPTIONS, progress=False
    )
    for name in DISTANCE_NAMES:
        column = distances_to_target(TARGET, zoo, target_network, options=OPTIONS, distance=name)
        np.testing.assert_allclose(tables[name][:-1, -1], list(column.values()), rtol=1e-6)


@pytest.mark.slow
def test_b_star_is_the_argmin_of_the_mean_over_seeds_and_the_shares_count_wins(zoo):
    # A wins seed 0, B seed 1; C wins neither but has the smallest mean.
    columns = [{"A": 0.1, "B": 0.3, "C": 0.2}, {"A": 0.5, "B": 0.2, "C": 0.25}]
    result = _search(zoo, seeds=2, target_network=_network("T", 7), distances=columns)
    assert result.closest_task == "C"
    np.testing.assert_allclose(result.distances, [0.3, 0.25, 0.225])
    assert result.seed_distances.tolist() == [[0.1, 0.3, 0.2], [0.5, 0.2, 0.25]]
    assert result.win_shares.tolist() == [0.5, 0.5, 0.0]


@pytest.mark.slow
def test_seeds_computed_per_network_match_a_hand_count(zoo):
    networks = [_network("T", 7), _network("T", 8)]
    frechet = {"distance": "frechet", "distance_options": OPTIONS}
    result = _search(zoo, seeds=2, target_network=networks, **frechet)
    columns = [_by_hand("frechet", zoo, n) for n in networks]
    per_seed = np.array([[c[b] for b in zoo] for c in columns])
    np.testing.assert_allclose(result.seed_distances, per_seed, rtol=1e-5)
    mean = per_seed.mean(axis=0)
    assert result.closest_task == list(zoo)[int(np.argmin(mean))]
    wins = [list(zoo)[int(np.argmin(row))] for row in per_seed]
    assert result.win_shares.tolist() == [wins.count(b) / 2 for b in zoo]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"distance": "l2"}, ValueError, "unknown distance 'l2'; known: log_det, frechet"),
        ({"distance": 3}, TypeError, "distance must be a name"),
        ({"distance": DistanceOptions(), "distance_options": OPTIONS}, TypeError, "only with"),
        (
            {"distance": "log_det_full", "distance_options": DistanceOptions(estimator="exact")},
            ValueError,
            "empirical",
        ),
        ({"seeds": 0}, ValueError, "seeds must be >= 1"),
        ({"seeds": 2.0}, TypeError, "seeds must be an int"),
        ({"seeds": 2, "distances": [{"B": 1.0}]}, ValueError, "1 items for seeds=2"),
    ],
)
def test_bad_distance_or_seeds_are_refused_before_training(monkeypatch, kwargs, error, match):
    def no_training(*a, **kw):
        raise AssertionError("trained N_t before checking the arguments")

    monkeypatch.setattr(pipeline_module, "train_or_load_task_network", no_training)
    with pytest.raises(error, match=match):
        search_architecture(TARGET, {"B": None}, key=jax.random.key(0), **kwargs)


@pytest.mark.slow
def test_seeds_resume_to_the_unbroken_result_and_seed_0_is_the_one_seed_run(zoo, tmp_path):
    target = stripes_task("T", n=16, seed=1)
    common = {"key": jax.random.key(5), "budget": BUDGET, "epsilon_epochs": 1, "progress": False}
    common["distance"] = "cosine"
    unbroken = search_architecture(target, zoo, seeds=2, distance_options=OPTIONS, **common)
    run = tmp_path / "run"
    search_architecture(
        target, zoo, seeds=2, distance_options=OPTIONS, checkpoint_dir=run, **common
    )
    assert (run / "target_network_seed_1" / "meta.json").exists()
    # As if killed after seed 1's network: its column, the search and final training redone.
    (run / "distances_seed_1.json").unlink()
    for stage in ("search", "final"):
        shutil.rmtree(run / stage)
    resumed = search_architecture(
        target, zoo, seeds=2, distance_options=OPTIONS, checkpoint_dir=run, resume=True, **common
    )
    assert resumed.closest_task == unbroken.closest_task
    assert resumed.search.genotype == unbroken.search.genotype
    np.testing.assert_array_equal(resumed.seed_distances, unbroken.seed_distances)
    np.testing.assert_array_equal(resumed.win_shares, unbroken.win_shares)
    assert resumed.final.test_accuracy == unbroken.final.test_accuracy
    assert unbroken.seed_distances[0].tolist() != unbroken.seed_distances[1].tolist()
    # Seed 0 of two is the whole of a one-seed run: same N_t, same column.
    one = search_architecture(target, zoo, distance_options=OPTIONS, **common)
    np.testing.assert_array_equal(one.distances, unbroken.seed_distances[0])
    for x, y in zip(jax.tree.leaves(one.target_network.variables),
                    jax.tree.leaves(unbroken.target_network.variables)):  # fmt: skip
        np.testing.assert_array_equal(x, y)
    # A resume that asks for another distance is refused, not mixed.
    with pytest.raises(CheckpointError, match="'cosine', not 'frechet'"):
        search_architecture(
            target,
            zoo,
            seeds=2,
            distance_options=OPTIONS,
            checkpoint_dir=run,
            resume=True,
            **{**common, "distance": "frechet"},
        )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--distance", "l2"], "--distance"),
        (["demo", "--seeds", "0"], "--seeds"),
        (["demo", "--distance", "log_det_full", "--estimator", "sampled"], "empirical"),
        (["reproduce", "--distances", "l2"], "--distances"),
        (["reproduce", "--distances", "cosine", "cosine"], "--distances repeat"),
        (["reproduce", "--distances", "log_det_full", "--estimator", "exact"], "empirical"),
    ],
)
def test_a_bad_distance_or_seeds_is_one_line_exit_2_before_writing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_reproduce_tables_take_the_full_log_det_as_any_other_distance():
    datas = [stripes_task(name, n=16, seed=i) for i, name in enumerate("AB")]
    tables = distance_tables(
        datas,
        seeds=[0],
        epsilon=EpsilonOptions(epochs=1, batch_size=8),
        distance=OPTIONS,
        distances=["cosine", "log_det_full"],
        progress=False,
    )
    assert sorted(tables.per_seed) == ["cosine", "log_det_full"]
    a, b = tables.networks
    split = datas[1].train
    by_hand = full_log_det_distance(
        gradients_on_task(a, split, 2, max_examples=8),
        gradients_on_task(b, split, 2, max_examples=8),
    )
    assert tables.per_seed["log_det_full"][0, 0, 1] == pytest.approx(by_hand, rel=1e-6)
    assert tables.closest["log_det_full"] == {"A": "B", "B": "A"}


def test_the_demo_s_distance_stage_gives_each_seed_its_own_network_and_column(
    tmp_path, monkeypatch
):
    argv = "demo --target E7 --baselines E0 E3 --estimator sampled --max-train 16 "
    argv += "--fisher-examples 8 --distance frechet --seeds 2 --no-progress"
    args = build_parser("ldnas").parse_args([*argv.split(), "--out", str(tmp_path / "d")])
    plan = demo.check(args)

    def random_network(data, seed):
        model = make_model("small_vgg", data.num_classes)
        variables = model.init(jax.random.key(seed), data.train.x[:1], train=False)
        return TaskNetwork(data.name, "small_vgg", data.num_classes, dict(variables), 1.0, 0.1)

    targets = [random_network(plan.target, 10), random_network(plan.target, 11)]
    by_directory = {"target_network": targets[0], "target_network_seed_1": targets[1]}
    monkeypatch.setattr(
        demo, "train_or_load_task_network", lambda data, path, **kw: by_directory[path.name]
    )
    zoo = {
        d.name: ZooEntry(random_network(d, i), None, None, 0.0)
        for i, d in enumerate(plan.baselines)
    }
    checkpoints = tmp_path / "checkpoints"
    nets, matrix, columns = demo._distances(plan, zoo, checkpoints)
    assert nets == targets
    fisher_key = jax.random.fold_in(plan.key, demo.FISHER_KEY)
    networks = [e.network for e in zoo.values()] + [targets[0]]
    datas = plan.baselines + [plan.target]
    table = distance_matrices(
        networks,
        [d.train for d in datas],
        [d.num_classes for d in datas],
        ["frechet"],
        options=plan.options,
        key=fisher_key,
        progress=False,
    )["frechet"]
    np.testing.assert_array_equal(matrix, table)
    assert columns[0] == {"E0": table[0, -1], "E3": table[1, -1]}
    seed_1 = distances_to_target(
        plan.target,
        zoo,
        targets[1],
        options=plan.options,
        distance="frechet",
        key=jax.random.fold_in(fisher_key, 1),
    )
    assert columns[1] == seed_1 and columns[1] != columns[0]
    assert (checkpoints / "frechet.json").exists()
    assert (checkpoints / "distances_seed_1.json").exists()

    # Resumed: read back, not recomputed.
    def no_computing(*a, **kw):
        raise AssertionError("recomputed a saved distance")

    monkeypatch.setattr(demo, "distance_matrices", no_computing)
    monkeypatch.setattr(demo, "distances_to_target", no_computing)
    again = demo._distances(plan, zoo, checkpoints)
    np.testing.assert_array_equal(again[1], matrix)
    assert again[2] == columns
