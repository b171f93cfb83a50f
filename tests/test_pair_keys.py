"""One pair, one number: d[b, t] with the ``"sampled"`` estimator through every entry point.

The sampled Fisher draws labels with the pair's key, so the number depends on the key;
every entry point (the K×K table, the family table of ``reproduce``, Algorithm 1's column,
the transfer check's column, the ``distances`` command and the demo) must derive the same
key for the same pair from the same run key, whatever else is in its table.
"""

import functools
import json

import jax
import numpy as np
import pytest

from ldnas_jax import pipeline
from ldnas_jax.cli import main
from ldnas_jax.commands import demo
from ldnas_jax.data import load_task
from ldnas_jax.distances import (
    distance_matrix,
    log_det_distance,
    mean_log_det,
    pair_reference,
)
from ldnas_jax.experiments import _reproduce as reproduce_module
from ldnas_jax.experiments._transfer import target_distances
from ldnas_jax.models import make_model
from ldnas_jax.tasks import (
    DistanceOptions,
    TaskNetwork,
    fisher_on_task,
    pair_fishers,
    pair_key,
    pair_log_dets,
    task_distances,
    task_family_distances,
)
from ldnas_jax.zoo import ZooEntry

MAX_TRAIN, FISHER_EXAMPLES = 16, 8
# The Fisher of every entry point, and of the pair computed by hand.
SAMPLED = {"estimator": "sampled", "max_examples": FISHER_EXAMPLES}
OPTIONS = DistanceOptions(**SAMPLED)
# The commands' run key for seed 0: fold_in(key(seed), 10_000).
RUN_KEY = jax.random.fold_in(jax.random.key(0), 10_000)


def _random_network(data, seed):
    """An untrained ε-network: the key rule, not training, is under test."""
    model = make_model("small_vgg", data.num_classes)
    variables = dict(model.init(jax.random.key(seed), data.train.x[:1], train=False))
    return TaskNetwork(data.name, "small_vgg", data.num_classes, variables, 1.0, 0.1)


def _splits_and_classes(datas):
    """What every distance entry point takes after the networks: the data and head of each task."""
    return [d.train for d in datas], [d.num_classes for d in datas]


def _sampled_fisher(network, data, b, t):
    """``network``'s sampled Fisher on ``data``, drawn with the key of the pair (b, t)."""
    return fisher_on_task(
        network, data.train, data.num_classes, key=pair_key(RUN_KEY, b, t), **SAMPLED
    )


@pytest.fixture(scope="module")
def pair():
    """E0's network as the source b, E7 (10 classes) as the target t, and the reference d."""
    datas = [load_task(name, seed=0, max_train=MAX_TRAIN) for name in ("E0", "E7")]
    networks = [_random_network(d, seed) for seed, d in enumerate(datas)]
    splits, classes = _splits_and_classes(datas)
    table = task_distances(networks, splits, classes, options=OPTIONS, key=RUN_KEY, progress=False)
    return datas, networks, table


def test_the_key_decides_the_sampled_fisher_and_follows_the_names(pair):
    datas, networks, table = pair
    splits, classes = _splits_and_classes(datas)
    other = task_distances(
        networks, splits, classes, options=OPTIONS, key=jax.random.key(1), progress=False
    )
    assert other.matrix[0, 1] != table.matrix[0, 1]  # the key matters for "sampled"
    # L[E0, E7] is N_E0's Fisher on E7's data drawn with pair_key(key, "E0", "E7")
    fisher = _sampled_fisher(networks[0], datas[1], "E0", "E7")
    own = _sampled_fisher(networks[1], datas[1], "E7", "E7")
    r_t = pair_reference(own, normalize=OPTIONS.normalize)
    assert table.log_dets[0, 1] == mean_log_det(
        fisher, sigma=OPTIONS.sigma, normalize=OPTIONS.normalize, reference=r_t
    )
    # Another table, other tasks and another order: the same pair keeps its number.
    e4 = load_task("E4", seed=0, max_train=MAX_TRAIN)
    third = _random_network(e4, 7)
    shuffled = [third, networks[1], networks[0]]
    splits = [e4.train, datas[1].train, datas[0].train]
    got = dict(
        ((b, t), value)
        for b, t, value in pair_log_dets(
            shuffled, splits, [2, 10, 2], options=OPTIONS, key=RUN_KEY, pairs=[(2, 1), (1, 1)],
            progress=False,
        )
    )  # fmt: skip
    assert got[2, 1] == table.log_dets[0, 1] and got[1, 1] == table.log_dets[1, 1]


