"""The diagonal of the Fisher information matrix (paper eq. 1), computed exactly.

diag F = (1/M) Σ_i Σ_k w_ik · (∇θ log p(t_ik | x_i, θ))², where the targets t and
weights w depend on the estimator (:mod:`ldnas_jax.fisher._estimators`): the data label
(``"empirical"``, the paper's eq. 1), labels drawn from the model (``"sampled"``), or
every class weighted by its probability (``"exact"``).

Gradients are per example, never of a batch mean: squaring a batch-mean
gradient (as the authors' public code did) is a different, much smaller number.

A *Fisher engine* (:class:`~ldnas_jax.fisher.FisherEngine`) computes the weighted sum of
squared per-example gradients of one chunk: the reference ``vmap(grad)``
(:mod:`ldnas_jax.fisher._engine`) or the layer-wise engine
(:mod:`ldnas_jax.fisher._layerwise`). Both run on the program ``apply_fn`` traces to
(:mod:`ldnas_jax.fisher._program`), and the compiled steps are cached on what that
program computes: a fresh ``lambda`` over the same model and shapes, or another network
of the same architecture, does not compile again. The estimators share the trace, the
layer-wise plan and the engine, and ``"sampled"`` / ``"exact"`` take the model's
distribution from the engine's own forward pass.

Several devices and several hosts
---------------------------------
Pass ``mesh=jax.sharding.Mesh(jax.devices(), ("data",))`` (or data already
sharded over a mesh, ``jax.make_mesh``'s explicit axes included) and each chunk's
batch axis is split over the mesh's data axis, parameters stay replicated, and the
per-device sums are reduced across devices (``psum``) inside one compiled step.
Chunks are zero-weight padded to a multiple of the device count, so results equal
the single-device ones.

On several hosts, call ``jax.distributed.initialize()`` on every process first
(coordinator address, process count and id come from the arguments or the
cluster environment), build the mesh over ``jax.devices()`` (all hosts'
devices), and give each process *its own share* of the data, with the same
number of batches and the same batch size on every process. Each chunk is then
assembled with :func:`jax.make_array_from_process_local_data`, the count of
examples is summed over processes, and every process returns the same Fisher:
the mean over all processes' examples. With ``estimator="sampled"``, an
example's labels are keyed by its index in the global stream of chunks (each
holding ``chunk_size`` rows, padded, of every process in turn), so they depend
on the process layout; ``docs/multi_host.md`` gives the index.
"""

import collections
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from ldnas_jax._checks import (
    check_finite_tree,
    check_int,
    check_key,
    is_real_number_dtype,
    is_traced,
)
from ldnas_jax._sharding import data_mesh, replicate, replicate_key, to_device
from ldnas_jax.data.batching import pad_rows
from ldnas_jax.fisher._batches import as_batches, check_batch
from ldnas_jax.fisher._engine import FisherEngine, make_vmap_engine, vmap_engine_from_forward
from ldnas_jax.fisher._engine_choice import faster_engine, times_engines
from ldnas_jax.fisher._estimators import ESTIMATORS, estimator_rule, targets_and_weights
from ldnas_jax.fisher._params import split_params
from ldnas_jax.fisher._program import Program, evaluate, trace_program

__all__ = [
    "ESTIMATORS",
    "METHODS",
    "fisher_diagonal",
    "make_vmap_engine",
    "select_engine",
    "targets_and_weights",
]

Estimator = Literal["empirical", "sampled", "exact"]
METHODS = ("auto", "vmap", "layerwise")
ApplyFn = Callable[[Any, jax.Array], jax.Array]


def select_engine(method: str, program: Program) -> FisherEngine:
    """The engine for a traced program.

    ``"vmap"``: the reference; ``"layerwise"``: the layer-wise engine; ``"auto"``: the
    layer-wise engine when its plan places at least one parameter leaf, else the reference.
    """
    if method != "vmap":
        from ldnas_jax.fisher._layerwise import layerwise_engine_from_program
        from ldnas_jax.fisher._plan import plan_program

        plan = plan_program(program)
        if method == "layerwise" or any(r.route != "vmap" for r in plan.routes):
            return layerwise_engine_from_program(program, plan)
    treedef = program.treedef

    def forward(consts, params, x):
        return evaluate(program, consts, treedef.flatten_up_to(params), x)[0]

    return vmap_engine_from_forward(forward, program.consts, program.num_classes)


