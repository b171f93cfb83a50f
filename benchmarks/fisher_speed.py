"""Diagonal-Fisher speed and memory: ldnas_jax against per-example baselines and PyTorch.

Run ``python -m benchmarks.fisher_speed`` (add ``--quick`` for a short run, ``--json PATH``
to save the figures, ``--models small_cnn,vgg16`` and ``--approaches ...`` to choose,
``--batch-sizes 32,128`` to measure at several batch sizes, ``--reps N`` to set the timed
repetitions).

The PyTorch Fisher rows are the tools a PyTorch user would pick for this quantity: a
per-example loop, ``torch.func``'s ``vmap(grad)``, BackPACK's ``SumGradSquared`` (squared
per-example gradients summed inside one extended backward pass) and Opacus's
``GradSampleModule`` (per-sample gradients from layer hooks, squared and summed); they need
the ``bench`` extra (``pip install -e ".[bench]"``). ``torch.func`` and Opacus hold every
example's gradient at once, so on VGG-16 they take the batch in chunks of
``PER_EXAMPLE_CHUNK`` examples. The closing summary sets the library against the best of
the four at each model and batch size. ``FISHER_SPEED_THREADS`` sets PyTorch's threads
(default: every core); on a loaded machine one thread keeps its OpenMP pool from stalling
(small CNN, batch 32, load 11 on 2 cores: torch.func 7.7 ex/s on 2 threads, 252 on 1).

Each model is also written as a plain function of a dict of arrays and in Flax NNX
(:mod:`benchmarks._models`): ``fisher_diagonal`` reads the traced program, so those run
the same layer-wise engine as the linen model. The **first call** column is the
warm-up call's time (trace, plan and compile included), and the targets section
compares it between the fast path and the library's vmap path.

Every approach runs in its own subprocess, so that its peak memory can be read
off: **peak RSS delta** is the process's peak resident set size (``ru_maxrss``)
minus its RSS after imports, model and data were set up and before the
approach's first (compiling) call. For JAX approaches the table also gives
**XLA temp**: the scratch memory XLA plans for one compiled step
(``memory_analysis().temp_size_in_bytes``), which is what ``chunk_size`` bounds;
on a GPU it is device memory, while RSS is host memory.

Throughput is examples/s of the *empirical* diagonal Fisher (one label per
example), best of the timed repetitions, after one warm-up call that compiles
(excluded), timed with ``block_until_ready``. The batched gradient (mean
cross-entropy over the batch, not a Fisher) is the floor, shown both with flax's
plain convolutions and through :func:`ldnas_jax.fast_routes` (convolutions as matmuls
where that was timed faster, once per layer shape, and tiling max pooling differentiated
through a mask), the route the library's own training steps take, and with the former
fixed rule (matmul for maps of at most 16 positions); both are also compared with
PyTorch's batched gradient, which is a training step's cost.
The ``memory`` section streams 1k and 10k examples through ``fisher_diagonal``
(fixed ``chunk_size``) and reports the peak RSS delta of each (8×8 inputs
with ``--quick``, 32×32 otherwise). With ``--quick`` the approaches of one
framework share a subprocess, so only the first one's peak RSS is shown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings

MODELS = ("small_cnn", "vgg16")
# The JAX Fisher rows: per-example loops and vmaps, and the library's own.
JAX_FISHERS = (
    "jax_loop",
    "jax_vmap",
    "jax_vmap_chunked",
    "library",
    "library_pure_function",
    "library_nnx",
)
JAX_APPROACHES = (
    *JAX_FISHERS,
    "batched_grad",
    "batched_grad_threshold",
    "batched_grad_two_routes",
    "batched_grad_fast_routes",
)
# The PyTorch Fisher rows; the library is set against the best of them.
TORCH_FISHERS = ("torch_loop", "torch_func", "torch_backpack", "torch_opacus")
TORCH_APPROACHES = (*TORCH_FISHERS, "torch_batched")
FISHER_APPROACHES = (*JAX_FISHERS, *TORCH_FISHERS)
# Largest number of examples whose full per-example gradients torch.func and Opacus hold at
# once: VGG-16's are 59 MB an example, so a batch of 128 would take 7.5 GB.
PER_EXAMPLE_CHUNK = {"small_cnn": None, "vgg16": 32}
LABELS = {
    "jax_loop": "JAX per-example loop (jit grad)",
    "jax_vmap": "JAX jit(vmap(grad)), unchunked",
    "jax_vmap_chunked": "JAX jit(vmap(grad)), chunked (library vmap)",
    "library": "ldnas_jax.fisher_diagonal (auto), linen",
    "library_pure_function": "ldnas_jax.fisher_diagonal, plain function",
    "library_nnx": "ldnas_jax.fisher_diagonal, Flax NNX",
    "batched_grad": "JAX batched gradient (floor)",
    "batched_grad_threshold": "JAX batched gradient, matmul ≤ 16 positions",
    "batched_grad_two_routes": "JAX batched gradient, timed lax/matmul only",
    "batched_grad_fast_routes": "JAX batched gradient, fast_routes (timed)",
    "torch_loop": "PyTorch per-example loop",
    "torch_func": "PyTorch torch.func vmap(grad)",
    "torch_backpack": "PyTorch BackPACK SumGradSquared",
    "torch_opacus": "PyTorch Opacus GradSampleModule",
    "torch_batched": "PyTorch batched gradient",
}


def _config(model: str, quick: bool, batch: int | None = None, reps: int | None = None) -> dict:
    """Batch and example counts per approach at one batch size (the model's default if None).

    The per-example loops, whose speed does not depend on the batch, and JAX's vmap rows get
    fewer examples (never more than the batch); ``reps`` overrides the timed repetitions.
    """
    if model == "small_cnn":
        default, few = 256, (32 if quick else 256)
        slow = {"jax_loop": few, "torch_loop": few}
        if quick:
            slow.update(jax_vmap=64, jax_vmap_chunked=64)
    else:
        default, few = 64, (2 if quick else 16)
        slow = {
            "jax_loop": few,
            "torch_loop": few,
            "jax_vmap": few,
            "jax_vmap_chunked": few * 2,
        }
    batch = batch or default
    return {
        "batch": batch,
        "examples": {k: min(v, batch) for k, v in slow.items()},
        "reps": reps or (2 if quick else 5),
        "slow_reps": reps or (1 if quick else 3),
    }


# ---- measurement helpers (run inside the worker subprocess) -----------------------------------


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: fall back to the peak so far
        return _peak_rss_mib()


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _time(fn, reps: int, block) -> tuple[float, float]:
    """``(best of reps, first call)``: the first call compiles and is excluded from the best."""
    start = time.perf_counter()
    block(fn())
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        block(fn())
        best = min(best, time.perf_counter() - start)
    return best, first


def _xla_temp_mib(jitted, *args) -> float | None:
    try:
        analysis = jitted.lower(*args).compile().memory_analysis()
        return None if analysis is None else analysis.temp_size_in_bytes / 2**20
    except Exception:  # some backends give no analysis
        return None


def _jax_worker(model_name: str, approach: str, n: int, reps: int) -> dict:
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    x_host = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
    y_host = rng.integers(0, 10, size=n).astype(np.int32)
    apply_fn, params = _jax_model(model_name, approach, x_host)
    device_data = jax.numpy.asarray(x_host), jax.numpy.asarray(y_host)
    base = _rss_mib()
    run, xla_temp = _jax_approach(approach, apply_fn, params, (x_host, y_host), device_data)
    seconds, first = _time(run, reps, jax.block_until_ready)
    peak = _peak_rss_mib() - base
    return {
        "seconds": seconds,
        "first_call_s": first,
        "examples": n,
        "examples_per_s": n / seconds,
        "peak_rss_delta_mib": peak,
        # after the timed calls: the library's step is then compiled and cached
        "xla_temp_mib": xla_temp() if callable(xla_temp) else xla_temp,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        **({"conv_routes": _conv_routes()} if approach.endswith("_routes") else {}),
        **({"auto_engine": _auto_engine()} if approach.startswith("library") else {}),
    }


def _auto_engine() -> list[dict]:
    """What ``method="auto"`` timed and kept in this process, per program and chunk (on a GPU
    or TPU; empty on the CPU, where it times nothing)."""
    from ldnas_jax.fisher import engine_timings

    return [
        {
            "chunk": key[-1],
            "vmap_ms": 1e3 * timing.vmap_seconds,
            "layerwise_ms": 1e3 * timing.layerwise_seconds,
            "method": timing.method,
        }
        for key, timing in engine_timings().items()
    ]


def _jax_model(model_name: str, approach: str, x_host):
    """``(apply_fn, params)`` of the model, written as the approach's way of writing it."""
    import jax

    import ldnas_jax as ld
    from benchmarks._models import SmallCNN, nnx_model, pure_function_model

    if approach == "library_pure_function":
        return pure_function_model(model_name)
    if approach == "library_nnx":
        return nnx_model(model_name)
    model = SmallCNN(10) if model_name == "small_cnn" else ld.VGG16(num_classes=10)
    variables = ld.train.init_variables(model, jax.random.key(0), x_host)
    return ld.eval_apply_fn(model, variables), variables["params"]


def _jax_approach(approach: str, apply_fn, params, host_data, device_data):
    """``(run, xla_temp)``: the timed call, and XLA's temp MiB (or a function giving it)."""
    import jax
    import jax.numpy as jnp
    import optax

    import ldnas_jax as ld
    from ldnas_jax.fisher._diagonal import compiled_step
    from ldnas_jax.fisher._program import trace_program

    (x_host, y_host), (x, y) = host_data, device_data
    n = len(y_host)

    def log_p(p, xi, yi):
        return jax.nn.log_softmax(apply_fn(p, xi[None])[0])[yi]

    def squares(p, xb, yb):
        grads = jax.vmap(jax.grad(log_p), in_axes=(None, 0, 0))(p, xb, yb)
        return jax.tree.map(lambda g: jnp.sum(jnp.square(g), axis=0), grads)

    xla_temp = None
    if approach == "jax_loop":
        step = jax.jit(
            lambda acc, p, xi, yi: jax.tree.map(
                lambda a, g: a + jnp.square(g), acc, jax.grad(log_p)(p, xi, yi)
            ),
            donate_argnums=0,
        )
        zeros = jax.tree.map(jnp.zeros_like, params)

        def run():
            acc = jax.tree.map(jnp.copy, zeros)
            for i in range(n):
                acc = step(acc, params, x[i], y[i])
            return acc

        xla_temp = _xla_temp_mib(step, zeros, params, x[0], y[0])
    elif approach == "jax_vmap":
        fn = jax.jit(squares)
        run = lambda: fn(params, x, y)
        xla_temp = _xla_temp_mib(fn, params, x, y)
    elif approach == "jax_vmap_chunked" or approach.startswith("library"):
        # jax_vmap_chunked: the library's reference engine, 4 chunks.
        method = "vmap" if approach == "jax_vmap_chunked" else "auto"
        chunk = max(1, n // 4) if method == "vmap" else None
        run = lambda: ld.fisher_diagonal(
            apply_fn, params, (x_host, y_host), method=method, chunk_size=chunk
        )

        def step_temp():
            program = trace_program(apply_fn, params, x_host)
            step = compiled_step(program, method, "empirical", 1, None, None)
            rows = chunk or min(n, step.engine.preferred_chunk or n)
            mask = jnp.ones((rows,))
            args = (program.consts, params, x[:rows], y[:rows], mask, jax.random.key(0), 0)
            return _xla_temp_mib(step.fn, *args)

        xla_temp = step_temp
    elif approach.startswith("batched_grad"):

        def loss(p, xb, yb):
            logits = apply_fn(p, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        routed = {
            "batched_grad": loss,
            "batched_grad_threshold": ld.fast_routes(loss, max_output_positions=16),
            "batched_grad_two_routes": ld.fast_routes(loss),  # under _without_patch_gradient
            "batched_grad_fast_routes": ld.fast_routes(loss),  # each layer's route timed
        }[approach]
        if approach == "batched_grad_two_routes":
            _without_patch_gradient()
        fn = jax.jit(jax.grad(routed))
        run = lambda: fn(params, x, y)
        xla_temp = _xla_temp_mib(fn, params, x, y)
    else:
        raise ValueError(approach)
    return run, xla_temp


def _without_patch_gradient() -> None:
    """The routing as it was before the ``"patch_gradient"`` route, for this worker process:
    only XLA's op and the matmul are timed, and the untimed rule leaves larger maps to XLA."""
    from ldnas_jax.xla_cpu import _conv_routing

    programs = dict(_conv_routing._ROUTE_PROGRAMS)
    programs.pop("patch_gradient")
    _conv_routing._ROUTE_PROGRAMS = programs
    timed = _conv_routing.conv_route

    def conv_route(*args, **kwargs):
        route = timed(*args, **kwargs)
        return "lax" if route == "patch_gradient" else route

    _conv_routing.conv_route = conv_route


def _conv_routes() -> list[dict]:
    """The timed route of each convolution shape this process traced, for the JSON."""
    from ldnas_jax.xla_cpu import conv_route_timings

    return [
        {
            "input": [*geom.lead_shape, *geom.in_spatial, geom.in_features],
            "output": [*geom.out_spatial, geom.out_features],
            "kernel": list(geom.kernel_size),
            "lax_ms": 1e3 * timing.lax_seconds,
            "matmul_ms": 1e3 * timing.matmul_seconds,
            "patch_gradient_ms": (
                1e3 * timing.patch_gradient_seconds
                if timing.patch_gradient_seconds != float("inf")
                else None  # not timed (batched_grad_two_routes)
            ),
            "route": timing.route,
        }
        for (_, geom, _, _), timing in conv_route_timings().items()
    ]


def torch_fisher(approach: str, net, x, y, chunk: int | None = None):
    """A PyTorch Fisher as a call: ``run()`` gives, by parameter name, the sum over the examples
    of each example's squared gradient of ``log p(y|x)`` (the empirical Fisher times N).

    Args:
      approach: one of ``TORCH_FISHERS``.
      net: the model (eval mode); BackPACK and Opacus extend or wrap a copy, so ``net`` keeps
        no hooks.
      x: inputs, N first.
      y: integer labels, shape ``(N,)``.
      chunk: for ``torch_func`` and ``torch_opacus``, the most examples whose per-example
        gradients are held at once (None: the whole batch).

    Example:
      >>> import torch
      >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
      >>> x, y = torch.ones(2, 1, 2, 2), torch.tensor([0, 2])
      >>> sorted(torch_fisher("torch_loop", net, x, y)())
      ['1.bias', '1.weight']
    """
    import copy

    import torch
    from torch.func import functional_call, grad, vmap

    n = len(x)
    step = chunk if chunk and chunk < n else n
    if approach == "torch_loop":

        def run():
            acc = {k: torch.zeros_like(p) for k, p in net.named_parameters()}
            for i in range(n):
                net.zero_grad(set_to_none=True)
                torch.log_softmax(net(x[i : i + 1]), dim=-1)[0, y[i]].backward()
                for k, p in net.named_parameters():
                    acc[k].add_(p.grad.square())
            return acc
    elif approach == "torch_func":
        params = {k: v.detach() for k, v in net.named_parameters()}
        buffers = dict(net.named_buffers())

        def log_p(p, xi, yi):
            out = functional_call(net, (p, buffers), (xi[None],))
            return torch.log_softmax(out, dim=-1)[0].gather(0, yi[None])[0]

        per_example = vmap(grad(log_p), in_dims=(None, 0, 0))

        def run():
            acc = {k: torch.zeros_like(p) for k, p in params.items()}
            for s in range(0, n, step):
                for k, g in per_example(params, x[s : s + step], y[s : s + step]).items():
                    acc[k].add_(g.square().sum(0))
            return acc
    elif approach == "torch_backpack":
        from backpack import backpack, extend
        from backpack.extensions import SumGradSquared

        model = extend(copy.deepcopy(net))
        # Summed, not averaged: each example's gradient is then that of -log p(y|x), and
        # sum_grad_squared is the sum of their squares (a mean loss would scale it by 1/N²).
        lossfunc = extend(torch.nn.CrossEntropyLoss(reduction="sum"))

        def run():
            model.zero_grad(set_to_none=True)
            with backpack(SumGradSquared()), _quiet_input_hooks():
                lossfunc(model(x), y).backward()
            return {k: p.sum_grad_squared for k, p in model.named_parameters()}
    elif approach == "torch_opacus":
        from opacus import GradSampleModule

        # Opacus records a layer only in training mode, and takes no layer with buffers: eval
        # BatchNorm becomes the same per-channel affine map with its statistics held as
        # constants (its two parameters then go through Opacus's torch.func fallback).
        inner = _frozen_batch_norm(copy.deepcopy(net)).train()
        # loss_reduction="sum": Opacus leaves the per-sample gradients of a summed loss unscaled.
        model = GradSampleModule(inner, loss_reduction="sum")

        def run():
            acc = {k: torch.zeros_like(p) for k, p in inner.named_parameters()}
            for s in range(0, n, step):
                model.zero_grad(set_to_none=True)  # also drops the last chunk's grad_sample
                out = model(x[s : s + step])
                loss = torch.nn.functional.cross_entropy(out, y[s : s + step], reduction="sum")
                with _quiet_input_hooks():
                    loss.backward()
                for k, p in inner.named_parameters():
                    acc[k].add_(p.grad_sample.square().sum(0))
            return acc
    else:
        raise ValueError(f"unknown PyTorch Fisher {approach!r}; choose from {TORCH_FISHERS}")
    return run


@contextlib.contextmanager
def _quiet_input_hooks():
    """BackPACK's and Opacus's module hooks warn on the first layer, whose input (the data)
    needs no gradient; that is as intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
        yield


def _frozen_batch_norm(net):
    """``net`` with each BatchNorm2d (in eval mode) replaced, in place, by the same map with the
    running statistics held as plain tensors: a layer that does the same in training mode and
    has no buffers, as Opacus asks."""
    import torch

    class FrozenBatchNorm2d(torch.nn.Module):
        def __init__(self, norm):
            super().__init__()
            self.weight, self.bias = norm.weight, norm.bias
            self.mean = norm.running_mean.detach().clone().view(1, -1, 1, 1)
            self.inv_std = torch.rsqrt(norm.running_var.detach() + norm.eps).view(1, -1, 1, 1)

        def forward(self, x):
            scale = self.weight.view(1, -1, 1, 1) * self.inv_std
            return (x - self.mean) * scale + self.bias.view(1, -1, 1, 1)

    for name, child in net.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(net, name, FrozenBatchNorm2d(child))
        else:
            _frozen_batch_norm(child)
    return net


def _torch_worker(model_name: str, approach: str, n: int, reps: int) -> dict:
    import numpy as np
    import torch

    from benchmarks._models import torch_model

    threads = int(os.environ.get("FISHER_SPEED_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = torch_model(model_name).to(device)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(n, 3, 32, 32)).astype(np.float32), device=device)
    y = torch.tensor(rng.integers(0, 10, size=n), device=device)
    sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)

    base = _rss_mib()
    chunk = None
    if approach == "torch_batched":

        def run():
            net.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
    else:
        if approach in ("torch_func", "torch_opacus"):
            chunk = PER_EXAMPLE_CHUNK[model_name]
        run = torch_fisher(approach, net, x, y, chunk)
    seconds, first = _time(run, reps, sync)
    return {
        "seconds": seconds,
        "first_call_s": first,
        "examples": n,
        "examples_per_s": n / seconds,
        "peak_rss_delta_mib": _peak_rss_mib() - base,
        "xla_temp_mib": None,
        "device": device,
        "torch_threads": threads,
        "torch_version": torch.__version__,
        **({"chunk": chunk} if chunk and chunk < n else {}),
    }


def _memory_worker(total: int, batch: int, side: int) -> dict:
    """Streams ``total`` examples through fisher_diagonal with a fixed chunk; peak RSS delta."""
    import jax
    import numpy as np

    import ldnas_jax as ld
    from benchmarks._models import SmallCNN

    model = SmallCNN(10)
    variables = ld.train.init_variables(
        model, jax.random.key(0), np.zeros((1, side, side, 3), np.float32)
    )
    apply_fn = ld.eval_apply_fn(model, variables)

    def stream():
        rng = np.random.default_rng(0)
        for _ in range(total // batch):  # generated on the fly: the data set is never in memory
            yield (
                rng.normal(size=(batch, side, side, 3)).astype(np.float32),
                rng.integers(0, 10, size=batch),
            )

    base = _rss_mib()
    start = time.perf_counter()
    fisher = ld.fisher_diagonal(apply_fn, variables["params"], stream(), chunk_size=batch)
    jax.block_until_ready(fisher)
    return {
        "examples": total,
        "chunk_size": batch,
        "image_side": side,
        "seconds": time.perf_counter() - start,
        "peak_rss_delta_mib": _peak_rss_mib() - base,
    }


# ---- driver -----------------------------------------------------------------------------------


def _spawn(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.fisher_speed", "--worker", *args]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit code {proc.returncode}"}


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1min": load,
        "python": platform.python_version(),
    }


def _have_torch() -> bool:
    try:
        import torch  # noqa: F401

        return True
    except ImportError:
        return False


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _measured(results: dict) -> dict:
    """The results of the approaches that ran (no ``"error"``)."""
    return {k: v for k, v in results.items() if "error" not in v}


def _torch_fisher_rates(ok: dict) -> dict:
    """``{PyTorch Fisher: examples per second}`` of those measured in ``ok``."""
    return {k: ok[k]["examples_per_s"] for k in TORCH_FISHERS if k in ok}


def _text_table(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows])


def _approach_row(
    name: str, r: dict, *, floor, floor_examples, routed, best_torch, torch_batched
) -> str:
    """One approach's row of :func:`_table`: its rate, and its time against the references."""
    if "error" in r:
        return f"{LABELS[name]:44s} error: {r['error'][:120]}"
    # time for one batch of the floor's size, relative to the floor's batch time
    per_batch = floor_examples / r["examples_per_s"] if floor_examples else None
    vs_floor = per_batch / floor if (floor and per_batch) else None
    vs_routed = per_batch / routed if (routed and per_batch) else None
    if name in FISHER_APPROACHES:
        vs_torch = r["examples_per_s"] / best_torch if best_torch else None
    elif name.startswith("batched_grad"):  # a training step's gradient against PyTorch's
        vs_torch = r["examples_per_s"] / torch_batched if torch_batched else None
    else:
        vs_torch = None
    return (
        f"{LABELS[name]:44s} {r['examples']:4d} {r['examples_per_s']:9.1f} "
        f"{_fmt(vs_floor, '13.2f')} {_fmt(vs_routed, '11.2f')} {_fmt(vs_torch, '7.2f')} "
        f"{_fmt(r.get('peak_rss_delta_mib'), '14.0f')} {_fmt(r.get('xla_temp_mib'), '12.0f')}"
    )


def _table(model: str, results: dict) -> str:
    ok = _measured(results)
    references = {
        "floor": ok.get("batched_grad", {}).get("seconds"),
        "floor_examples": ok.get("batched_grad", {}).get("examples"),
        "routed": ok.get("batched_grad_fast_routes", {}).get("seconds"),
        "best_torch": max(_torch_fisher_rates(ok).values(), default=None),
        "torch_batched": ok.get("torch_batched", {}).get("examples_per_s"),
    }
    header = (
        f"{'approach':44s} {'n':>4s} {'ex/s':>9s} {'t/batch÷floor':>13s} {'÷fast floor':>11s} "
        f"{'÷torch':>7s} "
        f"{'peak RSS Δ MiB':>14s} {'XLA temp MiB':>12s}"
    )
    rows = [_approach_row(name, r, **references) for name, r in results.items()]
    return _text_table(header, rows)


def _targets(model: str, results: dict) -> dict:
    """The issue-13 ratios of one run: ``{name: (value, target text)}`` for those measured."""
    ok = _measured(results)
    seconds_per_example = lambda k: ok[k]["seconds"] / ok[k]["examples"]
    out = {}
    for variant, label in (("library_pure_function", "plain function"), ("library_nnx", "NNX")):
        if variant in ok and "library" in ok:
            ratio = seconds_per_example(variant) / seconds_per_example("library")
            out[f"{label} / linen Fisher time"] = (ratio, "<= 1.2")
    torch_fisher = _torch_fisher_rates(ok)
    if "library" in ok and torch_fisher:
        # issue 13: twice the best on VGG-16, torch.func on the small CNN; issue 26: the best
        # of the loop, torch.func, BackPACK and Opacus on both.
        ratio = ok["library"]["examples_per_s"] / max(torch_fisher.values())
        goal = ">= 2" if model == "vgg16" else ">= 1"
        out["linen Fisher / best PyTorch Fisher, ex/s"] = (ratio, goal)
        if model != "vgg16" and "torch_func" in torch_fisher:
            ratio = ok["library"]["examples_per_s"] / torch_fisher["torch_func"]
            out["linen Fisher / torch.func, ex/s"] = (ratio, ">= 1")
    if "batched_grad_fast_routes" in ok and "torch_batched" in ok:
        ratio = (
            ok["batched_grad_fast_routes"]["examples_per_s"] / ok["torch_batched"]["examples_per_s"]
        )
        out["batched gradient, timed routes / PyTorch's, ex/s"] = (ratio, ">= 1")
    if model == "small_cnn" and "library" in ok and "jax_vmap_chunked" in ok:
        ratio = ok["library"]["first_call_s"] / ok["jax_vmap_chunked"]["first_call_s"]
        out["first call, fast path / vmap path"] = (ratio, "<= 1")
    return out


def _summary(model: str, batch: int, results: dict) -> dict | None:
    """One row of the closing summary: the library's ex/s against each PyTorch Fisher's and the
    best of them; None when the library or every PyTorch Fisher is missing."""
    ok = _measured(results)
    pytorch = _torch_fisher_rates(ok)
    if "library" not in ok or not pytorch:
        return None
    best = max(pytorch, key=pytorch.get)
    library = ok["library"]["examples_per_s"]
    return {
        "model": model,
        "batch": batch,
        "library_examples_per_s": library,
        "pytorch_examples_per_s": pytorch,
        "best_pytorch": best,
        "library_over_best_pytorch": library / pytorch[best],
    }


def _summary_row(r: dict, names: list[str]) -> str:
    """One (model, batch) row of :func:`_summary_text`, a cell per PyTorch Fisher of ``names``."""
    cells = " ".join(_fmt(r["pytorch_examples_per_s"].get(k), "9.1f").rjust(9) for k in names)
    return (
        f"{r['model']:9s} {r['batch']:5d} {r['library_examples_per_s']:9.1f} {cells} "
        f"{r['best_pytorch'].removeprefix('torch_'):>12s} "
        f"{r['library_over_best_pytorch']:11.2f}x"
    )


def _summary_text(rows: list[dict]) -> str:
    names = [k for k in TORCH_FISHERS if any(k in r["pytorch_examples_per_s"] for r in rows)]
    header = (
        f"{'model':9s} {'batch':>5s} {'library':>9s} "
        + " ".join(f"{k.removeprefix('torch_'):>9s}" for k in names)
        + f" {'best PyTorch':>12s} {'library/best':>12s}"
    )
    return _text_table(header, [_summary_row(r, names) for r in rows])


def _header(machine: dict, with_torch: bool) -> str:
    load = machine["load_average_1min"]
    return (
        f"machine: {machine['cpu']}, {machine['cores']} cores, load {_fmt(load, '.2f')}"
        f"{'' if with_torch else ' (PyTorch not installed or --no-torch: torch rows skipped)'}"
    )


def _batch_sizes(text: str | None) -> list[int | None]:
    """``"32,128"`` -> ``[32, 128]``; None -> ``[None]`` (each model's default batch)."""
    if text is None:
        return [None]
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--batch-sizes takes comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--batch-sizes takes positive integers, got {text!r}")
    return sizes


def _targets_text(targets: dict) -> str:
    return "\n".join(
        f"  {name:44s} {value:6.2f}  (target {goal})" for name, (value, goal) in targets.items()
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repetitions and examples, one subprocess per framework (several minutes "
        "on 2 cores; the run prints its wall time)",
    )
    parser.add_argument("--json", metavar="PATH", help="write all figures to this JSON file")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated: small_cnn,vgg16"
    )
    parser.add_argument(
        "--batch-sizes",
        metavar="B,B",
        help="comma-separated batch sizes to measure each model at "
        "(default: one batch, 256 for the small CNN and 64 for VGG-16)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        metavar="N",
        help="timed repetitions after the warm-up call (default: 5, 3 for the loops; "
        "with --quick 2 and 1)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    parser.add_argument(
        "--approaches",
        help="comma-separated subset of the approaches (default: all); see LABELS",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the 1k vs 10k streaming test"
    )
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    return parser


def _run_worker(spec: list[str]) -> dict:
    """Inside a subprocess: one measurement, printed as one JSON line."""
    kind, *rest = spec
    if kind == "memory":
        result = _memory_worker(int(rest[0]), int(rest[1]), int(rest[2]))
    else:  # several approaches in one process: only the first one's peak RSS is its own
        model, result = rest[0], {}
        for i, (approach, n, reps) in enumerate(zip(*(r.split(",") for r in rest[1:4]))):
            worker = _torch_worker if approach.startswith("torch") else _jax_worker
            try:
                result[approach] = worker(model, approach, int(n), int(reps))
            except Exception as err:  # report and go on with the next approach
                result[approach] = {"error": f"{type(err).__name__}: {err}"[:300]}
            if i:
                result[approach]["peak_rss_delta_mib"] = None
    print(json.dumps(result))
    return result


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The models, batch sizes and approaches of the flags; a clear error for a bad one."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {MODELS}")
    try:
        batch_sizes = _batch_sizes(args.batch_sizes)
    except ValueError as err:
        parser.error(str(err))
    if args.reps is not None and args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    chosen = None
    if args.approaches:
        chosen = {a.strip() for a in args.approaches.split(",") if a.strip()}
        unknown = chosen - set(LABELS)
        if unknown:
            parser.error(f"unknown approaches {sorted(unknown)}; choose from {list(LABELS)}")
    return models, batch_sizes, chosen


def _measure_at(model: str, batch, args, chosen, with_torch: bool, timeout: float):
    """One model at one batch size: its run record (printed as a table) and its summary row."""
    cfg = _config(model, args.quick, batch, args.reps)
    approaches = JAX_APPROACHES + (TORCH_APPROACHES if with_torch else ())
    if chosen:
        approaches = tuple(a for a in approaches if a in chosen)
    results = _measure(model, cfg, approaches, args.quick, timeout)
    targets = _targets(model, results)
    run = {
        "model": model,
        "batch": cfg["batch"],
        "results": results,
        "targets": {k: {"value": v, "target": t} for k, (v, t) in targets.items()},
    }
    summary = _summary(model, cfg["batch"], results)
    device = next((r.get("device") for r in results.values() if r.get("backend")), "?")
    print(
        f"\n{model}, batch {cfg['batch']}, JAX device {device} "
        f"(t/batch÷floor: time per {cfg['batch']} examples over the JAX batched "
        f"gradient's; ÷fast floor: the same over the batched gradient with fast_routes; "
        f"÷torch: ex/s over the best PyTorch Fisher, or for a batched gradient over "
        f"PyTorch's batched gradient)\n{_table(model, results)}\n",
        flush=True,
    )
    if targets:
        print(f"targets, {model} (this run):\n{_targets_text(targets)}\n", flush=True)
    return run, summary


def _measure_memory(quick: bool, timeout: float) -> dict:
    """Peak RSS of streaming 1k and 10k examples through the Fisher (subprocesses)."""
    memory, side = {}, 8 if quick else 32
    for total in (1000, 10000):
        memory[str(total)] = _spawn(["memory", str(total), "250", str(side)], timeout)
    print(
        f"memory: fisher_diagonal on the small CNN ({side}x{side}x3 inputs), chunk_size 250, "
        "data generated and streamed in batches of 250"
    )
    for total, r in memory.items():
        if "error" in r:
            print(f"  {total:>6s} examples: error {r['error']}")
        else:
            print(
                f"  {total:>6s} examples: peak RSS delta {r['peak_rss_delta_mib']:.0f} MiB "
                f"({r['seconds']:.1f} s)"
            )
    return memory


def main(argv=None) -> dict:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.worker:
        return _run_worker(args.worker)
    wall_start = time.perf_counter()
    models, batch_sizes, chosen = _chosen(parser, args)
    with_torch = not args.no_torch and _have_torch()
    machine = _machine()
    report = {
        "machine": machine,
        "quick": args.quick,
        "approaches": args.approaches,
        "batch_sizes": args.batch_sizes,
        "reps": args.reps,
        "runs": [],
        "summary": [],
        "memory": None,
    }
    print(_header(machine, with_torch), flush=True)
    timeout = 600
    for model in models:
        for batch in batch_sizes:
            run, summary = _measure_at(model, batch, args, chosen, with_torch, timeout)
            report["runs"].append(run)
            if summary:
                report["summary"].append(summary)
    if report["summary"]:
        print(
            "library against the best PyTorch Fisher (ex/s; the loops run on fewer examples, "
            f"their speed does not depend on the batch):\n{_summary_text(report['summary'])}\n",
            flush=True,
        )
    if not args.no_memory:
        report["memory"] = _measure_memory(args.quick, timeout)
    report["wall_s"] = time.perf_counter() - wall_start
    print(f"wall time {report['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return report


def _measure(model: str, cfg: dict, approaches: tuple, quick: bool, timeout: float) -> dict:
    """Runs the approaches at one model and batch: one subprocess each (its own peak RSS), or
    with ``quick`` one per framework; prints each row's ex/s as it comes."""
    results = {}
    groups = (
        [
            [a for a in approaches if not a.startswith("torch")],
            [a for a in approaches if a.startswith("torch")],
        ]
        if quick
        else [[a] for a in approaches]
    )
    for group in filter(None, groups):
        ns = [str(cfg["examples"].get(a, cfg["batch"])) for a in group]
        reps = [str(cfg["slow_reps"] if a in cfg["examples"] else cfg["reps"]) for a in group]
        start = time.perf_counter()
        out = _spawn(["run", model, ",".join(group), ",".join(ns), ",".join(reps)], timeout)
        for approach in group:
            results[approach] = out.get(approach, out if "error" in out else {"error": "no result"})
            print(
                f"  {model:9s} b{cfg['batch']:<4d} {approach:26s} "
                f"{_fmt(results[approach].get('examples_per_s'), '8.1f')} ex/s",
                flush=True,
            )
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    return results


if __name__ == "__main__":
    main()
