"""F_{b,t} for one pair: network N_b's diagonal Fisher on target t's data, with the label routes.

When a baseline's head has fewer classes than the target has labels, the
empirical estimator cannot use the target's labels as they are. Two routes:

* ``label_mode="pad"``: zero-pad the smaller head's logits up to the target's
  number of classes, as the authors did (paper-faithful);
* ``label_mode="predicted"``: use N_b's own predicted labels on X_t, which
  needs no target labels at all.

The ``"sampled"`` and ``"exact"`` estimators use N_b's predictive distribution
and ignore labels, so ``label_mode`` does not apply to them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import check_int, check_labels
from ldnas_jax.data import Split
from ldnas_jax.fisher import fisher_diagonal
from ldnas_jax.models import make_model
from ldnas_jax.tasks._networks import TaskNetwork
from ldnas_jax.tasks._options import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_ESTIMATOR,
    DEFAULT_LABEL_MODE,
    DEFAULT_MAX_EXAMPLES,
    LABEL_MODES,
)


def fisher_on_task(
    network: TaskNetwork,
    target: Split,
    target_num_classes: int,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    label_mode: str = DEFAULT_LABEL_MODE,
    key: jax.Array | None = None,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    max_examples: int | None = DEFAULT_MAX_EXAMPLES,
    method: str = "auto",
):
    """F_{b,t}: the diagonal Fisher of network N_b on the target's data X_t.

    Raises:
      TypeError: ``network`` is not a :class:`TaskNetwork` or ``target`` not a
        :class:`~ldnas_jax.data.Split`; non-integer counts.
      ValueError: unknown ``label_mode``; images that are not NHWC, an empty
        target, labels outside ``[0, target_num_classes)``; and every error of
        :func:`ldnas_jax.fisher_diagonal` (NaN variables among them).

    Example:
      >>> import numpy as np
      >>> from ldnas_jax.models import make_model
      >>> x = np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype(np.float32)
      >>> variables = make_model("small_vgg", 2).init(jax.random.key(0), x[:1])
      >>> net = TaskNetwork("A", "small_vgg", 2, dict(variables), 1.0, 0.1)
      >>> fisher = fisher_on_task(net, Split(x, np.arange(8) % 4), 4, label_mode="pad")
      >>> fisher["Dense_1"]["kernel"].shape
      (64, 2)
    """
    x, y, extra = task_inputs(
        network,
        target,
        target_num_classes,
        label_mode=label_mode,
        max_examples=max_examples,
        uses_labels=estimator == "empirical",
    )
    apply_fn = shared_apply_fn(network.model_name, network.num_classes, extra)
    batches = [(x[i : i + 256], y[i : i + 256]) for i in range(0, len(x), 256)]
    fisher = fisher_diagonal(
        apply_fn,
        network.variables,
        batches,
        estimator=estimator,
        key=key,
        chunk_size=chunk_size,
        method=method,
    )
    return fisher["params"]


def task_inputs(
    network: TaskNetwork,
    target: Split,
    target_num_classes: int,
    *,
    label_mode: str = DEFAULT_LABEL_MODE,
    max_examples: int | None = None,
    uses_labels: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked ``(x, y, extra_logits)`` for evaluating N_b's Fisher or gradients on X_t.

    ``y`` follows the label route (see the module docstring) and ``extra_logits`` is how
    many zero logits pad N_b's head up to the target's classes; an estimator that draws
    its own labels (``uses_labels=False``) needs neither.

    Example:
      >>> from ldnas_jax.models import make_model
      >>> x = np.zeros((4, 8, 8, 3), np.float32)
      >>> variables = make_model("small_vgg", 2).init(jax.random.key(0), x[:1])
      >>> net = TaskNetwork("A", "small_vgg", 2, dict(variables), 1.0, 0.1)
      >>> task_inputs(net, Split(x, np.arange(4)), 10, label_mode="pad")[2]  # logits 2 -> 10
      8
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"unknown label_mode {label_mode!r}; choose one of {LABEL_MODES}")
    _check_network(network)
    x, y = _check_target(target, target_num_classes)
    if max_examples is not None:
        max_examples = check_int(max_examples, name="max_examples")
        x, y = x[:max_examples], y[:max_examples]
    if not uses_labels:
        return x, y, 0
    if label_mode == "predicted":
        logits = shared_apply_fn(network.model_name, network.num_classes, 0)(network.variables, x)
        return x, np.asarray(jnp.argmax(logits, axis=-1)), 0
    return x, y, max(target_num_classes - network.num_classes, 0)


def _check_network(network) -> None:
    if not isinstance(network, TaskNetwork):
        raise TypeError(f"network must be a TaskNetwork, got {type(network).__name__}")


def _check_target(target, target_num_classes) -> tuple[np.ndarray, np.ndarray]:
    """The target's images and labels, checked: NHWC, non-empty, labels in range."""
    if not isinstance(target, Split):
        raise TypeError(
            f"target must be a Split (e.g. load_task(...).test), got {type(target).__name__}"
        )
    num_classes = check_int(target_num_classes, name="target_num_classes", minimum=2)
    x, y = target.x, np.asarray(target.y)
    if np.ndim(x) != 4:
        raise ValueError(f"target images must be NHWC (N, H, W, C), got shape {np.shape(x)}")
    if len(x) == 0:
        raise ValueError("target split is empty: the Fisher needs at least one example")
    if y.shape != (len(x),):
        raise ValueError(f"target labels must have shape ({len(x)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"target labels must be integers, got dtype {y.dtype}")
    check_labels(y, num_classes, name="target labels")
    return x, y


@functools.lru_cache(maxsize=32)
def shared_apply_fn(model_name: str, num_classes: int, extra_logits: int):
    """One ``apply_fn`` per architecture, taking all variables, so compiled Fisher steps are reused.

    Networks of one architecture differ only in their variables. Passing the
    BatchNorm statistics as an argument (under ``stop_gradient``, so their Fisher
    entries are zero and dropped) rather than closing over them lets
    :func:`fisher_diagonal` reuse one compilation for every network of the zoo.
    ``extra_logits`` zero-pads the head (the paper's route for smaller heads).
    """
    model = make_model(model_name, num_classes)

    def apply_fn(variables, x):
        state = jax.lax.stop_gradient({k: v for k, v in variables.items() if k != "params"})
        logits = model.apply({"params": variables["params"], **state}, x, train=False)
        return jnp.pad(logits, ((0, 0), (0, extra_logits))) if extra_logits else logits

    return apply_fn