@pytest.mark.slow
def test_every_entry_point_gives_the_table_s_number(pair, tmp_path, monkeypatch):
    datas, networks, table = pair
    expected = table.matrix[0, 1]  # d[E0, E7]
    e7 = datas[1]

    splits, classes = _splits_and_classes(datas)
    family = task_family_distances(
        networks, splits, classes, options=OPTIONS, key=RUN_KEY, progress=False
    )
    assert family.matrices["log_det"][0, 1] == expected

    zoo = {"E0": ZooEntry(networks[0], None, None, 0.0)}
    column = pipeline.distances_to_target(e7, zoo, networks[1], options=OPTIONS, key=RUN_KEY)
    assert column == {"E0": expected}

    log_det = functools.partial(log_det_distance, sigma=OPTIONS.sigma, normalize=OPTIONS.normalize)
    transfer = target_distances(
        networks, datas, 1, {"log_det": log_det}, options=OPTIONS, key=RUN_KEY
    )
    assert transfer == {"log_det": {"E0": expected}}

    # The distances command, end to end; its ε-networks are the random ones above.
    by_task = {n.task: n for n in networks}
    monkeypatch.setattr(
        reproduce_module, "train_task_network", lambda data, **kw: by_task[data.name]
    )
    out = tmp_path / "distances"
    argv = ["distances", "--tasks", "E0", "E7", "--seeds", "1", "--estimator", "sampled"]
    flags = ["--max-train", str(MAX_TRAIN), "--fisher-examples", str(FISHER_EXAMPLES)]
    assert main([*argv, *flags, "--out", str(out), "--no-progress"]) == 0
    per_seed = json.loads((out / "distances.json").read_text())["per_seed"]
    assert per_seed[0][0][1] == pytest.approx(expected, rel=1e-12)  # via JSON

    # The demo's distance stage, with E0 as its only baseline and E7 as the target.
    monkeypatch.setattr(demo, "train_or_load_task_network", lambda data, *a, **kw: networks[1])
    args = demo_args(tmp_path / "demo")
    plan = demo.check(args)
    _, matrix, columns = demo._distances(plan, zoo, tmp_path / "demo_checkpoints")
    assert matrix[0, 1] == expected and columns == [{"E0": expected}]


def demo_args(out):
    from ldnas_jax.cli import build_parser

    argv = ["demo", "--target", "E7", "--baselines", "E0", "--estimator", "sampled"]
    flags = ["--max-train", str(MAX_TRAIN), "--fisher-examples", str(FISHER_EXAMPLES)]
    return build_parser("ldnas").parse_args([*argv, *flags, "--out", str(out), "--no-progress"])


def test_target_mean_takes_each_column_s_reference_even_for_a_resumed_pair(pair):
    datas, networks, _ = pair
    options = OPTIONS._replace(normalize="target_mean")
    splits, classes = _splits_and_classes(datas)
    table = task_distances(networks, splits, classes, options=options, key=RUN_KEY, progress=False)
    grid = {
        (b, t): fisher
        for b, t, fisher in pair_fishers(
            networks, splits, classes, options=options, key=RUN_KEY, progress=False
        )
    }
    expected = distance_matrix(
        [[grid[b, t] for t in range(2)] for b in range(2)],
        sigma=options.sigma,
        normalize="target_mean",
    )
    np.testing.assert_allclose(table.matrix, expected, rtol=1e-12)
    # A resumed table asks for (0, 1) alone: r_t still comes from F_{t,t}, computed again.
    (resumed,) = pair_log_dets(
        networks, splits, classes, options=options, key=RUN_KEY, pairs=[(0, 1)], progress=False
    )
    assert resumed == (0, 1, table.log_dets[0, 1])
