"""Optax training and evaluation of classifiers: ε-networks and final architectures.

A model here is any Flax linen module whose ``model.apply(variables, x)``
returns logits. A model whose ``__call__`` names a ``train`` argument gets
``train=True`` while it learns and ``train=False`` otherwise; any other model is
called with its input alone. Variables are a dict with ``"params"`` and, for
models with BatchNorm, ``"batch_stats"``; both are handled.
"""

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldnas_jax._checks import (
    NonFiniteError,
    check_classification_data,
    check_finite_tree,
    check_int,
    check_key,
    check_labels,
)
from ldnas_jax.checkpoint import key_fingerprint
from ldnas_jax.data.batching import pad_rows
from ldnas_jax.resumable import LoopState, Step, StepCheckpoints, run_resumable
from ldnas_jax.xla_cpu import fast_routes

Variables = dict[str, Any]


class TrainResult(NamedTuple):
    """What :func:`train_classifier` returns.

    Attributes:
      variables: trained ``{"params": ..., "batch_stats": ...}``.
      history: one dict per epoch with ``epoch``, ``loss``, ``train_accuracy``
        and, when validation data was given, ``val_accuracy``.
    """

    variables: Variables
    history: list[dict[str, float]]


def init_variables(model: nn.Module, key: jax.Array, example_x: np.ndarray) -> Variables:
    """Initialises a model on one example batch.

    Example:
      >>> from ldnas_jax.models import SmallVGG
      >>> v = init_variables(SmallVGG(2), jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
      >>> sorted(v)
      ['batch_stats', 'params']
    """
    check_key(key)
    example_x = np.asarray(example_x)
    # Models here may take any rank (images are NHWC); the batch axis is all that is common.
    if example_x.ndim < 2 or example_x.shape[0] == 0:
        raise ValueError(
            f"example_x must be a non-empty batch (N, ...) such as NHWC images, "
            f"got shape {example_x.shape}"
        )
    return dict(model.init(key, jnp.asarray(example_x[:1]), **mode_kwargs(model, train=False)))


def mode_kwargs(model: nn.Module, *, train: bool) -> dict[str, bool]:
    """``{"train": train}`` when ``model.__call__`` names a ``train`` argument, else ``{}``.

    A model without one (a plain MLP, ``nn.Sequential``) behaves alike in
    training and evaluation, so it is called with its input alone rather than
    failing inside Flax with an unexpected-keyword ``TypeError``.

    Example:
      >>> from ldnas_jax.models import SmallVGG
      >>> mode_kwargs(SmallVGG(2), train=True), mode_kwargs(nn.Dense(2), train=True)
      ({'train': True}, {})
    """
    try:
        parameters = inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):  # no introspectable signature: call with x alone
        return {}
    named = parameters.get("train")
    takes_it = named is not None and named.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    return {"train": train} if takes_it else {}


def _check_nhwc(x: np.ndarray, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(
            f"{name}: x must be NHWC images (N, H, W, C), ndim 4, got shape {x.shape}"
            + ("; add a channel axis, e.g. x[..., None]" if x.ndim == 3 else "")
        )


def _num_logits(model: nn.Module, variables: Variables, x: np.ndarray) -> int:
    """Classes the model predicts, from the shape of its logits (traced, not computed).

    Cached per model and shapes: tracing a model costs milliseconds, as much as an
    epoch of a small one, and every training and evaluation call asks.
    """
    leaves, structure = jax.tree.flatten(variables)
    shapes = tuple((np.shape(a), _dtype_name(a)) for a in leaves)
    example = (np.shape(x)[1:], _dtype_name(x))
    try:
        return _cached_logits_width(model, structure, shapes, example)
    except TypeError:  # unhashable model
        return _logits_width(model, structure, shapes, example)


def _dtype_name(a) -> str:
    dtype = getattr(a, "dtype", None)  # np.result_type of a jax.Array is deprecated
    return (np.dtype(dtype) if dtype is not None else np.result_type(a)).name


def _logits_width(model, structure, shapes, example) -> int:
    variables = jax.tree.unflatten(structure, [jax.ShapeDtypeStruct(s, d) for s, d in shapes])
    x = jax.ShapeDtypeStruct((1, *example[0]), example[1])
    mode = mode_kwargs(model, train=False)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, **mode), variables, x)
    return int(logits.shape[-1])


_cached_logits_width = functools.lru_cache(maxsize=64)(_logits_width)


