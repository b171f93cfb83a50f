"""fisher_diagonal over a 4-device mesh (forced CPU devices, see conftest) equals one device."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import ldnas_jax as ld


class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x)))
        x = nn.Conv(5, (3, 3), strides=(2, 2))(x)
        return nn.Dense(3)(jnp.mean(nn.relu(x), axis=(1, 2)))


@pytest.fixture(scope="module")
def setup():
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=4)")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(11, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=11)
    model = ConvBN()
    variables = ld.train.init_variables(model, jax.random.key(0), x)
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    return ld.eval_apply_fn(model, variables), variables["params"], x, y, mesh


def _assert_close(actual, expected, rtol=1e-5):
    for (path, a), e in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        rel = np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30)
        assert rel <= rtol, f"{jax.tree_util.keystr(path)}: relative error {rel:.2e}"


@pytest.mark.parametrize("estimator", ["empirical", "exact"])
def test_sharded_equals_single_device(setup, estimator):
    apply_fn, params, x, y, mesh = setup
    single = ld.fisher_diagonal(apply_fn, params, (x, y), estimator=estimator, chunk_size=6)
    # chunk_size 6 rounds up to 8 (2 rows per device); the last chunk has 3 rows + 5 padded.
    sharded = ld.fisher_diagonal(
        apply_fn, params, (x, y), estimator=estimator, chunk_size=6, mesh=mesh
    )
    _assert_close(sharded, single)
    for leaf in jax.tree.leaves(sharded):
        assert leaf.sharding.is_fully_replicated


def test_inputs_already_sharded_pick_the_mesh(setup):
    apply_fn, params, x, y, mesh = setup
    xs = jax.device_put(x[:8], NamedSharding(mesh, P("data")))
    single = ld.fisher_diagonal(apply_fn, params, (x[:8], y[:8]), method="vmap")
    sharded = ld.fisher_diagonal(apply_fn, params, (xs, y[:8]), method="vmap")
    _assert_close(sharded, single)
    assert len(jax.tree.leaves(sharded)[0].sharding.device_set) == 4


def test_bad_mesh_arguments_error(setup):
    apply_fn, params, x, y, mesh = setup
    with pytest.raises(ValueError, match="not an axis"):
        ld.fisher_diagonal(apply_fn, params, (x, y), mesh=mesh, data_axis="model")
    with pytest.raises(TypeError, match="Mesh"):
        ld.fisher_diagonal(apply_fn, params, (x, y), mesh="data")


@pytest.mark.parametrize("pass_mesh", [True, False])
def test_inputs_placed_on_a_make_mesh_mesh_by_the_user(setup, pass_mesh):
    """jax.make_mesh gives explicit axes; x and y already on NamedSharding(mesh, P("data"))."""
    apply_fn, params, x, y, _ = setup
    mesh = jax.make_mesh((4,), ("data",))
    xs = jax.device_put(x[:8], NamedSharding(mesh, P("data")))
    ys = jax.device_put(y[:8], NamedSharding(mesh, P("data")))
    single = ld.fisher_diagonal(apply_fn, params, (x[:8], y[:8]))
    sharded = ld.fisher_diagonal(
        apply_fn, params, (xs, ys), **({"mesh": mesh} if pass_mesh else {})
    )
    _assert_close(sharded, single)
    assert len(jax.tree.leaves(sharded)[0].sharding.device_set) == 4
