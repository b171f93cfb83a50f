"""SearchSpace: validation, seeded sampling, size, and S = S_b from a baseline."""

import jax
import pytest

from ldnas_jax import nas


def test_properties():
    space = nas.SearchSpace(nas.PAPER_RELATED_OPERATIONS)
    assert space.num_nodes == 4 and space.num_edges == 6
    assert space.size == 4**12
    assert nas.SearchSpace(("identity",), num_nodes=2).size == 1


def test_sampling_is_seeded_and_stays_in_space():
    space = nas.SearchSpace(("identity", "max_pool_3x3", "sep_conv_3x3"), num_nodes=3)
    a = space.sample(jax.random.key(0), 20)
    assert a == space.sample(jax.random.key(0), 20)
    assert a != space.sample(jax.random.key(1), 20)
    assert len(a) == 20
    for g in a:
        assert g.num_nodes == 3 and len(g.normal) == len(g.reduce) == 3
        assert set(g.normal + g.reduce) <= set(space.operations)
        assert g in space
    # Uniform draws of 120 ops over 3 choices use every op.
    assert {op for g in a for op in g.normal + g.reduce} == set(space.operations)


def test_empty_space():
    with pytest.raises(ValueError, match="empty"):
        nas.SearchSpace(())


def test_unknown_operation_in_space():
    with pytest.raises(ValueError, match="unknown operation 'conv_3x3'"):
        nas.SearchSpace(("identity", "conv_3x3"))


def test_other_invalid_spaces():
    with pytest.raises(ValueError, match="num_nodes"):
        nas.SearchSpace(("identity",), num_nodes=1)
    with pytest.raises(ValueError, match="more than once"):
        nas.SearchSpace(("identity", "identity"))
    with pytest.raises(ValueError, match="num"):
        nas.SearchSpace(("identity",)).sample(jax.random.key(0), 0)


def test_space_from_baseline_genotype():
    baseline = nas.Genotype(
        ("sep_conv_3x3", "identity", "max_pool_3x3", "identity", "conv_7x1_1x7", "identity"),
        ("max_pool_3x3",) * 6,
    )
    space = nas.search_space_from_genotype(baseline)
    assert space == nas.SearchSpace(nas.PAPER_RELATED_OPERATIONS, num_nodes=4)
    assert baseline in space
    assert nas.Genotype(("zero",), num_nodes=2) not in space


def test_shared_cell_space_samples_one_cell_and_induces_itself():
    space = nas.SearchSpace(nas.ALL_OPERATIONS, shared_cells=True)
    assert space.size == 9**6
    samples = space.sample(jax.random.key(3), 30)
    assert all(g.reduce == g.normal and g in space for g in samples)
    # A genotype with two different cells lies outside a shared-cell space.
    two_cells = nas.Genotype(("identity",) * 6, ("max_pool_3x3",) * 6)
    assert two_cells not in space
    # The induced space keeps the shared structure and only the ops used: six
    # edges can carry at most six of the nine operations.
    induced = nas.search_space_from_genotype(samples[0])
    assert induced.shared_cells and len(induced.operations) <= 6
    assert set(induced.operations) == set(samples[0].normal)
    with pytest.raises(TypeError, match="shared_cells"):
        nas.SearchSpace(("identity",), shared_cells="yes")