def eval_apply_fn(model: nn.Module, variables: Variables) -> Callable[[Any, jax.Array], jax.Array]:
    """Returns ``apply_fn(params, x) -> logits`` in eval mode with other collections closed over.

    This is the form :func:`ldnas_jax.fisher_diagonal` takes: BatchNorm uses its
    running statistics, so examples stay independent of one another.

    Example:
      >>> from ldnas_jax.models import SmallVGG
      >>> model = SmallVGG(3)
      >>> v = init_variables(model, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
      >>> eval_apply_fn(model, v)(v["params"], np.zeros((4, 32, 32, 3), np.float32)).shape
      (4, 3)
    """
    others = {k: v for k, v in variables.items() if k != "params"}
    mode = mode_kwargs(model, train=False)

    def apply_fn(params, x):
        return model.apply({"params": params, **others}, x, **mode)

    return apply_fn


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of (B, K) logits against (B,) integer labels.

    The one loss of the package: classifier training, FUSE and random search.

    Example:
      >>> round(float(cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))), 4)  # log 4
      1.3863
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def optimizer_step(optimizer: optax.GradientTransformation, grads, opt_state, params):
    """One Optax update applied: returns ``(params, opt_state)``.

    The update is traced with standard dtype promotion: Optax's own arithmetic
    (Adam's ``decay ** count`` with an int32 count) needs it, and a user who
    runs JAX with ``jax_numpy_dtype_promotion="strict"`` should not have to
    relax it for a library's optimiser.

    Example:
      >>> opt = optax.sgd(0.5)
      >>> params, _ = optimizer_step(opt, {"w": jnp.ones(2)}, opt.init({"w": jnp.zeros(2)}),
      ...                            {"w": jnp.zeros(2)})
      >>> params["w"]
      Array([-0.5, -0.5], dtype=float32)
    """
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state


@functools.lru_cache(maxsize=8)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    # One object per step size, so equal models share one compiled train step.
    return optax.adam(learning_rate)


def _train_epoch(model: nn.Module, optimizer: optax.GradientTransformation):
    """The jitted epoch, shared by every run of an equal model and the same optimiser."""
    try:
        step = _cached_train_step(model, optimizer)
    except TypeError:  # unhashable model or optimiser: compile an epoch of its own
        return _make_train_epoch(make_train_step(model, optimizer))
    return _cached_train_epoch(step)


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation):
    """One jitted Optax step of cross-entropy training, BatchNorm statistics included.

    The step is ``step(params, others, opt_state, x, y) -> (params, others,
    opt_state, loss, correct)``, where ``others`` holds the non-parameter
    collections (e.g. ``batch_stats``) and ``correct`` counts right predictions.
    The loss is traced through :func:`ldnas_jax.xla_cpu._fast_routes`.

    Example:
      >>> from ldnas_jax.models import SmallVGG
      >>> model, opt = SmallVGG(num_classes=2, features=(4,), hidden=4), optax.adam(1e-3)
      >>> x, y = np.zeros((2, 4, 4, 3), np.float32), np.array([0, 1])
      >>> v = init_variables(model, jax.random.key(0), x)
      >>> others = {k: c for k, c in v.items() if k != "params"}
      >>> step = make_train_step(model, opt)
      >>> params, others, state, loss, correct = step(
      ...     v["params"], others, opt.init(v["params"]), x, y)
      >>> int(correct)
      1
    """
    mode = mode_kwargs(model, train=True)

    # Traced around XLA:CPU's slow small-map convolutions and max-pool derivative.
    @fast_routes
    def loss_fn(params, others, x, y):
        mutable = [k for k in others]
        logits, updates = model.apply({"params": params, **others}, x, mutable=mutable, **mode)
        return cross_entropy(logits, y), (logits, updates)

    @jax.jit
    def step(params, others, opt_state, x, y):
        (loss, (logits, new_others)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, others, x, y
        )
        params, opt_state = optimizer_step(optimizer, grads, opt_state, params)
        correct = jnp.sum(jnp.argmax(logits, -1) == y)
        return params, dict(new_others), opt_state, loss, correct

    return step


_cached_train_step = functools.lru_cache(maxsize=32)(make_train_step)


