"""Data-parallel placement shared by the Fisher engine and FUSE: which mesh, which axis."""

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh(mesh: Mesh | None, data_axis: str | None, x) -> tuple[Mesh | None, str | None]:
    """The mesh and batch axis to shard over: the given mesh, or the one ``x`` is sharded on."""
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
    return mesh, data_axis


def to_device(mesh: Mesh | None, axis: str | None, *arrays):
    """Host chunks as device arrays; on several processes, each holds its own rows."""
    if mesh is None or jax.process_count() == 1:
        return arrays
    split = NamedSharding(mesh, P(axis))
    return tuple(jax.make_array_from_process_local_data(split, a) for a in arrays)
