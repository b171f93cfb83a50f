"""The search space's hand-written backward passes against JAX's own derivatives, in one run.

* ``ldnas_jax.nas.depthwise_conv2d`` is a sum of shifted slices, each times its
  per-channel weight. Differentiated by JAX as written, every slice transposes to a
  padded copy of the input gradient and every kernel entry to a reduction over its own
  materialised slice. The library's ``jax.custom_vjp`` writes the input gradient as one
  more tap sum and reduces the kernel gradient a few images at a time.
* ``ldnas_jax.nas.max_pool`` against ``nn.max_pool``, which JAX differentiates through
  XLA's ``select_and_scatter``.
* ``ldnas_jax.nas.conv2d`` (im2col and one matmul): JAX's derivative forms the kernel
  gradient from the whole batch's patches; the library's reduces it a few images at a
  time (:func:`ldnas_jax.xla_cpu.conv_kernel_gradient`).

Both variants run in one process, alternating round by round, on:

* each operation of the search space that holds one of these, forward and backward, on
  the (64, 32, 32, 8) input of a 2-cell, 8-channel network's first cells;
* one Adam step of a whole 2-cell ``Skeleton`` whose edges use those operations.

Run: ``python -m benchmarks.backward_passes`` (writes ``docs/backward_passes_cpu.json``).
"""

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldnas_jax import nas
from ldnas_jax.nas import convolution, operations

OPERATIONS = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "max_pool_3x3",
    "conv_7x1_1x7",
)


def autodiff_depthwise(x, kernel, strides=1, dilation=1):
    """The library's own forward body (the custom_vjp's ``fun``), left to JAX to differentiate."""
    pair = convolution._pair
    return convolution._depthwise.fun(x, kernel, pair(strides), pair(dilation))


def autodiff_dense(x, kernel, strides=1, dilation=1):
    """The library's im2col body (the custom_vjp's ``fun``), left to JAX to differentiate."""
    pair = convolution._pair
    return convolution._dense.fun(x, kernel, pair(strides), pair(dilation))


def autodiff_max_pool(x, window=3, strides=1):
    """Flax's max pooling, which JAX differentiates through ``select_and_scatter``."""
    return nn.max_pool(x, convolution._pair(window), convolution._pair(strides), padding="SAME")


@contextlib.contextmanager
def autodiff_backward_passes():
    """Operations traced inside the block use the variants that JAX differentiates."""
    library = convolution.depthwise_conv2d, convolution.conv2d, operations.max_pool
    convolution.depthwise_conv2d = autodiff_depthwise
    convolution.conv2d = autodiff_dense
    operations.max_pool = autodiff_max_pool
    try:
        yield
    finally:
        convolution.depthwise_conv2d, convolution.conv2d, operations.max_pool = library


def median_ms(step, args, repeats: int) -> float:
    jax.block_until_ready(step(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def operation_step(name: str, stride: int, x):
    op = nas.make_operation(name, channels=x.shape[-1], stride=stride)
    params = op.init(jax.random.key(1), x)
    loss = lambda params, x: jnp.sum(op.apply(params, x) ** 2)  # noqa: E731
    return jax.jit(jax.grad(loss, argnums=(0, 1))), (params, x)


def network_step(batch: int, channels: int):
    genotype = nas.Genotype(
        (
            "sep_conv_3x3",
            "sep_conv_5x5",
            "dil_conv_3x3",
            "dil_conv_5x5",
            "sep_conv_3x3",
            "identity",
        ),
        num_nodes=4,
    )
    net = nas.Skeleton(genotype, num_classes=10, channels=channels, num_cells=2)
    x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
    y = jnp.arange(batch) % 10
    params = net.init(jax.random.key(1), x)
    optimizer = optax.adam(1e-3)

    def step(params, state, x, y):
        def loss(params):
            logits = net.apply(params, x, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step), (params, optimizer.init(params), x, y)


def compare(build, repeats: int, rounds: int) -> dict:
    """Median milliseconds of each variant over ``rounds`` alternating rounds."""
    times = {"autodiff": [], "hand_written": []}
    for _ in range(rounds):
        for label, context in (
            ("autodiff", autodiff_backward_passes),
            ("hand_written", contextlib.nullcontext),
        ):
            with context():
                step, args = build()
                times[label].append(median_ms(step, args, repeats))
    autodiff, hand = np.median(times["autodiff"]), np.median(times["hand_written"])
    return {
        "autodiff_ms": round(float(autodiff), 2),
        "hand_written_ms": round(float(hand), 2),
        "hand_over_autodiff": round(float(hand / autodiff), 3),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per variant")
    parser.add_argument("--json", default="docs/backward_passes_cpu.json")
    args = parser.parse_args(argv)

    x = jax.random.normal(jax.random.key(0), (args.batch, 32, 32, args.channels))
    rows = {}
    for name in OPERATIONS:
        for stride in (1, 2):
            row = compare(lambda: operation_step(name, stride, x), args.repeats, args.rounds)
            rows[f"{name} stride {stride}"] = row
            print(f"{name:13s} stride {stride}: {row}", flush=True)
    network = compare(lambda: network_step(args.batch, args.channels), args.repeats, args.rounds)
    print(f"Skeleton Adam step: {network}", flush=True)

    result = {
        "command": "python -m benchmarks.backward_passes "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "jax": jax.__version__,
        "input": [args.batch, 32, 32, args.channels],
        "operation_forward_and_backward": rows,
        "skeleton_adam_step": network,
        "load_average_at_end": list(os.getloadavg()),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
