"""Epoch seconds of ``train_classifier`` against a hand-written device-resident ``lax.scan`` epoch.

Both train the same model with the same optimiser (Adam, 1e-3) on the same batches
(the permutation ``train_classifier`` draws for each epoch, its ragged tail dropped),
in one process, after a warm-up that compiles everything. The hand-written epoch is
what a JAX user would write: data placed on the device once, one jitted ``lax.scan``
over the epoch's batch indices, the loss summed and right predictions counted on the
device, one read-back per epoch. Its loss goes through ``ld.fast_routes`` as the
library's does, so both run the same arithmetic and the ratio measures the loop alone.

``train_classifier`` is timed as a whole call of ``--epochs`` epochs from given
variables (its input checks, data placement and optimiser init included), divided by
the epochs. With ``--old-ref``, the library's ``train.py`` at that git revision (the
host loop: one batch indexed on the host, sent and read back per step) is timed in the
same run. Repeats are interleaved, so a change in load touches every row alike; the
medians are reported. Two cases: a 2-layer MLP, and a small CNN of the ε-networks'
width (``SmallVGG`` with 8 and 16 channels, BatchNorm).

A third case, ``fuse_rounds``, times FUSE rounds (3 candidates of the demo's size, 8
channels and 2 cells) two ways in one run: each round's batches drawn from NumPy data on
the host and sent to the device (what ``run_fuse`` did before), and drawn from data placed
on the device once (what it does now). Both give the same batches, so the same states.

Run: ``python -m benchmarks.train_loop_speed --json docs/train_loop_speed_cpu.json``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ldnas_jax as ld
from ldnas_jax import train as train_module

# The last revision of ldnas_jax/train.py with the host loop (one step per Python iteration).
HOST_LOOP_REVISION = "fc3867024cccb23e80a5a5ac84adde06f39c27d8"


class TwoLayerMLP(nn.Module):
    """Flatten, Dense(hidden), ReLU, Dense(classes): the issue's 2-layer MLP."""

    num_classes: int = 10
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x.reshape((x.shape[0], -1))))
        return nn.Dense(self.num_classes)(x)


def hand_written_epoch(model: nn.Module, optimizer: optax.GradientTransformation):
    """A device-resident epoch written directly with ``lax.scan``; BatchNorm statistics kept."""
    mode = train_module.mode_kwargs(model, train=True)

    @ld.fast_routes
    def loss_fn(params, others, x, y):
        logits, updates = model.apply(
            {"params": params, **others}, x, mutable=list(others), **mode
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, updates)

    @functools.partial(jax.jit, static_argnames=("steps", "batch"))
    def epoch(params, others, opt_state, x, y, key, epoch_index, *, steps, batch):
        order = jax.random.permutation(jax.random.fold_in(key, epoch_index), x.shape[0])
        batches = order[: steps * batch].reshape(steps, batch)

        def body(carry, index):
            params, others, opt_state, loss_sum, correct = carry
            grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
            (loss, (logits, updates)), grads = grad_fn(params, others, x[index], y[index])
            with jax.numpy_dtype_promotion("standard"):  # Adam's own int32 count arithmetic
                changes, opt_state = optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, changes)
            right = jnp.sum(jnp.argmax(logits, -1) == y[index])
            return (params, dict(updates), opt_state, loss_sum + loss, correct + right), None

        start = (params, others, opt_state, jnp.zeros(()), jnp.zeros((), jnp.int32))
        (params, others, opt_state, loss_sum, correct), _ = jax.lax.scan(body, start, batches)
        return params, others, opt_state, loss_sum, correct

    return epoch


def old_train_module(revision: str):
    """``ldnas_jax/train.py`` at ``revision``, imported as a module of its own (or None)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{revision}:ldnas_jax/train.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"no old loop: git show {revision} failed ({error})", file=sys.stderr)
        return None
    path = Path(tempfile.mkdtemp()) / "train_host_loop.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("train_host_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_case(name, model, image_shape, args, old) -> dict:
    examples = args.steps * args.batch_size
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, *image_shape)).astype(np.float32)
    y = rng.integers(0, 10, examples).astype(np.int32)
    key = jax.random.key(0)
    variables = train_module.init_variables(model, jax.random.split(key)[0], x)
    optimizer = optax.adam(1e-3)
    options = dict(
        key=key,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=optimizer,
        variables=variables,
        progress=False,
    )

    def library():
        return train_module.train_classifier(model, (x, y), **options)

    def host_loop():
        return old.train_classifier(model, (x, y), **options)

    epoch = hand_written_epoch(model, optimizer)
    shuffle_key = jax.random.split(key)[1]

    def hand_written():
        params = variables["params"]
        others = {k: v for k, v in variables.items() if k != "params"}
        opt_state = optimizer.init(params)
        xd, yd = jax.device_put(x), jax.device_put(y)
        history = []
        for e in range(args.epochs):
            params, others, opt_state, loss_sum, correct = epoch(
                params, others, opt_state, xd, yd, shuffle_key, np.int32(e),
                steps=args.steps, batch=args.batch_size,
            )
            history.append((float(loss_sum) / args.steps, int(correct)))  # one read-back
        return {"params": params, **others}, history

    rows = {"train_classifier": library, "hand_written_scan": hand_written}
    if old is not None:
        rows["host_loop_before"] = host_loop
    # Warm-up: compile every program; the two device loops must agree on the result.
    results = {row: fn() for row, fn in rows.items()}
    ours, (theirs, _) = results["train_classifier"].variables, results["hand_written_scan"]
    max_diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs))
    )
    seconds = {row: [] for row in rows}
    for _ in range(args.repeats):
        for row, fn in rows.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            seconds[row].append((time.perf_counter() - start) / args.epochs)
    medians = {row: statistics.median(values) for row, values in seconds.items()}
    # On a loaded machine the fastest repeat is the least disturbed one: reported beside.
    minima = {row: min(values) for row, values in seconds.items()}
    reference = medians["hand_written_scan"]
    report = {
        "model": name,
        "image_shape": list(image_shape),
        "parameters": int(sum(np.size(p) for p in jax.tree.leaves(variables["params"]))),
        "epoch_seconds_median": {row: round(v, 5) for row, v in medians.items()},
        "epoch_seconds_all": {row: [round(v, 5) for v in vs] for row, vs in seconds.items()},
        "ratio_to_hand_written_scan": {row: round(v / reference, 3) for row, v in medians.items()},
        "epoch_seconds_min": {row: round(v, 5) for row, v in minima.items()},
        "ratio_of_minima_to_hand_written_scan": {
            row: round(v / minima["hand_written_scan"], 3) for row, v in minima.items()
        },
        "max_abs_difference_of_variables_library_vs_hand_written": max_diff,
    }
    if old is not None:
        report["speed_up_over_host_loop"] = round(
            medians["host_loop_before"] / medians["train_classifier"], 2
        )
        report["speed_up_over_host_loop_of_minima"] = round(
            minima["host_loop_before"] / minima["train_classifier"], 2
        )
    return report


def run_fuse_rounds_case(args) -> dict:
    """Seconds per FUSE round, batches gathered on the host against on the device."""
    from ldnas_jax import nas

    rounds, steps, batch = args.epochs * 4, 10, 32
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 28, 28, 3)).astype(np.float32)
    y = rng.integers(0, 10, 1200).astype(np.int32)
    space = nas.SearchSpace(nas.SEARCHABLE_OPERATIONS)
    mixture = nas.CandidateMixture(
        space.sample(jax.random.key(0), 3), 10, channels=8, num_cells=2,
        operations=space.operations,
    )
    w_opt, a_opt = nas.default_weight_optimizer(), nas.default_alpha_optimizer()
    round_fn = nas.make_fuse_round(mixture, w_opt, a_opt)
    start_state = nas.init_fuse_state(mixture, jax.random.key(1), x[:1], w_opt, a_opt)
    on_device = jax.device_put((x, y))

    def run(data):
        state = start_state
        for key in jax.random.split(jax.random.key(2), rounds):
            train_key, val_key = jax.random.split(key)
            train = nas.draw_batches(train_key, *data, steps, batch)
            val = nas.draw_batches(val_key, *data, steps, batch)
            state, metrics = round_fn(state, train, val, np.bool_(True))
            np.asarray(metrics["alpha"])  # the stopping rule reads α every round
        return state

    rows = {"batches_from_host_data_before": lambda: run((x, y)),
            "batches_from_device_data": lambda: run(on_device)}
    results = {row: fn() for row, fn in rows.items()}  # warm-up; both must agree
    same = all(
        bool(np.array_equal(a, b))
        for a, b in zip(*(jax.tree.leaves(r.params) for r in results.values()))
    )
    seconds = {row: [] for row in rows}
    for _ in range(args.repeats):
        for row, fn in rows.items():
            begin = time.perf_counter()
            jax.block_until_ready(fn().params)
            seconds[row].append((time.perf_counter() - begin) / rounds)
    medians = {row: statistics.median(v) for row, v in seconds.items()}
    return {
        "model": "fuse_rounds",
        "settings": {"rounds_per_call": rounds, "steps_per_phase": steps, "batch_size": batch,
                     "candidates": 3, "channels": 8, "cells": 2, "examples": len(x)},
        "round_seconds_median": {row: round(v, 5) for row, v in medians.items()},
        "round_seconds_all": {row: [round(v, 5) for v in vs] for row, vs in seconds.items()},
        "device_over_host_median": round(
            medians["batches_from_device_data"] / medians["batches_from_host_data_before"], 3
        ),
        "same_parameters_both_ways": same,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed call")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cases", default="mlp,small_cnn,fuse_rounds")
    parser.add_argument(
        "--old-ref",
        default=HOST_LOOP_REVISION,
        help="git revision of the host loop to time beside them ('' to skip)",
    )
    parser.add_argument("--json", default=None, help="write the report here")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    old = old_train_module(args.old_ref) if args.old_ref else None
    models = {
        "mlp": (TwoLayerMLP(), (8, 8, 3)),
        "small_cnn": (ld.SmallVGG(10, features=(8, 16), hidden=32), (16, 16, 3)),
    }
    cases = []
    for name in args.cases.split(","):
        if name == "fuse_rounds":
            cases.append(run_fuse_rounds_case(args))
            print(f"fuse_rounds: round seconds {cases[-1]['round_seconds_median']}; device "
                  f"over host {cases[-1]['device_over_host_median']}x")
            continue
        model, shape = models[name]
        case = run_case(name, model, shape, args, old)
        cases.append(case)
        for label, key in (("median", "ratio_to_hand_written_scan"),
                           ("min", "ratio_of_minima_to_hand_written_scan")):
            ratios = "  ".join(f"{row} {v:.2f}x" for row, v in case[key].items())
            print(f"{name} ({label}s): epoch seconds {case['epoch_seconds_' + label]}; "
                  f"ratio to the hand-written scan: {ratios}")
    report = {
        "command": "python -m benchmarks.train_loop_speed " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "device": str(jax.devices()[0]),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "settings": {
            "steps_per_epoch": args.steps,
            "batch_size": args.batch_size,
            "epochs_per_call": args.epochs,
            "repeats": args.repeats,
            "optimizer": "optax.adam(1e-3)",
            "host_loop_revision": args.old_ref or None,
        },
        "cases": cases,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
