"""Transfer as an experiment: a baseline's ε-network fine-tuned on a target, and its reference.

* :func:`fine_tune`: N_b with a fresh head of t's size, trained on a small budget of t's
  training examples (every weight, or the head alone), scored on t's test split;
* :func:`train_from_scratch`: the same architecture and budget from a fresh
  initialisation, which tells whether transfer helps at all.

Both train through :func:`ldnas_jax.train_classifier` and score through
:func:`ldnas_jax.evaluate`; head-only fine-tuning is an ``optax.multi_transform`` that sets
the updates of every non-head leaf to zero. One training step is compiled per
(architecture, number of classes, head-only or not, learning rate) and reused for every
source network.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from ldnas_jax._checks import check_classification_data
from ldnas_jax.data import TaskData
from ldnas_jax.experiments._heads import head_paths, in_head, replace_head
from ldnas_jax.models import make_model
from ldnas_jax.tasks import TaskNetwork
from ldnas_jax.train import evaluate, train_classifier


class FineTuneBudget(NamedTuple):
    """How much target data and training each transfer gets.

    Attributes:
      max_examples: the first n examples of the target's training split (None: all).
      epochs: passes over those examples.
      batch_size: examples per step (capped at n; the ragged tail of an epoch is dropped).
      learning_rate: Adam's step size.
      train_backbone: True fine-tunes every weight; False trains only the new head
        (a linear probe; BatchNorm running statistics still adapt to the target).
      max_test: cap on the target's test examples used for accuracy (None: all).
    """

    max_examples: int | None = 256
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-3
    train_backbone: bool = True
    max_test: int | None = None


class FineTuneResult(NamedTuple):
    """One network trained on a target's budget.

    Attributes:
      source: the task whose ε-network was the start, or None when trained from scratch.
      target: the target task's name.
      test_accuracy: accuracy on the target's test split, in [0, 1].
      test_loss: mean cross-entropy on the target's test split.
      num_examples: target training examples used.
      history: one dict per epoch with ``epoch``, ``loss``, ``train_accuracy``.
      variables: the trained ``{"params": ..., "batch_stats": ...}``.
    """

    source: str | None
    target: str
    test_accuracy: float
    test_loss: float
    num_examples: int
    history: list[dict[str, float]]
    variables: dict[str, Any]


def _budget(target: TaskData, keywords: dict) -> tuple[FineTuneBudget, Any, Any]:
    """The checked :class:`FineTuneBudget` of ``keywords``, and its training examples."""
    if not isinstance(target, TaskData):
        raise TypeError(f"target must be a TaskData, got {type(target).__name__}")
    unknown = sorted(set(keywords) - set(FineTuneBudget._fields))
    if unknown:
        raise TypeError(f"unknown budget keyword(s) {unknown}; known: {FineTuneBudget._fields}")
    budget = FineTuneBudget(**keywords)
    n = budget.max_examples
    if n is not None and (isinstance(n, bool) or n < 1):
        raise ValueError(f"max_examples must be a positive int or None, got {n!r}")
    if budget.epochs < 1 or budget.batch_size < 1:
        raise ValueError(
            f"epochs and batch_size must be >= 1, got {budget.epochs} and {budget.batch_size}"
        )
    if not budget.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {budget.learning_rate}")
    x, y = check_classification_data(
        target.train.x[:n],
        target.train.y[:n],
        name=f"train split of {target.name!r}",
        num_classes=target.num_classes,
    )
    return budget, x, y


@functools.lru_cache(maxsize=16)
def head_only_adam(learning_rate: float, heads: frozenset) -> optax.GradientTransformation:
    """Adam on the ``heads`` modules' parameters; every other update is zero (frozen).

    Cached, so that equal calls return one object and share one compiled training step.

    Example:
      >>> params = {"Conv_0": {"kernel": jnp.ones(2)}, "Dense_1": {"bias": jnp.ones(2)}}
      >>> opt = head_only_adam(0.1, frozenset({("Dense_1",)}))
      >>> with jax.numpy_dtype_promotion("standard"):  # Optax's own arithmetic mixes dtypes
      ...     updates, _ = opt.update(params, opt.init(params), params)
      >>> updates["Conv_0"]["kernel"].tolist()  # frozen
      [0.0, 0.0]
      >>> bool(jnp.allclose(updates["Dense_1"]["bias"], -0.1, atol=1e-4))  # Adam's first step
      True
    """
    labels = lambda params: traverse_util.path_aware_map(
        lambda path, _: "head" if in_head(path, heads) else "frozen", params
    )
    return optax.multi_transform(
        {"head": optax.adam(learning_rate), "frozen": optax.set_to_zero()}, labels
    )


def _train_and_test(
    source: str | None,
    model_name: str,
    target: TaskData,
    key: jax.Array,
    start,
    keywords: dict,
    progress: bool,
) -> FineTuneResult:
    """Trains ``start(init_key, example_x)``'s variables on the target's budget, then tests.

    ``start`` returns the variables to begin from; only the head trains when the budget
    says ``train_backbone=False``. The key splits into the start's key and the batch order's.
    """
    budget, x, y = _budget(target, keywords)
    init_key, order_key = jax.random.split(key)
    example = target.train.x[:1]
    variables = start(init_key, example)
    heads = None if budget.train_backbone else head_paths(model_name, example)
    model = make_model(model_name, target.num_classes)
    result = train_classifier(
        model,
        (x, y),
        key=order_key,
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        optimizer=None if heads is None else head_only_adam(budget.learning_rate, heads),
        variables=variables,
        progress=progress,
        description=f"{source or 'scratch'} -> {target.name}",
    )
    test = (target.test.x[: budget.max_test], target.test.y[: budget.max_test])
    scores = evaluate(model, result.variables, test)
    return FineTuneResult(
        source,
        target.name,
        scores["accuracy"],
        scores["loss"],
        len(x),
        result.history,
        result.variables,
    )


def fine_tune(
    network: TaskNetwork, target: TaskData, *, key: jax.Array, progress: bool = False, **budget
) -> FineTuneResult:
    """Transfers N_b to target t: new head of t's size, train on n target examples, test.

    Args:
      network: the source ε-network N_b (any head size).
      target: the target task's data; training uses the first ``max_examples`` of
        its train split, accuracy its test split (the first ``max_test``).
      key: PRNG key of the new head and of the batch order. The same key gives every
        source the same head initialisation and batches, so sources differ only in
        their weights.
      progress: show a tqdm bar.
      **budget: fields of :class:`FineTuneBudget` (``max_examples``, ``epochs``,
        ``batch_size``, ``learning_rate``, ``train_backbone``, ``max_test``), its
        defaults for those left out.

    Returns:
      :class:`FineTuneResult`.

    Raises:
      TypeError: ``network`` or ``target`` of the wrong type, an unknown budget keyword.
      ValueError: a budget out of range.

    Example:
      >>> from ldnas_jax.data import load_task
      >>> from ldnas_jax.tasks._networks import train_task_network
      >>> net = train_task_network(load_task("E0", max_train=64), key=jax.random.key(0),
      ...                          epochs=1, progress=False)
      >>> result = fine_tune(net, load_task("E7", max_train=64, max_test=64),
      ...                    key=jax.random.key(1), epochs=1)
      >>> 0 <= result.test_accuracy <= 1, result.variables["params"]["Dense_1"]["bias"].shape
      (True, (10,))
    """
    if not isinstance(network, TaskNetwork):
        raise TypeError(f"network must be a TaskNetwork, got {type(network).__name__}")
    if not isinstance(target, TaskData):
        raise TypeError(f"target must be a TaskData, got {type(target).__name__}")
    start = lambda init_key, x: replace_head(network, target.num_classes, key=init_key, example_x=x)
    return _train_and_test(network.task, network.model_name, target, key, start, budget, progress)


def train_from_scratch(
    model_name: str, target: TaskData, *, key: jax.Array, progress: bool = False, **budget
) -> FineTuneResult:
    """The reference for :func:`fine_tune`: a fresh network, trained on the same budget.

    Arguments as :func:`fine_tune`, with an architecture name in place of the source
    network. With the same key as :func:`fine_tune`, the head starts from the same values
    and sees the same batches. ``train_backbone=False`` trains only the head on random
    features, the matching reference for a linear probe.

    Example:
      >>> from ldnas_jax.data import load_task
      >>> r = train_from_scratch("small_vgg", load_task("E0", max_train=64, max_test=64),
      ...                        key=jax.random.key(0), epochs=1)
      >>> r.source is None and r.num_examples == 64
      True
    """
    start = lambda init_key, x: dict(
        make_model(model_name, target.num_classes).init(init_key, jnp.asarray(x), train=False)
    )
    return _train_and_test(None, model_name, target, key, start, budget, progress)
