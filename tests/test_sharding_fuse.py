"""run_fuse over a 4-device mesh (forced CPU devices, see conftest) equals one device."""

import jax
import numpy as np
import pytest
from _toy_tasks import rbg_key, stripes
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ldnas_jax import nas
from ldnas_jax.nas import fuse

# One-edge cells without a reduction cell: the cheapest mixture to compile on CPU.
POOL = nas.Genotype(("avg_pool_3x3",), num_nodes=2)
IDENTITY = nas.Genotype(("identity",), num_nodes=2)
CONFIG = nas.FuseConfig(
    max_rounds=3,
    patience_k=5,
    steps_per_round=3,
    batch_size=16,
    channels=4,
    num_cells=1,
    reduction_positions=(),
)
OPTIONS = {"num_classes": 2, "progress": False, "config": CONFIG}


TRAIN, VAL = stripes(0, 64), stripes(1, 32)


MAKE_FUSE_ROUND = fuse.make_fuse_round


class Recorder:
    """Stands in for ``make_fuse_round`` to keep what run_fuse compiles and feeds it."""

    def __init__(self, stop=False):
        self.stop, self.kwargs, self.round_fn, self.args = stop, None, None, None

    def __call__(self, *args, **kwargs):
        self.kwargs, self.round_fn = kwargs, MAKE_FUSE_ROUND(*args, **kwargs)

        def round_fn(*round_args):
            if self.args is None:
                self.args = round_args
            if self.stop:
                raise StopIteration  # the placement is all we wanted to see
            return self.round_fn(*round_args)

        return round_fn


@pytest.fixture(scope="module")
def mesh():
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
    return Mesh(np.array(jax.devices()[:4]), ("data",))


@pytest.fixture(scope="module")
def runs(mesh):
    single = nas.run_fuse((POOL, IDENTITY), TRAIN, VAL, key=rbg_key(0), **OPTIONS)
    recorder = Recorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fuse, "make_fuse_round", recorder)
        sharded = nas.run_fuse((POOL, IDENTITY), TRAIN, VAL, key=rbg_key(0), mesh=mesh, **OPTIONS)
    return single, sharded, recorder


def test_sharded_run_equals_single_device(runs):
    single, sharded, _ = runs
    assert sharded.rounds_run == single.rounds_run == 3
    np.testing.assert_allclose(sharded.alpha_history, single.alpha_history, rtol=1e-5, atol=1e-6)
    assert sharded.winner_index == single.winner_index == int(np.argmax(single.alpha_history[-1]))
    assert sharded.winner == single.winner
    np.testing.assert_allclose(sharded.val_loss_history, single.val_loss_history, rtol=1e-5)
    leaves_single, leaves_sharded = jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)
    assert len(leaves_single) == len(leaves_sharded)
    for a, b in zip(leaves_sharded, leaves_single):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        assert len(a.sharding.device_set) == 4 and a.sharding.is_fully_replicated


def test_batches_are_split_over_the_four_devices(runs, mesh):
    _, _, recorder = runs
    assert recorder.kwargs == {"mesh": mesh, "data_axis": "data", "weight_loss": "mixture"}
    state, (xs, ys), (val_xs, _), _ = recorder.args
    for batch in (xs, ys, val_xs):
        assert batch.sharding == NamedSharding(mesh, P(None, "data"))
        # Each device holds a quarter of every step's 16 examples.
        assert sorted(s.data.shape[:2] for s in batch.addressable_shards) == [(3, 4)] * 4
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state))
    compiled = recorder.round_fn.lower(*recorder.args).compile()
    _, (xs_sharding, _), _, _ = compiled.input_shardings[0]
    assert xs_sharding.spec == P(None, "data") and len(xs_sharding.device_set) == 4
    assert "all-reduce" in compiled.as_text()  # the gradient mean is reduced across devices


def test_inputs_already_sharded_pick_the_mesh(mesh, monkeypatch):
    recorder = Recorder(stop=True)
    monkeypatch.setattr(fuse, "make_fuse_round", recorder)
    x = jax.device_put(TRAIN[0], NamedSharding(mesh, P("data")))
    with pytest.raises(StopIteration):
        nas.run_fuse((POOL, IDENTITY), (x, TRAIN[1]), VAL, key=rbg_key(0), **OPTIONS)
    assert recorder.kwargs == {"mesh": mesh, "data_axis": "data", "weight_loss": "mixture"}
    _, (xs, _), _, _ = recorder.args
    assert xs.sharding == NamedSharding(mesh, P(None, "data"))


def test_fuse_search_forwards_the_mesh(mesh, monkeypatch):
    recorder = Recorder(stop=True)
    monkeypatch.setattr(fuse, "make_fuse_round", recorder)
    space = nas.SearchSpace(("identity", "avg_pool_3x3"), num_nodes=2)
    search = {"num_candidates": 1, "max_iterations": 1, "config": CONFIG._replace(mesh=mesh)}
    with pytest.raises(StopIteration):
        nas.fuse_search(space, TRAIN, VAL, key=rbg_key(0), num_classes=2, progress=False, **search)
    assert recorder.kwargs == {"mesh": mesh, "data_axis": "data", "weight_loss": "mixture"}
    _, (xs, _), _, _ = recorder.args
    assert xs.sharding == NamedSharding(mesh, P(None, "data"))


def test_batch_size_must_split_over_the_devices(mesh):
    options = {**OPTIONS, "config": CONFIG._replace(batch_size=18, mesh=mesh)}
    with pytest.raises(ValueError, match="batch_size 18 must be a multiple of the 4 devices"):
        nas.run_fuse((POOL, IDENTITY), TRAIN, VAL, key=rbg_key(0), **options)


def test_bad_mesh_arguments_error(mesh):
    with pytest.raises(ValueError, match="not an axis"):
        nas.run_fuse(
            (POOL, IDENTITY), TRAIN, VAL, key=rbg_key(0), mesh=mesh, data_axis="model", **OPTIONS
        )
    with pytest.raises(TypeError, match="Mesh"):
        nas.run_fuse((POOL, IDENTITY), TRAIN, VAL, key=rbg_key(0), mesh="data", **OPTIONS)


@pytest.mark.parametrize("pass_mesh", [True, False], ids=["mesh-given", "mesh-from-inputs"])
def test_inputs_placed_by_the_user_on_the_mesh(runs, mesh, pass_mesh):
    """x and y of both splits on NamedSharding(mesh, P("data")): the whole run equals one device."""
    single, _, _ = runs
    placed = NamedSharding(mesh, P("data"))
    train, val = (tuple(jax.device_put(a, placed) for a in pair) for pair in (TRAIN, VAL))
    options = {**OPTIONS, "config": CONFIG._replace(mesh=mesh)} if pass_mesh else OPTIONS
    result = nas.run_fuse((POOL, IDENTITY), train, val, key=rbg_key(0), **options)
    np.testing.assert_allclose(result.alpha_history, single.alpha_history, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.val_loss_history, single.val_loss_history, rtol=1e-5)
    assert result.winner == single.winner
    for leaf in jax.tree.leaves(result.params):
        assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated
