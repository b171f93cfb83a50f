"""Genotype as data: switch networks equal static ones, FUSE agrees, later searches compile nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _compiles import count_compiles
from _jaxpr import primitive_count
from _toy_tasks import rbg_key, stripes

from benchmarks._static_fuse import run_fuse_static
from ldnas_jax import nas

OPS = ("zero", "identity", "sep_conv_3x3", "conv_7x1_1x7", "max_pool_3x3")
GENOTYPE = nas.Genotype(
    ("sep_conv_3x3", "identity", "max_pool_3x3", "conv_7x1_1x7", "zero", "identity"),
    ("conv_7x1_1x7", "max_pool_3x3", "sep_conv_3x3", "identity", "identity", "sep_conv_3x3"),
)
X = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
Y = np.array([0, 2, 1], np.int32)


TRAIN, VAL = stripes(0, 128), stripes(1, 64)


def assert_trees_close(a, b, **tolerance):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)


def chosen_branches(tree, genotype, choice):
    """A switch cell's tree with each edge's chosen branch in the edge's place (by hand)."""
    chosen = {k: v for k, v in tree.items() if not k.startswith("edge_")}
    for (i, j, _), index in zip(genotype.edges("normal"), choice):
        branch = tree.get(f"edge_{i}_{j}", {}).get(f"branches_{index}")
        if branch is not None:
            chosen[f"edge_{i}_{j}"] = branch
    return chosen


@pytest.mark.parametrize("stride", [1, 2])
def test_switch_cell_equals_the_static_cell_in_value_and_gradient(stride):
    static = nas.Cell(GENOTYPE.normal, channels=4, stride=stride)
    switch = nas.SwitchCell(OPS, channels=4, num_nodes=4, stride=stride)
    choice = nas.genotype_choices(GENOTYPE, OPS)[0]
    weights = switch.init(rbg_key(0), X, choice)["params"]
    # The static cell's weights are the chosen branches of the switch cell's.
    chosen = chosen_branches(weights, GENOTYPE, choice)
    assert jax.tree.structure(chosen) == jax.tree.structure(static.init(rbg_key(1), X)["params"])

    def loss(apply, params):
        return jnp.sum(jnp.sin(apply(params)))

    static_apply = lambda p: static.apply({"params": p}, X)
    switch_apply = lambda p: switch.apply({"params": p}, X, jnp.asarray(choice))
    np.testing.assert_allclose(switch_apply(weights), static_apply(chosen), rtol=1e-5, atol=1e-5)
    grad_static = jax.grad(lambda p: loss(static_apply, p))(chosen)
    grad_switch = jax.grad(lambda p: loss(switch_apply, p))(weights)
    assert_trees_close(
        chosen_branches(grad_switch, GENOTYPE, choice), grad_static, rtol=1e-4, atol=1e-5
    )
    # Operations the genotype does not use get no gradient.
    unused = [
        leaf
        for (i, j, _), index in zip(GENOTYPE.edges("normal"), choice)
        for k, branch in grad_switch.get(f"edge_{i}_{j}", {}).items()
        if k != f"branches_{index}"
        for leaf in jax.tree.leaves(branch)
    ]
    assert unused and all(not np.any(np.asarray(leaf)) for leaf in unused)


def test_switch_skeleton_equals_the_static_skeleton_for_every_genotype_of_a_sample():
    network = nas.switch_network(OPS, 3, num_nodes=4, channels=4, num_cells=3)
    params = nas.switch_init(network, rbg_key(0), X)
    apply = jax.jit(lambda p, c, x: network.apply({"params": p}, x, c))
    space = nas.SearchSpace(OPS)
    for genotype in (GENOTYPE, *space.sample(rbg_key(1), 3)):
        chosen = nas.genotype_params(network, params, genotype)
        static = nas.Skeleton(genotype, 3, channels=4, num_cells=3)
        assert nas.count_params(chosen) == nas.count_params(static.init(rbg_key(2), X)["params"])
        expected = static.apply({"params": chosen}, X)
        got = apply(params, nas.genotype_choices(genotype, OPS), X)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert apply._cache_size() == 1  # one program for all four genotypes


SMALL = nas.FuseConfig(
    max_rounds=4, patience_k=5, steps_per_round=4, batch_size=16, channels=4, num_cells=1,
    reduction_positions=(),
)  # fmt: skip
GOOD = nas.Genotype(("sep_conv_3x3", "identity", "conv_7x1_1x7"), num_nodes=3)
POOL = nas.Genotype(("max_pool_3x3", "identity", "identity"), num_nodes=3)
BLIND = nas.Genotype(("zero", "zero", "identity"), num_nodes=3)


