"""Data-parallel placement shared by the Fisher engine and FUSE: which mesh, which axis."""

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh(mesh: Mesh | None, data_axis: str | None, x) -> tuple[Mesh | None, str | None]:
    """The mesh and batch axis to shard over: the given mesh, or the one ``x`` is sharded on.

    The mesh comes back with ``Auto`` axes. ``jax.make_mesh`` makes ``Explicit`` ones,
    whose shardings are part of an array's type; the data-parallel steps place their
    inputs themselves (``shard_map`` over the batch axis) and would otherwise refuse
    arrays typed as replicated.

    Example:
      >>> mesh, axis = data_mesh(jax.make_mesh((1,), ("data",)), None, None)
      >>> axis, mesh.axis_types
      ('data', (Auto,))
    """
    if mesh is None:
        sharding = getattr(x, "sharding", None)
        if (
            isinstance(sharding, NamedSharding)
            and len(sharding.spec)
            and sharding.spec[0] is not None
        ):
            spec0 = sharding.spec[0]
            mesh, data_axis = sharding.mesh, (spec0 if isinstance(spec0, str) else spec0[0])
        else:
            return None, None
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if data_axis is None:
        data_axis = "data" if "data" in mesh.axis_names else mesh.axis_names[0]
    if data_axis not in mesh.axis_names:
        raise ValueError(f"data_axis {data_axis!r} is not an axis of the mesh {mesh.axis_names}")
    if any(t != AxisType.Auto for t in mesh.axis_types):
        mesh = Mesh(
            mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names)
        )
    return mesh, data_axis


def replicate(mesh: Mesh, tree):
    """``tree``'s host values replicated over ``mesh``.

    On several processes ``device_put`` raises unless every process passes the same values,
    a check that ``jit`` does not make for the inputs it is told are replicated.
    """
    return jax.device_put(jax.device_get(tree), NamedSharding(mesh, P()))


def replicate_key(mesh: Mesh, key: jax.Array) -> jax.Array:
    """A PRNG key, typed or raw, replicated over ``mesh`` and checked like :func:`replicate`."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return replicate(mesh, key)
    # Typed keys cannot be put on other processes' devices; their raw data can.
    data = replicate(mesh, jax.random.key_data(key))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))


def to_device(mesh: Mesh | None, axis: str | None, *arrays):
    """Host chunks as device arrays; on several processes, each holds its own rows."""
    if mesh is None or jax.process_count() == 1:
        return arrays
    split = NamedSharding(mesh, P(axis))
    return tuple(jax.make_array_from_process_local_data(split, a) for a in arrays)
