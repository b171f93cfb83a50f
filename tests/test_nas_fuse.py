"""FUSE phases and rounds, winner selection, the search loops and input checks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _toy_tasks import fuse_config, random_search_config, rbg_key, search_options, stripes

from ldnas_jax import nas

# Small, shared sizes keep compilation (the dominant cost on CPU) short.
SIZE = dict(channels=4, num_cells=1)
GOOD = nas.Genotype(("sep_conv_3x3", "identity", "conv_7x1_1x7"), num_nodes=3)
ZERO = nas.Genotype(("zero",) * 3, num_nodes=3)


TRAIN = stripes(0, 256)
VAL = stripes(1, 128)


def tree_equal(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b)
    )


@pytest.fixture(scope="module")
def fuse_setup():
    mixture = nas.CandidateMixture((GOOD, ZERO), num_classes=2, **SIZE)
    weight_opt, alpha_opt = optax.adam(1e-2), optax.adam(1e-1)
    state = nas.init_fuse_state(mixture, rbg_key(0), TRAIN[0][:1], weight_opt, alpha_opt)
    batches = nas.draw_batches(rbg_key(1), *TRAIN, steps=2, batch_size=16)
    return mixture, weight_opt, alpha_opt, state, batches


def assert_only_moved(new, state, moved, frozen):
    """``new`` differs from ``state`` in the field ``moved`` and equals it in each of ``frozen``."""
    for name in frozen:
        assert tree_equal(getattr(new, name), getattr(state, name)), name
    assert not tree_equal(getattr(new, moved), getattr(state, moved))


def test_weight_phase_freezes_alpha(fuse_setup):
    mixture, weight_opt, _, state, batches = fuse_setup
    state = state._replace(alpha=jnp.array([0.2, -0.1]))
    new, losses = nas.make_weight_phase(mixture, weight_opt)(state, batches)
    assert losses.shape == (2,)
    assert_only_moved(new, state, "params", frozen=("alpha", "alpha_opt_state"))


def test_alpha_phase_freezes_weights(fuse_setup):
    mixture, _, alpha_opt, state, batches = fuse_setup
    new, losses = nas.make_alpha_phase(mixture, alpha_opt)(state, batches)
    assert losses.shape == (2,)
    assert_only_moved(new, state, "alpha", frozen=("params", "weight_opt_state"))


def test_alpha_gradient_is_not_zero(fuse_setup):
    mixture, _, _, state, (xs, ys) = fuse_setup

    def loss(alpha):
        return nas.mixture_loss(mixture, state.params, alpha, xs[0], ys[0])

    grad = jax.jit(jax.grad(loss))(state.alpha)
    assert grad.shape == (2,)
    assert float(jnp.abs(grad).max()) > 1e-6
    np.testing.assert_allclose(float(grad.sum()), 0.0, atol=1e-6)  # softmax is shift-invariant


def test_fuse_picks_the_candidate_that_can_see():
    config = fuse_config(batch_size=32, max_rounds=8, patience_k=3, steps_per_round=8)
    result = nas.run_fuse((ZERO, GOOD), TRAIN, VAL, key=rbg_key(0), **search_options(config))
    assert result.winner == GOOD and result.winner_index == 1
    assert 3 <= result.rounds_run <= 8
    assert result.alpha_history.shape == (result.rounds_run, 2)
    assert result.alpha_history[-1, 1] > result.alpha_history[-1, 0]
    assert result.val_loss_history[-1] < np.log(2)


# One-edge cells keep the search tests' compilations short.
TINY_SPACE = nas.SearchSpace(("identity", "sep_conv_3x3", "conv_7x1_1x7"), num_nodes=2)


def test_fuse_search_returns_a_genotype_from_the_space():
    space = TINY_SPACE
    config = fuse_config(max_rounds=1, steps_per_round=2)
    options = search_options(config, num_candidates=1, max_iterations=2)
    result = nas.fuse_search(space, TRAIN, VAL, key=rbg_key(0), **options)
    assert result.genotype in space
    assert result.iterations_run == len(result.history) == 2
    first, second = result.history
    assert len(first["candidates"]) == 1  # no c* yet
    assert first["winner"] in second["candidates"]  # c* competes again
    assert nas.Genotype.from_json(second["winner"]) == result.genotype
    assert len(second["alpha"]) == len(second["candidates"])
    json.dumps(result.history)  # history is plain data


def test_random_search_keeps_the_best_on_val():
    space = TINY_SPACE
    options = search_options(random_search_config(num_samples=2, train_steps=4))
    result = nas.random_search(space, TRAIN, VAL, key=rbg_key(0), **options)
    assert result.genotype in space
    accuracies = [entry["val_accuracy"] for entry in result.history]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    best = result.history[int(np.argmax(accuracies))]["genotype"]
    assert nas.Genotype.from_json(best) == result.genotype


def test_round_runs_both_phases_and_counts_rounds(fuse_setup):
    mixture, weight_opt, alpha_opt, state, batches = fuse_setup
    val_batches = nas.draw_batches(rbg_key(2), *VAL, steps=3, batch_size=16)
    round_fn = nas.make_fuse_round(mixture, weight_opt, alpha_opt)
    new, metrics = round_fn(state, batches, val_batches, True)
    assert isinstance(new, nas.FuseState) and int(new.step) == int(state.step) + 1
    assert metrics["train_loss"].shape == (2,) and metrics["val_loss"].shape == (3,)
    np.testing.assert_array_equal(metrics["alpha"], new.alpha)
    assert not tree_equal(new.params, state.params)
    assert not tree_equal(new.alpha, state.alpha)


def test_warmup_round_trains_weights_and_leaves_alpha(fuse_setup):
    mixture, weight_opt, alpha_opt, state, batches = fuse_setup
    round_fn = nas.make_fuse_round(mixture, weight_opt, alpha_opt)
    warm, _ = round_fn(state, batches, batches, False)
    moved, _ = round_fn(state, batches, batches, True)
    # The weight phase is the same in both; only the α phase is held back.
    assert tree_equal(warm.params, moved.params) and not tree_equal(warm.params, state.params)
    assert tree_equal(warm.alpha, state.alpha) and tree_equal(
        warm.alpha_opt_state, state.alpha_opt_state
    )
    assert not tree_equal(moved.alpha, state.alpha)


def test_run_fuse_warmup_records_only_alpha_rounds():
    options = search_options(fuse_config(steps_per_round=2, patience_k=5), key=rbg_key(0))
    plain = nas.run_fuse((GOOD, ZERO), TRAIN, VAL, max_rounds=2, **options)
    warm = nas.run_fuse((GOOD, ZERO), TRAIN, VAL, max_rounds=2, warmup_rounds=1, **options)
    assert plain.alpha_history.shape == warm.alpha_history.shape == (2, 2)
    # One more weight round before α moves: the first α round's weights differ.
    assert not np.allclose(plain.alpha_history[0], warm.alpha_history[0])
    with pytest.raises(ValueError, match="warmup_rounds must be >= 0"):
        nas.run_fuse((GOOD,), TRAIN, VAL, warmup_rounds=-1, **options)


# ---- input validation -------------------------------------------------------


def run(train=TRAIN, val=VAL, genotypes=(GOOD,), **kwargs):
    options = dict(key=rbg_key(0), num_classes=2, max_rounds=1, progress=False, **SIZE)
    options.update(kwargs)
    return nas.run_fuse(genotypes, train, val, **options)


def test_images_must_be_nhwc():
    with pytest.raises(ValueError, match="4-D NHWC"):
        run(train=(TRAIN[0][..., 0], TRAIN[1]))


def test_images_and_labels_must_match_in_length():
    with pytest.raises(ValueError, match="256 images but 255 labels"):
        run(train=(TRAIN[0], TRAIN[1][:-1]))


def test_labels_must_be_in_range():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        run(val=(VAL[0], VAL[1] + 1))


def test_train_and_val_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        run(val=(VAL[0][:, :4], VAL[1]))


def test_fuse_needs_candidates():
    with pytest.raises(ValueError, match="at least one candidate"):
        run(genotypes=())


def test_batch_larger_than_split():
    with pytest.raises(ValueError, match="batch_size 200 exceeds the 128 examples of val"):
        run(batch_size=200)


def test_search_needs_at_least_one_candidate():
    space = nas.SearchSpace(("identity",), num_nodes=3)
    with pytest.raises(ValueError, match=r"num_candidates \(C\) must be an int >= 1"):
        nas.fuse_search(space, TRAIN, VAL, key=rbg_key(0), num_classes=2, num_candidates=0)


def test_search_rejects_loose_fuse_options_a_foreign_config_and_a_foreign_initial():
    space = nas.SearchSpace(("identity",), num_nodes=3)
    search = {"key": rbg_key(0), "num_classes": 2}
    # FUSE's options travel in a FuseConfig only: neither a known nor an unknown loose keyword.
    for loose in ({"max_rounds": 3}, {"rounds": 3}):
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            nas.fuse_search(space, TRAIN, VAL, **search, **loose)
    with pytest.raises(TypeError, match="config must be a FuseConfig, got dict"):
        nas.fuse_search(space, TRAIN, VAL, **search, config={"max_rounds": 3})
    with pytest.raises(TypeError, match="config must be a FuseConfig, got RandomSearchConfig"):
        nas.fuse_search(space, TRAIN, VAL, **search, config=nas.RandomSearchConfig())
    with pytest.raises(ValueError, match="max_rounds must be >= 1"):
        nas.fuse_search(space, TRAIN, VAL, **search, config=nas.FuseConfig(max_rounds=0))
    with pytest.raises(ValueError, match="not in the search space"):
        nas.fuse_search(space, TRAIN, VAL, **search, initial=GOOD)


def test_run_fuse_takes_a_config_and_names_an_unknown_option():
    with pytest.raises(TypeError, match=r"unknown FUSE options \['rounds'\]"):
        run(rounds=3)
    with pytest.raises(TypeError, match="config must be a FuseConfig, got dict"):
        run(config={"max_rounds": 1})
    # A loose option overrides the config's field.
    with pytest.raises(ValueError, match="batch_size 200 exceeds"):
        run(config=nas.FuseConfig(batch_size=8), batch_size=200)


def test_random_search_takes_only_its_config():
    space = nas.SearchSpace(("identity",), num_nodes=3)
    search = {"key": rbg_key(0), "num_classes": 2}
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        nas.random_search(space, TRAIN, VAL, **search, num_samples=2)
    with pytest.raises(TypeError, match="config must be a RandomSearchConfig, got FuseConfig"):
        nas.random_search(space, TRAIN, VAL, **search, config=nas.FuseConfig())
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        nas.random_search(space, TRAIN, VAL, **search, config=nas.RandomSearchConfig(num_samples=0))


def test_random_search_like_fuse_gets_fuse_s_networks_and_weight_updates():
    fuse = nas.FuseConfig(max_rounds=2, warmup_rounds=3, steps_per_round=4, batch_size=8,
                          channels=4, num_cells=1, weight_optimizer=optax.sgd(0.1))  # fmt: skip
    config = nas.RandomSearchConfig.like_fuse(fuse, 6, head_classes=3)
    assert (config.num_samples, config.train_steps, config.batch_size) == (6, 20, 8)
    assert (config.channels, config.num_cells, config.head_classes) == (4, 1, 3)
    assert config.optimizer is fuse.weight_optimizer


def test_separate_weight_loss_is_the_sum_of_each_candidates_own_loss(fuse_setup):
    from ldnas_jax.nas import fuse

    mixture, weight_opt, alpha_opt, state, batches = fuse_setup
    network, choices, active = nas.mixture_layout(mixture)
    x, y = batches[0][0], batches[1][0]
    own = [
        nas.cross_entropy(
            network.apply({"params": jax.tree.map(lambda a: a[c], state.params)}, x, choices[c]),
            y,
        )
        for c in range(len(active))
    ]
    separate = fuse._separate_loss(network, state.params, choices, active, x, y)
    np.testing.assert_allclose(separate, sum(own), rtol=1e-5)
    # The α-free loss trains every place as if alone: the rounds differ from the mixture's.
    mixed = nas.make_fuse_round(mixture, weight_opt, alpha_opt)(state, batches, batches, False)[0]
    alone = nas.make_fuse_round(mixture, weight_opt, alpha_opt, weight_loss="separate")(
        state, batches, batches, False
    )[0]
    assert not tree_equal(mixed.params, alone.params)
    with pytest.raises(ValueError, match="weight_loss must be one of"):
        nas.make_fuse_round(mixture, weight_opt, alpha_opt, weight_loss="joint")