def _make_train_epoch(step):
    """One epoch of ``step`` as a single compiled ``lax.scan`` over device-resident data.

    ``epoch_fn(params, others, opt_state, x, y, key, epoch, steps=, batch_size=)`` draws
    the epoch's permutation from ``fold_in(key, epoch)`` on the device, the very
    permutation the host loop drew, and walks its first ``steps * batch_size`` entries.
    It returns ``(params, others, opt_state, (losses, correct, finite))``: the (steps,)
    losses come back whole, so the caller checks them once per epoch and can still name
    the first non-finite step; ``correct`` is the epoch's count of right predictions and
    ``finite`` whether every parameter is finite. Keyed by the step object, so clearing
    ``_cached_train_step`` also retires the epochs built on it.
    """

    @functools.partial(jax.jit, static_argnames=("steps", "batch_size"))
    def epoch_fn(params, others, opt_state, x, y, key, epoch, *, steps, batch_size):
        order = jax.random.permutation(jax.random.fold_in(key, epoch), x.shape[0])
        batches = order[: steps * batch_size].reshape(steps, batch_size)

        def body(carry, index):
            params, others, opt_state, correct = carry
            params, others, opt_state, loss, right = step(
                params, others, opt_state, x[index], y[index]
            )
            return (params, others, opt_state, correct + right), loss

        start = (params, others, opt_state, jnp.zeros((), jnp.int32))
        (params, others, opt_state, correct), losses = jax.lax.scan(body, start, batches)
        finite = jnp.bool_(True)
        for leaf in jax.tree.leaves(params):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        return params, others, opt_state, (losses, correct, finite)

    return epoch_fn


_cached_train_epoch = functools.lru_cache(maxsize=32)(_make_train_epoch)


