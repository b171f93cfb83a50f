"""Two processes with two CPU devices each stand in for two hosts (docs/multi_host.md).

The workers (``_multi_process_worker.py``) join through ``jax.distributed.initialize`` on
localhost and each feeds its own share of the data; their results are compared with runs in
this one process on the union of the data, computed while the workers run.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import _multi_process_worker as worker
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldnas_jax as ld
from ldnas_jax.nas import batching, fuse
from ldnas_jax.nas.mixture import CandidateMixture

pytestmark = pytest.mark.slow  # several processes joined over Gloo

NUM_PROCESSES = 2
TIMEOUT_S = 240  # generous: on a loaded machine both workers compile at once
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(out: Path, stack: contextlib.ExitStack) -> list[subprocess.Popen]:
    """Launches the workers; leaving ``stack`` kills any that still run."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, str(REPO / "tests" / "_multi_process_worker.py"), str(free_port())]
    processes = []
    for i in range(NUM_PROCESSES):
        log = stack.enter_context(open(out / f"log_{i}.txt", "w"))  # noqa: SIM115
        processes.append(
            subprocess.Popen(
                [*command, str(NUM_PROCESSES), str(i), str(out)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        stack.callback(stop, processes[-1])
    return processes


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def finish_workers(processes: list[subprocess.Popen], out: Path, deadline: float) -> list[dict]:
    """Every process's results, or a failure that shows the workers' logs."""
    try:
        for p in processes:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers did not finish in {TIMEOUT_S} s\n{logs(out)}")
    codes = [p.returncode for p in processes]
    assert codes == [0] * NUM_PROCESSES, f"worker exit codes {codes}\n{logs(out)}"
    return [dict(np.load(out / f"process_{i}.npz")) for i in range(NUM_PROCESSES)]


def logs(out: Path) -> str:
    return "\n".join(
        f"--- process {i} ---\n" + (out / f"log_{i}.txt").read_text()[-3000:]
        for i in range(NUM_PROCESSES)
    )


def test_two_processes_equal_one_process(tmp_path):
    """One test, so that pytest-xdist launches the workers once, not once per test runner."""
    if "jax_cpu_collectives_implementation" not in jax.config.values:
        pytest.skip(f"jax {jax.__version__} has no CPU collectives across processes")
    with contextlib.ExitStack() as stack:
        processes = start_workers(tmp_path, stack)
        deadline = time.monotonic() + TIMEOUT_S
        expected = {
            **empirical_fisher_on_the_union(),
            **sampled_fisher_by_a_per_example_loop(),
            **fuse_fed_the_same_global_batches(),
        }
        results = finish_workers(processes, tmp_path, deadline)

    first, *others = results
    assert first["num_devices"] == 4 and first["num_local_devices"] == 2
    for other in others:  # every process returns the same replicated results
        assert sorted(other) == sorted(first)
        for name in first:
            if name != "mismatched_key_error":
                np.testing.assert_array_equal(other[name], first[name], err_msg=name)
    for result in results:  # the library refuses keys that differ between processes
        assert "not the same on each process" in str(result["mismatched_key_error"])

    for name in expected:
        assert name in first, name
    for name in (n for n in expected if n.startswith("fisher_")):
        a, e = first[name].astype(np.float64), expected[name].astype(np.float64)
        rel = np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30)
        assert rel <= 1e-5, f"{name}: relative error {rel:.2e}"
    for name in (n for n in expected if n.startswith("fuse_")):
        np.testing.assert_allclose(first[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert first["fuse_winner_index"] == int(np.argmax(expected["fuse_alpha_history"][-1]))


def empirical_fisher_on_the_union() -> dict:
    apply_fn, params, x, y = worker.fisher_problem()
    return worker.flat(ld.fisher_diagonal(apply_fn, params, (x, y)), "fisher_empirical")


def sampled_fisher_by_a_per_example_loop() -> dict:
    """Row j of process p's k-th chunk draws its label with fold_in(key, (k * P + p) * chunk + j)."""
    apply_fn, params, x, y = worker.fisher_problem()
    key = jax.random.key(worker.SAMPLED_KEY_SEED)

    @jax.jit
    def squared_grad(x_i, example_key):
        logits = apply_fn(params, x_i[None])[0]
        label = jax.random.categorical(example_key, logits, shape=(1,))[0]
        log_p = lambda p: jax.nn.log_softmax(apply_fn(p, x_i[None])[0])[label]
        return jax.tree.map(jnp.square, jax.grad(log_p)(params))

    chunk, total = worker.FISHER_CHUNK, None
    for p in range(NUM_PROCESSES):
        k = 0  # this process's chunk count
        for x_batch, _ in worker.local_batches(x, y, p, NUM_PROCESSES):
            for start in range(0, len(x_batch), chunk):
                for j, x_i in enumerate(x_batch[start : start + chunk]):
                    index = (k * NUM_PROCESSES + p) * chunk + j
                    g = squared_grad(x_i, jax.random.fold_in(key, index))
                    total = g if total is None else jax.tree.map(jnp.add, total, g)
                k += 1
    return worker.flat(jax.tree.map(lambda s: s / len(x), total), "fisher_sampled")


def fuse_fed_the_same_global_batches() -> dict:
    """FUSE on one device, each global batch being process 0's draw then process 1's.

    As in ``run_fuse`` on several processes: process p walks its share with the batch-order
    key folded with p, and draws ``batch_size / P`` rows per step.
    """
    options = worker.FUSE_OPTIONS
    steps, rounds = options["steps_per_round"], options["max_rounds"]
    local_batch = options["batch_size"] // NUM_PROCESSES
    (x_tr, y_tr), (x_val, y_val) = worker.fuse_data()
    mixture = CandidateMixture(
        worker.fuse_candidates(),
        options["num_classes"],
        options["channels"],
        options["num_cells"],
        options["reduction_positions"],
    )
    w_opt, a_opt = fuse.default_weight_optimizer(), fuse.default_alpha_optimizer()
    init_key, key = jax.random.split(worker.fuse_key())
    state = fuse.init_fuse_state(mixture, init_key, x_tr[:1], w_opt, a_opt)
    round_fn = fuse.make_fuse_round(mixture, w_opt, a_opt)
    round_keys = [
        jax.random.split(jax.random.fold_in(key, p), rounds) for p in range(NUM_PROCESSES)
    ]
    alphas, train_losses, val_losses = [], [], []
    for r in range(rounds):  # patience_k > max_rounds: every round runs
        train, val = [], []
        for p in range(NUM_PROCESSES):
            train_key, val_key = jax.random.split(round_keys[p][r])
            share = slice(p, None, NUM_PROCESSES)
            draw = batching.draw_batches
            train.append(draw(train_key, x_tr[share], y_tr[share], steps, local_batch))
            val.append(draw(val_key, x_val[share], y_val[share], steps, local_batch))
        joined = [tuple(np.concatenate(parts, axis=1) for parts in zip(*b)) for b in (train, val)]
        state, metrics = round_fn(state, *joined, True)
        alphas.append(np.asarray(metrics["alpha"]))
        train_losses.append(float(np.mean(metrics["train_loss"])))
        val_losses.append(float(np.mean(metrics["val_loss"])))
    return {
        **worker.flat(state.params, "fuse_params"),
        "fuse_alpha_history": np.stack(alphas),
        "fuse_train_loss_history": np.asarray(train_losses),
        "fuse_val_loss_history": np.asarray(val_losses),
    }
