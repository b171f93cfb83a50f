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
layer-wise engine lives in :mod:`ldnas_jax.fisher_layerwise`.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ldnas_jax._checks import check_finite_tree, check_labels

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
        lambda g: jnp.tensordot(w_i, jnp.square(g.astype(jnp.float32)), axes=1), grads)

  def engine(params, x, targets, weights):
    per_example = jax.vmap(one_example, in_axes=(None, 0, 0, 0))(params, x, targets, weights)
    return jax.tree.map(lambda s: jnp.sum(s, axis=0), per_example)

  return engine


def targets_and_weights(estimator: str, logits: jax.Array | None, y: jax.Array | None,
                        keys: jax.Array | None, num_samples: int):
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
  if isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape") and (
      data[1] is None or hasattr(data[1], "shape")) and np.ndim(data[0]) >= 2:
    yield data
    return
  if not isinstance(data, Iterable):
    raise TypeError(f"data must be an (x, y) pair or an iterable of pairs, got {type(data).__name__}")
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
        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
  if not hasattr(out, "shape") or len(out.shape) != 2:
    raise ValueError(f"apply_fn must return logits of shape (batch, classes), got {getattr(out, 'shape', out)}")
  return int(out.shape[1])


def _check_batch(x, y, estimator: str, example_shape, num_classes: int):
  x = np.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"x must have a batch axis and feature axes, got shape {x.shape}")
  if example_shape is not None and x.shape[1:] != example_shape:
    raise ValueError(f"every batch must have example shape {example_shape}, got {x.shape[1:]}")
  if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
    raise ValueError("x contains NaN or inf")
  if y is None:
    if estimator == "empirical":
      raise ValueError("the empirical estimator needs labels; pass (x, y) or use 'sampled'/'exact'")
    return x, np.zeros((x.shape[0],), np.int32)
  y = np.asarray(y)
  if y.ndim != 1 or y.shape[0] != x.shape[0]:
    raise ValueError(f"labels must have shape ({x.shape[0]},) to match x {x.shape}, got {y.shape}")
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


def _make_chunk_fn(engine: Engine, apply_fn: ApplyFn, estimator: str, num_samples: int):
  """Jitted ``(params, x, y, mask, key, offset) -> Σ over the chunk``; padded rows have mask 0."""

  def chunk_sum(params, x, y, mask, key, offset):
    logits = None if estimator == "empirical" else apply_fn(params, x)
    keys = None
    if estimator == "sampled":
      # Keyed by the global example index, so the draw is the same however data is batched.
      keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(x.shape[0]))
    targets, weights = targets_and_weights(estimator, logits, y, keys, num_samples)
    return engine(params, x, targets, weights * mask[:, None])

  return jax.jit(chunk_sum)


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
      the first batch's size. Ragged chunks are zero-weight padded, so one
      compilation serves all.
    num_samples: labels drawn per example by ``"sampled"``.
    method: ``"vmap"`` (per-example ``vjp``), ``"layerwise"`` (see
      :mod:`ldnas_jax.fisher_layerwise`) or ``"auto"``.
    progress: show a progress bar over batches.

  Returns:
    A pytree shaped like ``params``, float32: the mean over *all* examples of
    the weighted squared per-example gradients of log p.

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
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  key = jax.random.key(0) if key is None else key

  total, count, chunk_fn = None, 0, None
  num_classes, example_shape = None, None
  for x, y in tqdm(_as_batches(data), desc=f"Fisher ({estimator})", disable=not progress, leave=False):
    x = np.asarray(x)
    if chunk_fn is None:
      if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch with feature axes, got shape {x.shape}")
      num_classes = _probe_num_classes(apply_fn, params, x)
      example_shape = x.shape[1:]
      chunk = chunk_size or x.shape[0]
      engine = _select_engine(method, apply_fn, params, x[:1], num_classes)
      chunk_fn = _make_chunk_fn(engine, apply_fn, estimator, num_samples)
    x, y = _check_batch(x, y, estimator, example_shape, num_classes)
    for start in range(0, x.shape[0], chunk):
      xc, yc = x[start:start + chunk], y[start:start + chunk]
      rows = xc.shape[0]
      mask = _pad_rows(np.ones((rows,), np.float32), chunk)
      part = chunk_fn(params, _pad_rows(xc, chunk), _pad_rows(yc, chunk), mask, key, count)
      total = part if total is None else jax.tree.map(jnp.add, total, part)
      count += rows
  if count == 0:
    raise ValueError("data is empty: the Fisher is a mean over examples and needs at least one")
  fisher = jax.tree.map(lambda s: s / count, total)
  check_finite_tree(fisher, what="Fisher diagonal")
  return fisher


def _select_engine(method: str, apply_fn: ApplyFn, params: Any, example_x: np.ndarray,
                   num_classes: int) -> Engine:
  if method == "vmap":
    return make_vmap_engine(apply_fn, num_classes)
  try:  # the layer-wise engine is optional: it may not cover every model
    from ldnas_jax.fisher_layerwise import make_layerwise_engine
  except ImportError:
    if method == "layerwise":
      raise
    return make_vmap_engine(apply_fn, num_classes)
  return make_layerwise_engine(apply_fn, params, example_x, num_classes)