def train_classifier(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    *,
    key: jax.Array,
    epochs: int = 5,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    variables: Variables | None = None,
    progress: bool = True,
    description: str = "train",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    stop: Callable[[list[dict[str, float]], Variables], bool] | None = None,
) -> TrainResult:
    """Trains a classifier with Optax on in-memory arrays.

    Batches of epoch e are drawn from a permutation seeded by ``fold_in(key, e)``
    (after a split), so a resumed run draws exactly the batches an unbroken one
    would; the ragged tail of each epoch is dropped so the epoch compiles once.
    The data go to the device once; each epoch is one compiled ``lax.scan`` that
    draws its permutation, gathers its batches and counts right predictions on the
    device, and its per-step losses come back once, at the end of the epoch.

    Args:
      model: a linen module returning logits; called with ``train=`` when its
        ``__call__`` takes that argument (see :func:`mode_kwargs`).
      train: ``(x, y)`` arrays, ``x`` NHWC float and ``y`` integer labels.
      key: PRNG key for initialisation and shuffling.
      epochs: passes over ``train``.
      batch_size: examples per step.
      learning_rate: Adam's step size when ``optimizer`` is None.
      optimizer: any Optax transformation, overriding ``learning_rate``; e.g.
        head-only fine-tuning is an ``optax.multi_transform`` that sets the
        frozen parameters' updates to zero. Reuse one object across calls: the
        compiled epoch is cached per (model, optimizer).
      val: optional ``(x, y)`` evaluated after each epoch.
      variables: start from these instead of a fresh initialisation.
      progress: show a tqdm bar.
      description: label for the progress bar and error messages.
      checkpoint_dir: when given, variables, optimiser state and history are
        saved there (Orbax, atomically) every ``checkpoint_every`` epochs and
        after the last one.
      checkpoint_every: epochs between checkpoints (>= 1).
      resume: continue from the newest checkpoint in ``checkpoint_dir``; the
        result equals that of an unbroken run. Without it a ``checkpoint_dir``
        that already holds checkpoints is refused.
      stop: optional early-stop hook ``stop(history, variables) -> bool``, called
        after every epoch (its record already in ``history``, with
        ``val_accuracy`` when ``val`` is given) and once with a resumed
        checkpoint's history and variables; True ends training there, and that
        epoch is checkpointed. ``epochs`` is then a cap.

    Returns:
      :class:`TrainResult` with the trained variables and per-epoch history.

    Raises:
      TypeError: ``key`` is not a PRNG key, a count is not an int.
      ValueError: ``x`` not NHWC (ndim 4), labels outside the model's classes
        (the width of its logits), counts < 1.
      NonFiniteError: given ``variables`` hold NaN or inf, or a loss or the
        variables became NaN or inf (checked at the end of each epoch); the
        message names the epoch and the first bad step, and the last checkpoint
        (all finite) stays.
      CheckpointError: a checkpoint to resume from is corrupt or belongs to a
        different run (other key, data size or model).

    Example:
      >>> from ldnas_jax.models import SmallVGG
      >>> x = np.random.rand(64, 32, 32, 3).astype(np.float32); y = np.arange(64) % 2
      >>> result = train_classifier(SmallVGG(2), (x, y), key=jax.random.key(0), epochs=1,
      ...                           batch_size=32, progress=False)
      >>> len(result.history)
      1
    """
    check_key(key)
    epochs = check_int(epochs, name="epochs")
    batch_size = check_int(batch_size, name="batch_size")
    x, y = check_classification_data(*train, name="train")
    _check_nhwc(x, "train")
    init_key, shuffle_key = jax.random.split(key)
    variables = _starting_variables(model, variables, init_key, x, y, description)
    if val is not None:
        val = check_classification_data(*val, name="val")
        check_labels(val[1], _num_logits(model, variables, val[0]), name="val")
    params = variables["params"]
    others = {k: v for k, v in variables.items() if k != "params"}
    optimizer = optimizer or _adam(learning_rate)
    batch_size = min(batch_size, len(x))
    steps_per_epoch = len(x) // batch_size
    epoch_fn = _train_epoch(model, optimizer)
    # Placed once: every epoch gathers its batches on the device.
    x_device, y_device = jax.device_put(x), jax.device_put(y)

    def one_epoch(epoch: int, state: LoopState) -> Step:
        params, others, opt_state, summary = epoch_fn(
            *(state.arrays[name] for name in ("params", "others", "opt_state")),
            x_device, y_device, shuffle_key, np.int32(epoch),
            steps=steps_per_epoch, batch_size=batch_size,
        )  # fmt: skip
        losses, correct, finite = jax.device_get(summary)  # the epoch's one read-back
        _check_epoch_losses(losses, epoch, steps_per_epoch, description)
        if not finite:  # find the leaf to name
            check_finite_tree(params, what=f"{description}: parameters after epoch {epoch + 1}")
        record = _epoch_record(epoch, losses, correct, steps_per_epoch, batch_size)
        trained = {"params": params, **others}
        if val is not None:  # checked once below; the epoch's parameters are finite
            record["val_accuracy"] = _evaluate_checked(model, trained, *val)["accuracy"]
        history = [*state.history, record]
        arrays = _checkpoint_tree(params, others, opt_state)
        return Step(arrays, record, stop=_asks_stop(stop, history, trained))

    final = run_resumable(
        one_epoch,
        LoopState(_checkpoint_tree(params, others, optimizer.init(params)), [], {}),
        steps=epochs,
        fingerprint=_train_fingerprint(key, x, batch_size, val),
        store=None if checkpoint_dir is None else StepCheckpoints(checkpoint_dir, resume),
        every=checkpoint_every,
        description=description,
        unit="epochs",
        progress=progress,
        bar_units=steps_per_epoch,
        postfix=lambda r: {"loss": f"{r['loss']:.3f}", "acc": f"{r['train_accuracy']:.3f}"},
        # A resumed run that had already stopped stays stopped.
        still_stopped=lambda s: _asks_stop(stop, s.history, _variables_of(s.arrays)),
    )
    variables = _variables_of(final.arrays)
    check_finite_tree(variables, what=f"{description}: trained variables")
    return TrainResult(variables, final.history)


def _checkpoint_tree(params, others, opt_state) -> dict:
    return {"params": params, "others": others, "opt_state": opt_state}


def _variables_of(arrays: dict) -> Variables:
    return {"params": arrays["params"], **arrays["others"]}


def _asks_stop(stop, history: list[dict], variables: Variables) -> bool:
    return stop is not None and bool(stop(history, variables))


def _starting_variables(model, variables, init_key, x, y, description: str) -> Variables:
    """The given ``variables`` (checked finite) or a fresh initialisation, checked against ``y``."""
    if variables is None:
        variables = init_variables(model, init_key, x)
    else:
        check_finite_tree(variables, what=f"{description}: initial variables")
    # A label beyond the head trains on an all-zero one-hot without any error.
    check_labels(y, _num_logits(model, variables, x), name="train")
    return variables


def _train_fingerprint(key, x: np.ndarray, batch_size: int, val) -> dict:
    """What a checkpoint must agree on to continue this run (``epochs`` may grow)."""
    fingerprint = {
        "kind": "train_classifier",
        "key": key_fingerprint(key),
        "examples": len(x),
        "input_shape": list(x.shape[1:]),
        "batch_size": batch_size,
    }
    if val is not None:  # its history records hold val_accuracy: not a run without val
        fingerprint["val_examples"] = len(val[1])
    return fingerprint


