"""On CPU the same seed gives bit-identical distances, genotypes, accuracies and data.

Every run is done twice from scratch with the same key and compared exactly
(``np.array_equal``, not a tolerance). Where it is cheap, a different key is
checked to give a different result, so the equality is not vacuous.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _small_models import MLP
from _toy_tasks import fuse_config, rbg_key, search_options

import ldnas_jax as ld
from ldnas_jax import data, nas
from ldnas_jax.data import Split


def assert_trees_identical(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sampled_fisher_is_bit_identical_for_one_key():
    model = nn.Dense(3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    x = np.random.default_rng(0).normal(size=(13, 4)).astype(np.float32)

    def run(seed):
        batches = [(x[:8], None), (x[8:], None)]
        return ld.fisher_diagonal(
            apply_fn, params, batches, estimator="sampled", key=jax.random.key(seed), chunk_size=4
        )

    first, again, other = run(1), run(1), run(2)
    assert_trees_identical(first, again)
    assert not np.array_equal(first["kernel"], other["kernel"])  # the key does matter


def _random_small_vgg(seed, shape=(8, 8, 3)):
    """Random SmallVGG variables (no training), with positive BatchNorm variances."""
    model = ld.make_model("small_vgg", 2)
    like = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))
    rng = np.random.default_rng(seed)
    return {
        "params": jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape), like["params"]),
        "batch_stats": jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape), like["batch_stats"]),
    }


def test_task_distances_are_bit_identical_for_one_key():
    rng = np.random.default_rng(0)
    nets = [
        ld.TaskNetwork(n, "small_vgg", 2, _random_small_vgg(i), 0.9, 0.1)
        for i, n in enumerate("ab")
    ]
    splits = [
        Split(rng.uniform(size=(6, 8, 8, 3)).astype(np.float32), np.arange(6, dtype=np.int32) % 2)
        for _ in nets
    ]

    def run():
        return ld.task_distances(
            nets,
            splits,
            [2, 2],
            estimator="sampled",
            key=jax.random.key(7),
            max_examples=6,
            progress=False,
        )

    first, again = run(), run()
    assert first.names == again.names == ("a", "b")
    np.testing.assert_array_equal(first.log_dets, again.log_dets)
    np.testing.assert_array_equal(first.matrix, again.matrix)
    assert np.all(np.isfinite(first.matrix)) and first.matrix[0, 1] > 0


def test_fuse_search_gives_the_same_genotype_and_alpha_history():
    rng = np.random.default_rng(0)
    train = (rng.normal(size=(16, 4, 4, 3)).astype(np.float32), np.arange(16) % 2)
    val = (rng.normal(size=(8, 4, 4, 3)).astype(np.float32), np.arange(8) % 2)
    # Pooling-only cells compile fastest; shared cells keep the genotype to one edge.
    space = nas.SearchSpace(("identity", "max_pool_3x3", "avg_pool_3x3"), num_nodes=2)

    config = fuse_config(max_rounds=2, patience_k=2, steps_per_round=1, batch_size=4, channels=2)
    options = search_options(config, num_candidates=2, max_iterations=1)

    def run():
        return nas.fuse_search(space, train, val, key=rbg_key(3), **options)

    first, again = run(), run()
    assert first.genotype == again.genotype
    assert [h["candidates"] for h in first.history] == [h["candidates"] for h in again.history]
    for a, b in zip(first.history, again.history):
        np.testing.assert_array_equal(np.array(a["alpha_history"]), np.array(b["alpha_history"]))
    assert np.any(np.array(first.history[0]["alpha_history"]) != 0)  # α did move


def test_train_classifier_gives_the_same_weights_and_accuracy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 2, 3, 2)).astype(np.float32)
    y = (x.reshape(24, -1).sum(axis=1) > 0).astype(np.int32) + (x[:, 0, 0, 0] > 1)
    model = MLP()

    def run(seed):
        result = ld.train_classifier(
            model, (x, y), key=jax.random.key(seed), epochs=2, batch_size=8, progress=False
        )
        return result, ld.evaluate(model, result.variables, (x, y))

    (first, first_eval), (again, again_eval), (other, _) = run(0), run(0), run(1)
    assert_trees_identical(first.variables, again.variables)
    assert first.history == again.history
    assert first_eval == again_eval
    assert not np.array_equal(
        first.variables["params"]["Dense_0"]["kernel"],
        other.variables["params"]["Dense_0"]["kernel"],
    )


def test_load_task_is_deterministic_for_a_seed():
    def run(seed):
        return data.load_task("E0", max_train=20, max_test=10, seed=seed)

    first, again, other = run(5), run(5), run(6)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, split).x, getattr(again, split).x)
        np.testing.assert_array_equal(getattr(first, split).y, getattr(again, split).y)
    assert not np.array_equal(first.train.x, other.train.x)


def test_batch_orders_are_deterministic_for_a_seed():
    x, y = np.arange(10.0)[:, None], np.arange(10)

    def order(seed):
        return np.concatenate([yb for _, yb in data.iterate_batches(x, y, 3, seed=seed)])

    np.testing.assert_array_equal(order(4), order(4))
    assert not np.array_equal(order(4), order(5))
    draw = lambda k: nas.draw_batch_indices(jax.random.key(k), 10, steps=4, batch_size=3)
    np.testing.assert_array_equal(draw(1), draw(1))
    space = nas.SearchSpace(("identity", "zero", "max_pool_3x3"), num_nodes=3)
    assert space.sample(jax.random.key(2), 4) == space.sample(jax.random.key(2), 4)
