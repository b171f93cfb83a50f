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
