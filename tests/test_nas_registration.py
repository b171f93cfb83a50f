"""An operation defined here, registered publicly, is honoured by every part of the search."""

import flax.linen as nn
import jax
import pytest
from _toy_tasks import fuse_config, random_search_config, rbg_key, search_options, stripes

from ldnas_jax import nas
from ldnas_jax.nas import operations


class StridedConv(nn.Module):
    """A plain 3x3 linen convolution after a ReLU: an operation the library does not ship."""

    channels: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        conv = nn.Conv(self.channels, (3, 3), strides=self.stride, padding="SAME", use_bias=False)
        return conv(nn.relu(x))


NAME = "test_plain_conv_3x3"


@pytest.fixture
def registered():
    nas.register_operation(NAME, lambda channels, stride, **kw: StridedConv(channels, stride, **kw))
    yield NAME
    nas.unregister_operation(NAME)


TRAIN, VAL = stripes(0, 64), stripes(1, 32)
SIZE = {"channels": 4, "num_cells": 1, "reduction_positions": ()}


def test_unknown_until_registered_then_known_everywhere(registered):
    genotype = nas.Genotype((registered, "identity", registered), num_nodes=3)
    assert registered in nas.registered_operations()
    assert nas.Genotype.from_json(genotype.to_json()) == genotype
    space = nas.search_space_from_genotype(genotype)
    assert space.operations == ("identity", registered)  # built-ins first, then registered
    assert genotype in space
    net = nas.Skeleton(genotype, num_classes=2, **SIZE)
    params = net.init(jax.random.key(0), TRAIN[0][:1])["params"]
    assert params["cell_0"]["edge_0_1"]["Conv_0"]["kernel"].shape == (3, 3, 4, 4)
    nas.unregister_operation(registered)
    with pytest.raises(ValueError, match=f"unknown operation '{registered}'"):
        nas.Genotype.from_json(genotype.to_json())
    nas.register_operation(registered, lambda c, s, **kw: StridedConv(c, s, **kw))


def test_fuse_and_random_search_use_a_registered_operation(registered):
    space = nas.SearchSpace(("identity", registered), num_nodes=2)
    config = fuse_config(max_rounds=2, steps_per_round=2, **SIZE)
    fuse = search_options(config, num_candidates=2, max_iterations=2)
    search = nas.fuse_search(space, TRAIN, VAL, key=rbg_key(0), **fuse)
    assert search.genotype in space
    seen = {op for entry in search.history for g in entry["candidates"]
            for op in nas.Genotype.from_json(g).operations}  # fmt: skip
    assert registered in seen
    sample = search_options(random_search_config(num_samples=2, train_steps=2, **SIZE))
    sampled = nas.random_search(space, TRAIN, VAL, key=rbg_key(1), **sample)
    assert sampled.genotype in space


def test_registration_refuses_bad_names_and_broken_factories(registered):
    with pytest.raises(ValueError, match="built-in"):
        nas.register_operation("identity", lambda c, s, **kw: StridedConv(c, s, **kw))
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        nas.register_operation(registered, lambda c, s, **kw: StridedConv(c, s, **kw))
    with pytest.raises(TypeError, match="callable"):
        nas.register_operation("test_not_callable", 3)
    # Ignores the stride: the size contract at stride 2 is broken, named in the error.
    with pytest.raises(ValueError, match=r"at stride 2 must map \(2, 7, 7, 4\) to \(2, 4, 4, 4\)"):
        nas.register_operation("test_no_stride", lambda c, s, **kw: StridedConv(c, 1, **kw))
    assert "test_no_stride" not in nas.registered_operations()
    before = operations.registry_generation()
    nas.register_operation(registered, lambda c, s, **kw: StridedConv(c, s, **kw), replace=True)
    assert operations.registry_generation() == before + 1


def test_the_zoo_finds_and_keeps_an_architecture_with_a_registered_operation(registered):
    from ldnas_jax.data import Split, TaskData
    from ldnas_jax.zoo import ArchitectureOptions, find_task_architecture

    data = TaskData("stripes", 2, Split(*TRAIN), Split(*VAL), Split(*VAL))
    search = random_search_config(num_samples=2, train_steps=2)
    options = ArchitectureOptions(search=search, shared_cells=True)
    space = nas.SearchSpace((registered,), num_nodes=2, shared_cells=True)
    genotype, induced, accuracy, _ = find_task_architecture(
        data, key=jax.random.key(2, impl="rbg"), space=space, options=options, progress=False
    )
    assert genotype == nas.Genotype((registered,), num_nodes=2)
    assert induced.operations == (registered,) and 0.0 <= accuracy <= 1.0
