"""The diagonal of the Fisher information matrix (paper eq. 1), computed exactly.

diag F = (1/M) Σ_i Σ_k w_ik · (∇θ log p(t_ik | x_i, θ))², where the targets t and
weights w depend on the estimator:

* ``"empirical"``: the data label, weight 1 (the paper's eq. 1);
* ``"sampled"``: ``num_samples`` labels drawn from the model, weight 1/S each
  (a Monte-Carlo estimate of the true Fisher);
* ``"exact"``: every class c, weight p(c | x_i) (the true Fisher's expectation).

Gradients are per example, never of a batch mean: squaring a batch-mean
gradient (as the authors' public code did) is a different, much smaller number.

A *Fisher engine* computes the weighted sum of squared per-example gradients of
one chunk. This module holds the reference engine, ``vmap(grad)``; the
layer-wise engine lives in :mod:`ldnas_jax.fisher._layerwise`.

Several devices and several hosts
---------------------------------
Pass ``mesh=jax.sharding.Mesh(jax.devices(), ("data",))`` (or data already
sharded over a mesh) and each chunk's batch axis is split over the mesh's data
axis, parameters stay replicated, and the per-device sums are reduced across
devices (``psum``) inside one compiled step. Chunks are zero-weight padded to a
multiple of the device count, so results equal the single-device ones.

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
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

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
    check_labels,
    is_real_number_dtype,
)
from ldnas_jax._sharding import data_mesh, replicate, replicate_key, to_device

Estimator = Literal["empirical", "sampled", "exact"]
ESTIMATORS = ("empirical", "sampled", "exact")
METHODS = ("auto", "vmap", "layerwise")
ApplyFn = Callable[[Any, jax.Array], jax.Array]
# engine(params, x, targets, weights) -> pytree like params: Σ_i Σ_k w_ik g_ik² in float32.
Engine = Callable[[Any, jax.Array, jax.Array, jax.Array], Any]


def make_vmap_engine(apply_fn: ApplyFn, num_classes: int) -> Engine:
    """The reference engine: one ``vjp`` per example, vmapped over examples and targets.

    Per example it runs the forward pass once and pulls back one one-hot
    cotangent per target, so the exact estimator costs one forward and C
    backward passes, not C forward passes.
    """

    def log_probs(params, x_i):
        return jax.nn.log_softmax(apply_fn(params, x_i[None])[0].astype(jnp.float32))

    def one_example(params, x_i, t_i, w_i):
        _, pull_back = jax.vjp(lambda p: log_probs(p, x_i), params)
        cotangents = jax.nn.one_hot(t_i, num_classes, dtype=jnp.float32)  # (K, C)
        (grads,) = jax.vmap(pull_back)(cotangents)  # each leaf (K, *leaf.shape)
        return jax.tree.map(
            lambda g: jnp.tensordot(w_i, jnp.square(g.astype(jnp.float32)), axes=1), grads
        )

    def engine(params, x, targets, weights):
        per_example = jax.vmap(one_example, in_axes=(None, 0, 0, 0))(params, x, targets, weights)
        return jax.tree.map(lambda s: jnp.sum(s, axis=0), per_example)

    return engine


def targets_and_weights(
    estimator: str,
    logits: jax.Array | None,
    y: jax.Array | None,
    keys: jax.Array | None,
    num_samples: int,
):
    """Per-example targets ``(B, K)`` and their weights ``(B, K)`` for an estimator.

    Example:
      >>> t, w = targets_and_weights("empirical", None, jnp.array([2, 0]), None, 1)
      >>> t.tolist(), w.tolist()
      ([[2], [0]], [[1.0], [1.0]])
    """
    if estimator == "empirical":
        return y[:, None].astype(jnp.int32), jnp.ones((y.shape[0], 1), jnp.float32)
    logits = jax.lax.stop_gradient(logits.astype(jnp.float32))
    if estimator == "exact":
        batch, classes = logits.shape
        targets = jnp.broadcast_to(jnp.arange(classes, dtype=jnp.int32), (batch, classes))
        return targets, jax.nn.softmax(logits)
    draw = lambda k, l: jax.random.categorical(k, l, shape=(num_samples,))
    targets = jax.vmap(draw)(keys, logits).astype(jnp.int32)
    return targets, jnp.full(targets.shape, 1.0 / num_samples, jnp.float32)


def _as_batches(data) -> Iterator[tuple[Any, Any]]:
    """Accepts one ``(x, y)`` pair or an iterable of pairs; ``y`` may be None."""
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and hasattr(data[0], "shape")
        and (data[1] is None or hasattr(data[1], "shape"))
    ):
        yield data  # one pair; its shapes are checked with the batch
        return
    if not isinstance(data, Iterable):
        raise TypeError(
            f"data must be an (x, y) pair or an iterable of pairs, got {type(data).__name__}"
        )
    for item in data:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"each batch must be an (x, y) pair, got {type(item).__name__}")
        yield tuple(item)


def _probe_num_classes(apply_fn: ApplyFn, params: Any, x: np.ndarray) -> int:
    """Checks that ``params`` fit ``apply_fn`` and returns the number of classes."""
    try:
        out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
    except Exception as err:  # flax raises many types here; surface one clear error
        raise ValueError(
            f"params do not fit apply_fn for inputs of shape {(1, *x.shape[1:])}: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if not hasattr(out, "shape") or len(out.shape) != 2:
        raise ValueError(
            f"apply_fn must return logits of shape (batch, classes), got {getattr(out, 'shape', out)}"
        )
    return int(out.shape[1])


def _check_batch(x, y, estimator: str, example_shape, num_classes: int):
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and feature axes, got shape {x.shape}")
    if not is_real_number_dtype(x.dtype):
        raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
    if example_shape is not None and x.shape[1:] != example_shape:
        raise ValueError(f"every batch must have example shape {example_shape}, got {x.shape[1:]}")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf")
    if y is None:
        if estimator == "empirical":
            raise ValueError(
                "the empirical estimator needs labels; pass (x, y) or use 'sampled'/'exact'"
            )
        return x, np.zeros((x.shape[0],), np.int32)
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels must have shape ({x.shape[0]},) to match x {x.shape}, got {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if estimator == "empirical" and y.size:
        check_labels(y, num_classes, name="labels")
    return x, y.astype(np.int32)


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    if a.shape[0] == rows:
        return a
    pad = np.zeros((rows - a.shape[0], *a.shape[1:]), a.dtype)
    return np.concatenate([a, pad])


def _make_chunk_fn(
    engine: Engine,
    apply_fn: ApplyFn,
    estimator: str,
    num_samples: int,
    mesh: Mesh | None = None,
    axis: str | None = None,
):
    """Jitted ``(params, x, y, mask, key, offset) -> (Σ over the chunk, examples counted)``.

    Padded rows have mask 0. With a mesh, the batch axis is split over ``axis``
    and the sums are reduced across it.
    """
    # The layer-wise engine brings apply_fn with its fast convolution routing.
    logits_fn = getattr(engine, "logits_fn", apply_fn)

    def chunk_sum(params, x, y, mask, key, offset):
        logits = None if estimator == "empirical" else logits_fn(params, x)
        keys = None
        if estimator == "sampled":
            # Keyed by the global example index, so the draw is the same however data is batched.
            keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(x.shape[0]))
        targets, weights = targets_and_weights(estimator, logits, y, keys, num_samples)
        return engine(params, x, targets, weights * mask[:, None]), jnp.sum(mask)

    if mesh is None:
        return jax.jit(chunk_sum)

    def local_sum(params, x, y, mask, key, offset):
        shard = jax.lax.axis_index(axis)
        sums, count = chunk_sum(params, x, y, mask, key, offset + shard * x.shape[0])
        return jax.lax.psum((sums, count), axis)

    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(axis))
    sharded = jax.shard_map(
        local_sum,
        mesh=mesh,
        in_specs=(P(), P(axis), P(axis), P(axis), P(), P()),
        out_specs=P(),
        check_vma=False,
    )
    return jax.jit(
        sharded,
        in_shardings=(replicated, split, split, split, replicated, replicated),
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
      params: the parameter pytree the Fisher is taken with respect to.
      data: one ``(x, y)`` pair of arrays or an iterable of pairs, streamed
        batch by batch. ``y`` may be None for ``"sampled"`` and ``"exact"``.
      estimator: ``"empirical"``, ``"sampled"`` or ``"exact"`` (module docstring).
      key: PRNG key, required by ``"sampled"``.
      chunk_size: examples per compiled step; bounds peak memory. Defaults to
        the first batch's size, capped by the engine's preferred chunk (16 for
        the layer-wise engine on CPU, where smaller steps stay in cache). Ragged
        chunks are zero-weight padded, so one compilation serves all.
      num_samples: labels drawn per example by ``"sampled"``.
      method: ``"vmap"`` (per-example ``vjp``, the reference), ``"layerwise"``
        (see :mod:`ldnas_jax.fisher._layerwise`), or ``"auto"``: layer-wise when the
        model has ``nn.Dense`` / ``nn.Conv`` layers it can handle, else vmap.
      mesh: a :class:`jax.sharding.Mesh` to split each chunk's batch over (see
        the module docstring, also for several hosts). Default: the mesh the
        first batch's ``x`` is sharded on, if any, else one device.
      data_axis: the mesh axis for the batch; default ``"data"`` if the mesh has
        one, else its first axis.
      progress: show a progress bar over batches.

    Returns:
      A pytree shaped like ``params``, float32: the mean over *all* examples of
      the weighted squared per-example gradients of log p.

    Raises:
      ValueError: unknown estimator or method, empty data, mismatched shapes,
        labels outside the model's classes, NaN/inf in ``x``, params that do
        not fit ``apply_fn``; :class:`NonFiniteError` (a ``ValueError``) for
        NaN/inf in ``params`` or in the resulting Fisher.
      TypeError: non-integer labels or counts, non-numeric ``x``, a ``key``
        that is not a PRNG key, ``data`` that is not a pair or pairs.

    Example:
      >>> import flax.linen as nn
      >>> model = nn.Dense(3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
      >>> x, y = np.ones((5, 4), np.float32), np.array([0, 1, 2, 0, 1])
      >>> f = fisher_diagonal(lambda p, x: model.apply({"params": p}, x), params, (x, y))
      >>> f["kernel"].shape
      (4, 3)
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
    check_finite_tree(params, what="params")
    key = jax.random.key(0) if key is None else key

    total, count, counted, chunk_fn = None, 0, None, None
    offset, processes = 0, 1  # offset: the global index of the next chunk's first row
    num_classes, example_shape = None, None
    for x, y in tqdm(
        _as_batches(data), desc=f"Fisher ({estimator})", disable=not progress, leave=False
    ):
        if chunk_fn is None:
            mesh, data_axis = data_mesh(mesh, data_axis, x)
        x = np.asarray(x)
        if chunk_fn is None:
            if x.ndim < 2 or x.shape[0] == 0:
                raise ValueError(
                    f"x must be a non-empty batch with feature axes, got shape {x.shape}"
                )
            if not is_real_number_dtype(x.dtype):
                raise TypeError(f"x must hold real numbers, got dtype {x.dtype}")
            num_classes = _probe_num_classes(apply_fn, params, x)
            example_shape = x.shape[1:]
            chunk_fn, preferred = _cached_chunk_fn(
                apply_fn, params, x, num_classes, method, estimator, num_samples, mesh, data_axis
            )
            chunk = chunk_size or min(x.shape[0], preferred or x.shape[0])
            if mesh is not None:  # a multiple of the shards: padded rows carry zero weight
                shards = mesh.shape[data_axis] // jax.process_count()
                chunk = -(-chunk // shards) * shards
                processes = jax.process_count()
                if processes > 1:  # device_put checks they match on every process; jit would not
                    params, key = replicate(mesh, params), replicate_key(mesh, key)
        x, y = _check_batch(x, y, estimator, example_shape, num_classes)
        for start in range(0, x.shape[0], chunk):
            xc, yc = x[start : start + chunk], y[start : start + chunk]
            rows = xc.shape[0]
            mask = _pad_rows(np.ones((rows,), np.float32), chunk)
            args = to_device(mesh, data_axis, _pad_rows(xc, chunk), _pad_rows(yc, chunk), mask)
            part, part_count = chunk_fn(params, *args, key, offset)
            total = part if total is None else _tree_add(total, part)
            counted = part_count if counted is None else counted + part_count
            count += rows
            # On several processes a global chunk holds `chunk` rows, padded, of each process.
            offset = count if processes == 1 else offset + chunk * processes
    if count == 0:
        raise ValueError("data is empty: the Fisher is a mean over examples and needs at least one")
    count = round(float(counted))  # over all processes
    fisher = jax.tree.map(lambda s: s / count, total)
    check_finite_tree(fisher, what="Fisher diagonal")
    return fisher


# Compiled chunk steps of recent calls, so that calling fisher_diagonal again with the
# same apply_fn (another task's data, another batch) does not compile again.
_CHUNK_FN_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
_CHUNK_FN_CACHE_SIZE = 8


def _cached_chunk_fn(
    apply_fn, params, x, num_classes, method, estimator, num_samples, mesh, data_axis
):
    leaves, treedef = jax.tree.flatten(params)
    signature = (
        id(apply_fn),
        method,
        estimator,
        num_samples,
        mesh,
        data_axis,
        treedef,
        tuple((np.shape(l), jnp.result_type(l)) for l in leaves),
        x.shape[1:],
        x.dtype,
    )
    hit = _CHUNK_FN_CACHE.get(signature)
    if hit is not None and hit[0] is apply_fn:
        _CHUNK_FN_CACHE.move_to_end(signature)
        return hit[1], hit[2]
    engine = _select_engine(method, apply_fn, params, x[:1], num_classes)
    chunk_fn = _make_chunk_fn(engine, apply_fn, estimator, num_samples, mesh, data_axis)
    preferred = getattr(engine, "preferred_chunk", None)
    _CHUNK_FN_CACHE[signature] = (apply_fn, chunk_fn, preferred)  # holds apply_fn: ids stay unique
    while len(_CHUNK_FN_CACHE) > _CHUNK_FN_CACHE_SIZE:
        _CHUNK_FN_CACHE.popitem(last=False)
    return chunk_fn, preferred


@jax.jit
def _tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


def _select_engine(
    method: str, apply_fn: ApplyFn, params: Any, example_x: np.ndarray, num_classes: int
) -> Engine:
    """``"auto"``: the layer-wise engine when it covers at least one layer, else the reference."""
    if method == "vmap":
        return make_vmap_engine(apply_fn, num_classes)
    from ldnas_jax.fisher._layerwise import layerwise_plan, make_layerwise_engine

    if method == "layerwise":
        return make_layerwise_engine(apply_fn, params, example_x, num_classes)
    try:
        plan = layerwise_plan(apply_fn, params, example_x)
    except Exception as err:  # noqa: BLE001 - an exotic model the tracer cannot follow: stay exact, go slow
        warnings.warn(
            f"layer-wise Fisher unavailable ({type(err).__name__}: {err}); using vmap",
            RuntimeWarning,
            stacklevel=3,
        )
        return make_vmap_engine(apply_fn, num_classes)
    if not plan.layers:
        return make_vmap_engine(apply_fn, num_classes)
    return make_layerwise_engine(apply_fn, params, example_x, num_classes, plan=plan)