def test_fuse_follows_the_static_path_from_the_same_weights():
    candidates = (BLIND, GOOD, POOL)
    new = nas.run_fuse(
        candidates, TRAIN, VAL, key=rbg_key(3), num_classes=2, config=SMALL, progress=False
    )
    # The static path starts from the switch path's initial weights, candidate by candidate.
    mixture = nas.CandidateMixture(candidates, 2, 4, 1, ())
    network, _, _ = nas.mixture_layout(mixture)
    init_key = jax.random.split(rbg_key(3))[0]
    stacked = nas.switch_init(network, init_key, TRAIN[0][:1], slots=3)
    initial = {
        f"candidates_{c}": nas.genotype_params(
            network, jax.tree.map(lambda a, c=c: a[c], stacked), g
        )
        for c, g in enumerate(candidates)
    }
    old = run_fuse_static(
        candidates, TRAIN, VAL, key=rbg_key(3), num_classes=2, config=SMALL, initial_params=initial
    )
    assert new.winner == old["winner"] != BLIND
    np.testing.assert_allclose(new.alpha_history, old["alpha_history"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(new.train_loss_history, old["train_loss_history"], rtol=1e-4)
    trained = {
        f"candidates_{c}": nas.genotype_params(
            network, jax.tree.map(lambda a, c=c: a[c], new.params), g
        )
        for c, g in enumerate(candidates)
    }
    assert_trees_close(trained, old["params"], rtol=1e-3, atol=1e-4)


def test_fuse_picks_the_static_winner_from_its_own_initialisation():
    """Each path with its own random weights: the candidate that can see wins both."""
    candidates = (BLIND, GOOD)
    config = SMALL._replace(max_rounds=6, steps_per_round=8, batch_size=32)
    new = nas.run_fuse(
        candidates, TRAIN, VAL, key=rbg_key(5), num_classes=2, config=config, progress=False
    )
    old = run_fuse_static(candidates, TRAIN, VAL, key=rbg_key(5), num_classes=2, config=config)
    assert new.winner == old["winner"] == GOOD


SPACE = nas.SearchSpace(("identity", "sep_conv_3x3", "max_pool_3x3"), num_nodes=3)
SEARCH = {
    "num_classes": 2,
    "num_candidates": 2,
    "config": SMALL._replace(max_rounds=2),
    "progress": False,
}


def test_a_second_search_of_the_space_compiles_nothing():
    nas.fuse_search(SPACE, TRAIN, VAL, key=rbg_key(0), max_iterations=1, **SEARCH)
    with count_compiles() as compiled:
        again = nas.fuse_search(SPACE, TRAIN, VAL, key=rbg_key(7), max_iterations=3, **SEARCH)
    assert again.iterations_run == 3
    assert len({c for entry in again.history for c in entry["candidates"]}) > 2  # new sets
    assert compiled == []


def test_random_search_trains_every_sample_in_one_program():
    config = nas.RandomSearchConfig(
        num_samples=3, train_steps=2, batch_size=16, channels=4, num_cells=1
    )
    options = {"num_classes": 2, "config": config, "progress": False}
    nas.random_search(SPACE, TRAIN, VAL, key=rbg_key(0), **options)
    with count_compiles() as compiled:
        result = nas.random_search(SPACE, TRAIN, VAL, key=rbg_key(8), **options)
    assert compiled == []
    assert len({entry["genotype"] for entry in result.history}) > 1
    for entry in result.history:  # parameters of the genotype's own Skeleton, as before
        genotype = nas.Genotype.from_json(entry["genotype"])
        static = nas.Skeleton(genotype, 2, channels=4, num_cells=1).init(rbg_key(0), TRAIN[0][:1])
        assert entry["num_params"] == nas.count_params(static["params"])


def test_fuse_config_and_keywords_are_one_set_of_options():
    config = nas.resolve_fuse_config(nas.FuseConfig(max_rounds=4), batch_size=8)
    assert (config.max_rounds, config.batch_size, config.alpha_steps_per_round) == (4, 8, 10)
    assert config.weight_optimizer is nas.default_weight_optimizer()
    with pytest.raises(TypeError, match="unknown FUSE options"):
        nas.resolve_fuse_config(rounds=3)
    with pytest.raises(TypeError, match="config must be a FuseConfig"):
        nas.resolve_fuse_config({"max_rounds": 3})
    with pytest.raises(ValueError, match="max_rounds must be >= 1"):
        nas.run_fuse((GOOD,), TRAIN, VAL, key=rbg_key(0), num_classes=2, max_rounds=0)
    with pytest.raises(ValueError, match="slots must be an int >= the 2 candidates"):
        nas.run_fuse((GOOD, POOL), TRAIN, VAL, key=rbg_key(0), num_classes=2, slots=1)
    with pytest.raises(ValueError, match="not among the operations"):
        nas.run_fuse((GOOD,), TRAIN, VAL, key=rbg_key(0), num_classes=2, operations=("identity",))


def test_make_fuse_round_is_shared_by_mixtures_of_one_layout():
    w_opt, a_opt = optax.sgd(0.1), optax.sgd(0.1)
    first = nas.CandidateMixture((GOOD, POOL), 2, 4, 1, (), operations=OPS)
    second = nas.CandidateMixture((BLIND,), 2, 4, 1, (), operations=first.operations, slots=2)
    assert nas.make_fuse_round(first, w_opt, a_opt) is nas.make_fuse_round(second, w_opt, a_opt)


def test_a_masked_wide_head_trains_exactly_as_a_head_of_the_task_classes():
    """Adam steps on a 5-output head masked to 2 equal those of the 2-output head it contains."""
    genotype = nas.Genotype(("sep_conv_3x3", "max_pool_3x3", "identity"), num_nodes=3)
    wide, narrow = (
        nas.switch_network(SPACE.operations, k, num_nodes=3, channels=4, num_cells=1)
        for k in (5, 2)
    )
    wide_params = nas.switch_init(wide, rbg_key(0), TRAIN[0])
    head = {"kernel": wide_params["head"]["kernel"][:, :2], "bias": wide_params["head"]["bias"][:2]}
    narrow_params = {**wide_params, "head": head}
    index = nas.draw_batch_indices(rbg_key(1), len(TRAIN[0]), steps=4, batch_size=16)
    choices = nas.genotype_choices(genotype, SPACE.operations)
    optimizer = optax.adam(1e-2)
    trained_wide, losses_wide, accuracy_wide = nas.make_train_and_evaluate(wide, optimizer)(
        wide_params, *TRAIN, index, *VAL, choices, num_classes=2
    )
    trained, losses, accuracy = nas.make_train_and_evaluate(narrow, optimizer)(
        narrow_params, *TRAIN, index, *VAL, choices
    )
    np.testing.assert_allclose(losses_wide, losses, rtol=1e-5)
    assert float(accuracy_wide) == float(accuracy)
    cut = {**trained_wide, "head": {k: v[..., :2] for k, v in trained_wide["head"].items()}}
    assert_trees_close(cut, trained, rtol=1e-5, atol=1e-6)
    # The masked outputs get no gradient: Adam leaves their weights where they started.
    np.testing.assert_array_equal(
        trained_wide["head"]["kernel"][:, 2:], wide_params["head"]["kernel"][:, 2:]
    )


def test_tasks_of_different_class_counts_share_one_random_search_program():
    config = nas.RandomSearchConfig(
        num_samples=2, train_steps=2, batch_size=16, channels=4, num_cells=1, head_classes=4
    )
    options = {"config": config, "progress": False}
    nas.random_search(SPACE, TRAIN, VAL, key=rbg_key(0), num_classes=2, **options)
    four = (TRAIN[0], TRAIN[1] + 2 * (np.arange(len(TRAIN[1])) % 2))  # labels 0-3
    with count_compiles() as compiled:
        result = nas.random_search(SPACE, four, VAL, key=rbg_key(8), num_classes=4, **options)
    assert compiled == []
    for entry in result.history:  # a 4-class Skeleton's parameters, not the 4-output head's
        genotype = nas.Genotype.from_json(entry["genotype"])
        static = nas.Skeleton(genotype, 4, channels=4, num_cells=1).init(rbg_key(0), TRAIN[0][:1])
        assert entry["num_params"] == nas.count_params(static["params"])
    with pytest.raises(ValueError, match="head_classes 1 is below the task's 2 classes"):
        nas.random_search(
            SPACE,
            TRAIN,
            VAL,
            key=rbg_key(0),
            num_classes=2,
            **{**options, "config": config._replace(head_classes=1)},
        )


@pytest.mark.parametrize("stride", [1, 2])
def test_a_switch_cell_holds_two_switches_whatever_its_number_of_edges(stride):
    """Edges from node 0 share one loop body and the inner edges another: 2 switches, not 6."""
    cell = nas.SwitchCell(OPS, channels=4, num_nodes=4, stride=stride)
    choice = jnp.asarray(nas.genotype_choices(GENOTYPE, OPS)[0])
    weights = cell.init(rbg_key(0), X, choice)
    assert primitive_count(lambda w: cell.apply(w, X, choice), weights, name="cond") == 2
    assert primitive_count(lambda w: cell.apply(w, X, choice), weights, name="scan") == 2
