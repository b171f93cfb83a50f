"""Cell, Skeleton and CandidateMixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _toy_tasks import rbg_key

from ldnas_jax import nas

GOOD = nas.Genotype(
    ("sep_conv_3x3", "identity", "conv_7x1_1x7"), ("max_pool_3x3",) * 3, num_nodes=3
)
POOL = nas.Genotype(("max_pool_3x3", "identity", "identity"), num_nodes=3)
ZERO = nas.Genotype(("zero",) * 3, num_nodes=3)
X = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("stride, size", [(1, 8), (2, 4)])
def test_cell_shape(stride, size):
    cell = nas.Cell(GOOD.normal, channels=4, stride=stride)
    y = cell.apply(cell.init(rbg_key(0), X), X)
    assert y.shape == (2, size, size, 4)


def test_zero_cell_outputs_zeros():
    cell = nas.Cell(ZERO.normal, channels=4)
    assert bool(jnp.all(cell.apply(cell.init(rbg_key(0), X), X) == 0))


def test_skeleton_logits_and_param_count():
    net = nas.Skeleton(GOOD, num_classes=5, channels=4, num_cells=2, reduction_positions=(1,))
    variables = net.init(rbg_key(0), X)
    assert set(variables) == {"params"}  # stateless: no batch_stats
    logits = net.apply(variables, X, train=True)
    assert logits.shape == (2, 5)
    np.testing.assert_array_equal(logits, net.apply(variables, X, train=False))
    assert nas.count_params(variables["params"]) == sum(
        np.size(leaf) for leaf in jax.tree_util.tree_leaves(variables)
    )
    # The reduction cell doubles the channels.
    assert variables["params"]["head"]["kernel"].shape == (8, 5)


def test_default_reduction_positions():
    assert nas.default_reduction_positions(3) == (1, 2)
    assert nas.default_reduction_positions(6) == (2, 4)
    with pytest.raises(ValueError, match="reduction_positions"):
        nas.Skeleton(GOOD, 2, 4, 1, reduction_positions=(3,)).init(rbg_key(0), X)


def test_skeleton_rejects_non_nhwc():
    net = nas.Skeleton(GOOD, num_classes=2, channels=4, num_cells=1)
    with pytest.raises(ValueError, match="NHWC"):
        net.init(rbg_key(0), jnp.ones((8, 8, 3)))


def test_mixture_output_is_softmax_weighted_sum_of_candidates():
    genotypes = (GOOD, POOL, ZERO)
    mixture = nas.CandidateMixture(genotypes, num_classes=3, channels=4, num_cells=1)
    variables = mixture.init(rbg_key(0), X)
    assert set(variables) == {"params", nas.ALPHA_COLLECTION}
    params, alpha = nas.split_mixture_variables(variables)
    np.testing.assert_array_equal(alpha, np.zeros(3))  # uniform start

    alpha = jnp.array([0.3, -1.2, 0.5])
    mixed = mixture.apply(nas.mixture_variables(params, alpha), X)

    weights = np.exp([0.3, -1.2, 0.5])
    weights /= weights.sum()
    expected = sum(
        w
        * np.asarray(nas.Skeleton(g, 3, 4, 1).apply({"params": nas.candidate_params(params, c)}, X))
        for c, (w, g) in enumerate(zip(weights, genotypes))
    )
    np.testing.assert_allclose(mixed, expected, rtol=1e-5, atol=1e-6)


def test_mixture_needs_candidates():
    with pytest.raises(ValueError, match="at least one"):
        nas.CandidateMixture((), num_classes=2).init(rbg_key(0), X)