def _check_epoch_losses(losses: np.ndarray, epoch: int, steps_per_epoch: int, description) -> None:
    """Raises NonFiniteError naming the epoch's first non-finite step loss, if any."""
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        s = int(bad[0])
        raise NonFiniteError(
            f"{description}: loss became {float(losses[s])} at epoch {epoch + 1}, step {s + 1} "
            f"of {steps_per_epoch} (global step {epoch * steps_per_epoch + s + 1})"
        )


def _epoch_record(
    epoch: int, losses: np.ndarray, correct, steps_per_epoch: int, batch_size: int
) -> dict[str, float]:
    """The epoch's history record: its mean step loss and its training accuracy."""
    # Summed in order in float64, as when each step's loss came back alone.
    total_loss = 0.0
    for loss in losses.tolist():
        total_loss += loss
    total_correct = int(correct)
    return {
        "epoch": epoch + 1,
        "loss": total_loss / steps_per_epoch,
        "train_accuracy": total_correct / (steps_per_epoch * batch_size),
    }


def evaluate(
    model: nn.Module,
    variables: Variables,
    data: tuple[np.ndarray, np.ndarray],
    *,
    batch_size: int = 512,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a classifier in eval mode.

    Batches hold ``min(batch_size, next power of two >= len(x))`` rows; the
    last is zero-padded to that size and its padding masked out, so one
    compiled program per model and batch size serves every data size in a
    bucket (the program is cached across calls, see :func:`_evaluation_sums`).

    Example:
      >>> from ldnas_jax.models import SmallVGG
      >>> model = SmallVGG(2); x = np.zeros((8, 32, 32, 3), np.float32); y = np.zeros(8, int)
      >>> v = init_variables(model, jax.random.key(0), x)
      >>> sorted(evaluate(model, v, (x, y)))
      ['accuracy', 'loss']
    """
    batch_size = check_int(batch_size, name="batch_size")
    x, y = check_classification_data(*data, name="evaluation data")
    check_finite_tree(variables, what="evaluate: variables")
    # Out-of-range labels would give accuracy 0 and a NaN loss without a word.
    check_labels(y, _num_logits(model, variables, x), name="evaluation data")
    return _evaluate_checked(model, variables, x, y, batch_size)


def _evaluate_checked(model, variables, x, y, batch_size: int = 512) -> dict[str, float]:
    """:func:`evaluate` on inputs its caller has checked (e.g. val, once per training)."""
    sums = _evaluation_sums(model)
    rows = min(batch_size, 1 << (len(x) - 1).bit_length())
    correct, loss = 0, 0.0
    for start in range(0, len(x), rows):
        xb, yb = x[start : start + rows], y[start : start + rows]
        mask = pad_rows(rows, np.ones(len(xb), bool))
        right, total = sums(variables, *pad_rows(rows, xb, yb), mask)
        correct += int(right)
        loss += float(total)
    return {"accuracy": correct / len(x), "loss": loss / len(x)}


def _evaluation_sums(model: nn.Module):
    """The jitted ``(variables, x, y, mask) -> (correct, summed loss)`` of ``model``, cached.

    Cached per model (equal linen modules share it), so evaluating the same
    model again compiles nothing new; an unhashable model gets a fresh one.
    """
    try:
        return _cached_evaluation_sums(model)
    except TypeError:  # unhashable module field
        return _make_evaluation_sums(model)


def _make_evaluation_sums(model: nn.Module):
    mode = mode_kwargs(model, train=False)

    @jax.jit
    def sums(variables, x, y, mask):
        logits = model.apply(variables, x, **mode)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, -1) == y) & mask
        return jnp.sum(correct), jnp.sum(jnp.where(mask, losses, 0.0))

    return sums


_cached_evaluation_sums = functools.lru_cache(maxsize=32)(_make_evaluation_sums)


def is_epsilon_approximation(accuracy: float, epsilon: float) -> bool:
    """The paper's test: a network is an ε-approximation when accuracy ≥ 1 − ε.

    Example:
      >>> is_epsilon_approximation(0.93, epsilon=0.1)
      True
    """
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon}")
    if not 0 <= accuracy <= 1:  # also refuses NaN
        raise ValueError(f"accuracy must lie in [0, 1], got {accuracy}")
    return accuracy >= 1 - epsilon
