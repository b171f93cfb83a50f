"""Optax training and evaluation of classifiers: ε-networks and final architectures.

A model here is any Flax linen module called as ``model.apply(variables, x,
train=...)`` that returns logits. Variables are a dict with ``"params"`` and,
for models with BatchNorm, ``"batch_stats"``; both are handled.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ldnas_jax._checks import NonFiniteError, check_classification_data, check_finite_tree

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
    return dict(model.init(key, jnp.asarray(example_x[:1]), train=False))


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

    def apply_fn(params, x):
        return model.apply({"params": params, **others}, x, train=False)

    return apply_fn


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy for integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _make_train_step(model: nn.Module, optimizer: optax.GradientTransformation):
    def loss_fn(params, others, x, y):
        mutable = [k for k in others]
        logits, updates = model.apply({"params": params, **others}, x, train=True, mutable=mutable)
        return cross_entropy(logits, y), (logits, updates)

    @jax.jit
    def step(params, others, opt_state, x, y):
        (loss, (logits, new_others)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, others, x, y
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = jnp.sum(jnp.argmax(logits, -1) == y)
        return params, dict(new_others), opt_state, loss, correct

    return step


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
) -> TrainResult:
    """Trains a classifier with Optax on in-memory arrays.

    Batches are drawn from a permutation seeded by ``key``; the ragged tail of
    each epoch is dropped so the step compiles once.

    Args:
      model: a linen module returning logits, called with ``train=``.
      train: ``(x, y)`` arrays, ``x`` NHWC float and ``y`` integer labels.
      key: PRNG key for initialisation and shuffling.
      epochs: passes over ``train``.
      batch_size: examples per step.
      learning_rate: Adam's step size when ``optimizer`` is None.
      optimizer: any Optax transformation, overriding ``learning_rate``.
      val: optional ``(x, y)`` evaluated after each epoch.
      variables: start from these instead of a fresh initialisation.
      progress: show a tqdm bar.
      description: label for the progress bar.

    Returns:
      :class:`TrainResult` with the trained variables and per-epoch history.

    Example:
      >>> from ldnas_jax.models import SmallVGG
      >>> x = np.random.rand(64, 32, 32, 3).astype(np.float32); y = np.arange(64) % 2
      >>> result = train_classifier(SmallVGG(2), (x, y), key=jax.random.key(0), epochs=1,
      ...                           batch_size=32, progress=False)
      >>> len(result.history)
      1
    """
    x, y = check_classification_data(*train, name="train")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    init_key, shuffle_key = jax.random.split(key)
    if variables is None:
        variables = init_variables(model, init_key, x)
    params = variables["params"]
    others = {k: v for k, v in variables.items() if k != "params"}
    optimizer = optimizer or optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    step = _make_train_step(model, optimizer)

    batch_size = min(batch_size, len(x))
    steps_per_epoch = len(x) // batch_size
    history = []
    bar = tqdm(total=epochs * steps_per_epoch, desc=description, disable=not progress, leave=False)
    for epoch in range(epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), len(x)))
        total_loss, total_correct = 0.0, 0
        for s in range(steps_per_epoch):
            idx = order[s * batch_size : (s + 1) * batch_size]
            params, others, opt_state, loss, correct = step(
                params, others, opt_state, x[idx], y[idx]
            )
            total_loss += float(loss)
            total_correct += int(correct)
            bar.update(1)
        record = {
            "epoch": epoch + 1,
            "loss": total_loss / steps_per_epoch,
            "train_accuracy": total_correct / (steps_per_epoch * batch_size),
        }
        if not np.isfinite(record["loss"]):
            raise NonFiniteError(
                f"{description}: loss became {record['loss']} in epoch {epoch + 1}"
            )
        if val is not None:
            record["val_accuracy"] = evaluate(model, {"params": params, **others}, val)["accuracy"]
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_accuracy']:.3f}")
    bar.close()
    variables = {"params": params, **others}
    check_finite_tree(variables, what=f"{description}: trained variables")
    return TrainResult(variables, history)


def evaluate(
    model: nn.Module,
    variables: Variables,
    data: tuple[np.ndarray, np.ndarray],
    *,
    batch_size: int = 512,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a classifier in eval mode.

    Example:
      >>> from ldnas_jax.models import SmallVGG
      >>> model = SmallVGG(2); x = np.zeros((8, 32, 32, 3), np.float32); y = np.zeros(8, int)
      >>> v = init_variables(model, jax.random.key(0), x)
      >>> sorted(evaluate(model, v, (x, y)))
      ['accuracy', 'loss']
    """
    x, y = check_classification_data(*data, name="evaluation data")
    logits_fn = jax.jit(eval_apply_fn(model, variables))
    correct, loss = 0, 0.0
    for start in range(0, len(x), batch_size):
        logits = logits_fn(variables["params"], x[start : start + batch_size])
        yb = y[start : start + batch_size]
        correct += int(jnp.sum(jnp.argmax(logits, -1) == yb))
        loss += float(optax.softmax_cross_entropy_with_integer_labels(logits, yb).sum())
    return {"accuracy": correct / len(x), "loss": loss / len(x)}


def is_epsilon_approximation(accuracy: float, epsilon: float) -> bool:
    """The paper's test: a network is an ε-approximation when accuracy ≥ 1 − ε.

    Example:
      >>> is_epsilon_approximation(0.93, epsilon=0.1)
      True
    """
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon}")
    return accuracy >= 1 - epsilon