def _make_chunk_fn(
    engine: FisherEngine,
    estimator: str,
    num_samples: int,
    mesh: Mesh | None = None,
    axis: str | None = None,
):
    """Jitted ``(consts, params, x, y, mask, key, offset) -> (Σ over the chunk, examples)``.

    Padded rows have mask 0. With a mesh, the batch axis is split over ``axis`` and the
    sums are reduced across it.
    """
    rule = estimator_rule(estimator, engine.num_classes, num_samples)

    def chunk_sum(consts, params, x, y, mask, key, offset):
        if estimator == "sampled":
            # Keyed by the global example index, so the draw is the same however data is batched.
            second = jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(x.shape[0]))
        else:
            second = y
        return engine.sum_squares(consts, params, x, rule, second, mask), jnp.sum(mask)

    if mesh is None:
        return jax.jit(chunk_sum)

    def local_sum(consts, params, x, y, mask, key, offset):
        shard = jax.lax.axis_index(axis)
        sums, count = chunk_sum(consts, params, x, y, mask, key, offset + shard * x.shape[0])
        return jax.lax.psum((sums, count), axis)

    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(axis))
    sharded = jax.shard_map(
        local_sum,
        mesh=mesh,
        in_specs=(P(), P(), P(axis), P(axis), P(axis), P(), P()),
        out_specs=P(),
        check_vma=False,
    )
    return jax.jit(
        sharded,
        in_shardings=(replicated, replicated, split, split, split, replicated, replicated),
        out_shardings=replicated,
    )


