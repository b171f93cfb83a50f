"""One process of the multi-process run in ``tests/test_multi_process.py``; not a test itself.

Usage: ``python tests/_multi_process_worker.py PORT NUM_PROCESSES PROCESS_ID OUT_DIR``, with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` in the environment. Each process joins
the coordinator on ``127.0.0.1:PORT``, takes its own share of the data (rows
``PROCESS_ID::NUM_PROCESSES``), runs ``fisher_diagonal`` and ``run_fuse`` over the mesh of all
processes' devices, and writes what it returned to ``OUT_DIR/process_<PROCESS_ID>.npz``.

The problem (model, data, options) is defined here once, so that the test computes its
single-process references on exactly the same inputs.
"""

import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

# --- the shared problem ---------------------------------------------------------------------

FISHER_ROWS = 14  # 7 rows per process: with chunk_size 2, the last chunk of each batch is ragged
FISHER_CHUNK = 2  # rows per process per chunk
SAMPLED_KEY_SEED = 3
FUSE_OPTIONS = {
    "num_classes": 2,
    "max_rounds": 3,
    "patience_k": 5,
    "steps_per_round": 1,  # a scan of one step compiles in half the time of two
    "batch_size": 8,  # the global batch: 4 rows per process, 2 per device
    "progress": False,
    "channels": 4,
    "num_cells": 1,
    "reduction_positions": (),
}
FUSE_KEY_SEED = 0


class ConvNet(nn.Module):
    """A convolution and a dense layer: both Fisher engines' layer kinds, compiled quickly."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(3, (3, 3), strides=(2, 2))(x))
        return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


def fisher_problem():
    """The model's ``apply_fn``, its ``params`` and the global data ``(x, y)`` as NumPy."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(FISHER_ROWS, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=FISHER_ROWS).astype(np.int32)
    model = ConvNet()
    params = jax.jit(model.init)(jax.random.key(0), x[:1])["params"]  # one compile, not one per op
    return (lambda p, xb: model.apply({"params": p}, xb)), params, x, y


def local_batches(x, y, process_id: int, num_processes: int):
    """A process's share, rows ``process_id::num_processes``, as two batches (4 and 3 rows)."""
    xs, ys = x[process_id::num_processes], y[process_id::num_processes]
    return [(xs[:4], ys[:4]), (xs[4:], ys[4:])]


def fuse_candidates():
    from ldnas_jax import nas

    # One-edge cells without a reduction cell: the cheapest mixture to compile on CPU.
    return (nas.Genotype(("avg_pool_3x3",), num_nodes=2), nas.Genotype(("identity",), num_nodes=2))


def stripes(seed: int, n: int, size: int = 8):
    """Horizontal (label 0) or vertical (label 1) stripes plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    rows = np.broadcast_to((np.arange(size) % 2)[:, None], (size, size))
    x = np.where(y[:, None, None] == 0, rows, rows.T)[..., None].repeat(3, axis=-1)
    return (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32), y.astype(np.int32)


def fuse_data():
    """Global ``train`` and ``val`` pairs; process ``p`` takes rows ``p::num_processes``."""
    return stripes(0, 16), stripes(1, 16)


def fuse_key():
    return jax.random.key(FUSE_KEY_SEED, impl="rbg")  # cheaper to compile than threefry on CPU


def flat(tree, prefix: str) -> dict[str, np.ndarray]:
    """A pytree's leaves as host arrays named ``prefix`` + their key path."""
    return {
        prefix + jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


# --- the worker -----------------------------------------------------------------------------


def main(port: int, num_processes: int, process_id: int, out_dir: str) -> None:
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=60,
    )
    import ldnas_jax as ld
    from ldnas_jax import nas

    assert jax.process_count() == num_processes and jax.process_index() == process_id
    mesh = Mesh(np.array(jax.devices()), ("data",))
    out, times = {}, {}

    apply_fn, params, x, y = fisher_problem()
    batches = local_batches(x, y, process_id, num_processes)
    # Both engines: the layer-wise one ("auto" picks it here), and vmap, quicker to compile.
    for estimator, key, method in (
        ("empirical", None, "auto"),
        ("sampled", jax.random.key(SAMPLED_KEY_SEED), "vmap"),
    ):
        start = time.perf_counter()
        fisher = ld.fisher_diagonal(
            apply_fn, params, batches, estimator=estimator, key=key,
            chunk_size=FISHER_CHUNK, method=method, mesh=mesh,
        )  # fmt: skip
        times[estimator] = time.perf_counter() - start
        out.update(flat(fisher, f"fisher_{estimator}"))

    try:  # jit would take each process's own key; the library must refuse the mismatch
        ld.fisher_diagonal(
            apply_fn, params, batches, estimator="sampled", key=jax.random.key(process_id),
            chunk_size=FISHER_CHUNK, method="vmap", mesh=mesh,
        )  # fmt: skip
        out["mismatched_key_error"] = np.asarray("")
    except Exception as err:  # noqa: BLE001 - the test checks what was raised
        out["mismatched_key_error"] = np.asarray(f"{type(err).__name__}: {err}")

    (x_tr, y_tr), (x_val, y_val) = fuse_data()
    share = slice(process_id, None, num_processes)
    start = time.perf_counter()
    result = nas.run_fuse(
        fuse_candidates(),
        (x_tr[share], y_tr[share]),
        (x_val[share], y_val[share]),
        key=fuse_key(),
        mesh=mesh,
        **FUSE_OPTIONS,
    )
    times["fuse"] = time.perf_counter() - start
    out.update(flat(result.params, "fuse_params"))
    out["fuse_alpha_history"] = result.alpha_history
    out["fuse_val_loss_history"] = result.val_loss_history
    out["fuse_train_loss_history"] = result.train_loss_history
    out["fuse_winner_index"] = np.asarray(result.winner_index)
    out["num_devices"] = np.asarray(len(jax.devices()))
    out["num_local_devices"] = np.asarray(len(jax.local_devices()))
    np.savez(f"{out_dir}/process_{process_id}.npz", **out)
    print(f"process {process_id}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