def fisher_diagonal(
    apply_fn: ApplyFn,
    params: Any,
    data,
    *,
    estimator: Estimator = "empirical",
    key: jax.Array | None = None,
    chunk_size: int | None = None,
    num_samples: int = 1,
    method: str = "auto",
    mesh: Mesh | None = None,
    data_axis: str | None = None,
    progress: bool = False,
) -> Any:
    """Diagonal Fisher information of a classifier on data (paper eq. 1).

    Args:
      apply_fn: ``apply_fn(params, x) -> logits`` of shape ``(batch, classes)``;
        for a model with BatchNorm close over its statistics in eval mode (see
        :func:`ldnas_jax.eval_apply_fn`), so that examples stay independent.
      params: the parameter pytree the Fisher is taken with respect to. A whole
        Equinox module may be passed (any pytree with leaves that are neither arrays
        nor numbers, such as activation functions): the Fisher is then taken over its
        floating-point arrays, as ``eqx.partition(model, eqx.is_inexact_array)`` splits
        them, and comes back as that partition, None at the other leaves.
      data: one batch or an iterable of batches, streamed. A batch is ``(x, y)``,
        ``[x, y]`` or ``{"x": x, "y": y}``; ``y`` (an array or a list) may be None for
        ``"sampled"`` and ``"exact"``, which also take ``x`` alone as the data. Labels
        are integer classes ``(batch,)`` or one-hot rows ``(batch, classes)`` (the same
        Fisher), classes of ``apply_fn``'s head: for another task's labels see
        :func:`ldnas_jax.fisher.pad_logits` and :func:`ldnas_jax.fisher.predicted_labels`.
      estimator: ``"empirical"``, ``"sampled"`` or ``"exact"`` (module docstring).
      key: PRNG key, required by ``"sampled"``.
      chunk_size: examples per compiled step; bounds peak memory. Defaults to
        the first batch's size, capped by the engine's preferred chunk (16 for
        the layer-wise engine on CPU, where smaller steps stay in cache). Ragged
        chunks are zero-weight padded, so one compilation serves all.
      num_samples: labels drawn per example by ``"sampled"``.
      method: ``"vmap"`` (per-example ``vjp``, the reference), ``"layerwise"``
        (see :mod:`ldnas_jax.fisher._layerwise`), or ``"auto"``: layer-wise when it
        places at least one parameter leaf (a contraction's kernel, a bias, a scale), in
        any JAX model; else vmap. :func:`ldnas_jax.fisher.layerwise_plan` says which. On a
        GPU or TPU, where either engine may win, ``"auto"`` times both on the first chunk
        of an eager call and keeps the faster for that program
        (:func:`ldnas_jax.fisher.engine_timings`).
      mesh: a :class:`jax.sharding.Mesh` to split each chunk's batch over (see
        the module docstring, also for several hosts). Default: the mesh the
        first batch's ``x`` is sharded on, if any, else one device.
      data_axis: the mesh axis for the batch; default ``"data"`` if the mesh has
        one, else its first axis.
      progress: show a progress bar over batches.

    Returns:
      A pytree shaped like ``params``, float32: the mean over *all* examples of
      the weighted squared per-example gradients of log p.

    Under JAX transformations:
      On one batch of arrays, the function composes under ``jax.jit`` (and ``vmap``,
      ``grad``): ``params``, ``x``, ``y`` and ``key`` may be traced, e.g. a Fisher taken
      inside a jitted training step (an EWC penalty). It returns the eager result.
      Shapes and dtypes are checked while tracing; the checks of values (NaN/inf in
      ``x``, ``params`` or the Fisher, labels in range, one-hot rows) run only on
      concrete values, so under ``jit`` an out-of-range label is not reported (its
      one-hot is zero: it adds nothing). Streaming an iterable of batches is a
      Python loop meant to run eagerly (under ``jit`` it would unroll).

    Raises:
      ValueError: unknown estimator or method, empty data, mismatched shapes,
        labels outside the model's classes, NaN/inf in ``x``, params that do
        not fit ``apply_fn``; :class:`NonFiniteError` (a ``ValueError``) for
        NaN/inf in ``params`` or in the resulting Fisher.
      TypeError: non-integer labels or counts, non-numeric ``x``, an ``x`` whose
        dtype ``apply_fn`` refuses beside the params' (a bfloat16 batch for float32
        parameters), a ``key`` that is not a PRNG key, ``data`` that is not a pair
        or pairs.

    Example:
      >>> import flax.linen as nn
      >>> model = nn.Dense(3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
      >>> x, y = np.ones((5, 4), np.float32), np.array([0, 1, 2, 0, 1])
      >>> f = fisher_diagonal(lambda p, x: model.apply({"params": p}, x), params, (x, y))
      >>> f["kernel"].shape
      (4, 3)

      Under ``jit`` (for a step of a training loop):

      >>> step = jax.jit(lambda p: fisher_diagonal(lambda q, v: model.apply({"params": q}, v),
      ...                                          p, (x, y)))
      >>> bool(jnp.allclose(step(params)["kernel"], f["kernel"]))
      True
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if estimator == "sampled" and key is None:
        raise ValueError("the 'sampled' estimator draws labels and needs a PRNG key")
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    num_samples = check_int(num_samples, name="num_samples")
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, name="chunk_size")
    if key is not None:
        check_key(key)
    apply_fn, params = split_params(apply_fn, params)
    check_finite_tree(params, what="params")  # skips traced leaves
    key = jax.random.key(0) if key is None else key

    total, count, counted, step, consts = None, 0, None, None, None
    offset, processes = 0, 1  # offset: the global index of the next chunk's first row
    num_classes, example_shape = None, None
    for x, y in tqdm(
        as_batches(data), desc=f"Fisher ({estimator})", disable=not progress, leave=False
    ):
        traced = is_traced(x)
        if step is None and not (traced and mesh is None):
            mesh, data_axis = data_mesh(mesh, data_axis, x)
        x = x if traced else np.asarray(x)
        if step is None:
            if x.ndim < 2 or x.shape[0] == 0:
                raise ValueError(
                    f"x must be a non-empty batch with feature axes, got shape {x.shape}"
                )
            if not is_real_number_dtype(x.dtype):
                raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
            program = trace_program(apply_fn, params, x)
            num_classes, example_shape = program.num_classes, x.shape[1:]
            consts = program.consts
            if is_traced(consts):  # apply_fn closes over an enclosing jit's values
                program = program._replace(consts=_shapes_of(consts))  # cached: no tracers
            step = compiled_step(program, method, estimator, num_samples, mesh, data_axis)
            chunk = chunk_size or min(x.shape[0], step.engine.preferred_chunk or x.shape[0])
            if mesh is not None:  # a multiple of the shards: padded rows carry zero weight
                shards = mesh.shape[data_axis] // jax.process_count()
                chunk = -(-chunk // shards) * shards
                processes = jax.process_count()
                if processes > 1:  # device_put checks they match on every process; jit would not
                    params, key = replicate(mesh, params), replicate_key(mesh, key)
                    consts = tuple(_replicate_any(mesh, c) for c in consts)
            # Off the CPU, "auto" times both engines on the first chunk (_engine_choice).
            choose = method == "auto" and mesh is None and step.engine.name == "layerwise"
            choose = choose and times_engines()
        x, y = check_batch(x, y, estimator, example_shape, num_classes)
        for start in range(0, x.shape[0], chunk):
            xc, yc = x[start : start + chunk], y[start : start + chunk]
            rows = xc.shape[0]
            padded = pad_rows(chunk, xc, yc, np.ones((rows,), np.float32))
            args = to_device(mesh, data_axis, *padded)
            if choose:  # once, on the first chunk's own arguments
                first = (consts, params, *args, key, offset)
                step, choose = _faster_step(program, step, first, estimator, num_samples), False
            part, part_count = step.fn(consts, params, *args, key, offset)
            total = part if total is None else _tree_add(total, part)
            counted = part_count if counted is None else counted + part_count
            count += rows
            # On several processes a global chunk holds `chunk` rows, padded, of each process.
            offset = count if processes == 1 else offset + chunk * processes
    if count == 0:
        raise ValueError("data is empty: the Fisher is a mean over examples and needs at least one")
    if processes > 1:
        count = round(float(counted))  # over all processes
    fisher = jax.tree.map(lambda s: s / count, total)
    check_finite_tree(fisher, what="Fisher diagonal")  # skips a traced Fisher
    return fisher


def _faster_step(program: Program, step: "Step", args: tuple, estimator, num_samples) -> "Step":
    """``step`` (the layer-wise engine's) or the vmap engine's, whichever ran ``args`` faster
    when first timed; under tracing nothing can be timed, and ``step`` stays."""
    if is_traced(args):
        return step
    other = compiled_step(program, "vmap", estimator, num_samples, None, None)
    chunk = args[2].shape[0]  # args: consts, params, x, y, mask, key, offset
    key = (jax.default_backend(), program.fingerprint, estimator, num_samples, chunk)
    faster = faster_engine(key, {"vmap": other.fn, "layerwise": step.fn}, args)
    return other if faster == "vmap" else step


def _shapes_of(values) -> tuple:
    return tuple(jax.ShapeDtypeStruct(np.shape(v), jnp.result_type(v)) for v in values)


def _replicate_any(mesh: Mesh, value):
    if jnp.issubdtype(jnp.result_type(value), jax.dtypes.prng_key):
        return replicate_key(mesh, value)
    return replicate(mesh, value)


class Step(NamedTuple):
    """A compiled chunk step and the engine it runs."""

    fn: Callable
    engine: FisherEngine


# Engines (shared by the estimators) and compiled steps of recent programs, keyed on what
# the program computes, so that another call with the same model (a fresh lambda, another
# network of the same architecture, another task's data) does not trace the plan or
# compile again. Entries hold their program, whose constants are only their first values:
# each call passes its own.
_ENGINES: "collections.OrderedDict[tuple, FisherEngine]" = collections.OrderedDict()
_STEPS: "collections.OrderedDict[tuple, Step]" = collections.OrderedDict()
_CACHE_SIZE = 8


def _lru_get(cache, key, make):
    hit = cache.get(key)
    if hit is not None:
        cache.move_to_end(key)
        return hit
    value = cache[key] = make()
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def compiled_step(
    program: Program, method: str, estimator: str, num_samples: int, mesh, data_axis
) -> Step:
    """The cached chunk step of ``program`` for one estimator (compiled on first call)."""
    engine = _lru_get(
        _ENGINES,
        (program.fingerprint, method),
        lambda: select_engine(method, program),  # holds the program, and its keep_alive
    )
    key = (program.fingerprint, method, estimator, num_samples, mesh, data_axis)
    return _lru_get(
        _STEPS,
        key,
        lambda: Step(_make_chunk_fn(engine, estimator, num_samples, mesh, data_axis), engine),
    )


@jax.jit
def _tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)
