"""Distances between tasks through their ε-networks: F_{b,t} for every pair, then eq. 2.

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
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ldnas_jax._checks import check_int, check_key, check_labels, check_positive
from ldnas_jax.data import Split
from ldnas_jax.distances._log_det import (
    DEFAULT_NORMALIZE,
    DEFAULT_SIGMA,
    NORMALIZATIONS,
    distances_from_log_dets,
    mean_log_det,
)
from ldnas_jax.fisher._diagonal import fisher_diagonal
from ldnas_jax.models import make_model
from ldnas_jax.tasks._networks import TaskNetwork

LABEL_MODES = ("pad", "predicted")
DEFAULT_LABEL_MODE = "pad"


class TaskDistances(NamedTuple):
    """A K×K distance table: ``matrix[b, t]`` = d[b, t], rows sources, columns targets."""

    names: tuple[str, ...]
    matrix: np.ndarray
    log_dets: np.ndarray  # L[b, t] = (1/n_b) log det(F_{b,t} + σ² I)


def fisher_on_task(
    network: TaskNetwork,
    target: Split,
    target_num_classes: int,
    *,
    estimator: str = "empirical",
    label_mode: str = DEFAULT_LABEL_MODE,
    key: jax.Array | None = None,
    chunk_size: int | None = 64,
    max_examples: int | None = 512,
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
      >>> # fisher = fisher_on_task(nets["E3"], data["E7"].test, 10)
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
      >>> # x, y, extra = task_inputs(nets["E0"], data["E3"].test, 10)   # extra == 8
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


def pair_fishers(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    estimator: str = "empirical",
    label_mode: str = DEFAULT_LABEL_MODE,
    key: jax.Array | None = None,
    max_examples: int | None = 512,
    chunk_size: int | None = 64,
    method: str = "auto",
    progress: bool = True,
):
    """Yields ``(b, t, F_{b,t})`` for every pair of K tasks, one Fisher at a time.

    Streaming the pairs keeps one Fisher in memory at a time (a VGG-16 Fisher is 59 MB).
    Column by column, F_{t,t} comes first, so a consumer that compares each F_{b,t} with
    F_{t,t} (:func:`ldnas_jax.family_distance_matrices`) holds two Fishers at most. Each
    pair's key is ``fold_in(key, b·K + t)`` whatever the order.
    """
    k = len(networks)
    if k == 0 or len(targets) != k or len(target_num_classes) != k:
        raise ValueError(
            f"need one target split and class count per network; got {k} networks, "
            f"{len(targets)} splits, {len(target_num_classes)} class counts"
        )
    if key is not None:
        check_key(key)
    key = jax.random.key(0) if key is None else key
    with tqdm(total=k * k, desc="Fisher pairs", disable=not progress, leave=False) as bar:
        for t in range(k):
            for b in (t, *(b for b in range(k) if b != t)):
                yield (
                    b,
                    t,
                    fisher_on_task(
                        networks[b],
                        targets[t],
                        target_num_classes[t],
                        estimator=estimator,
                        label_mode=label_mode,
                        key=jax.random.fold_in(key, b * k + t),
                        max_examples=max_examples,
                        chunk_size=chunk_size,
                        method=method,
                    ),
                )
                bar.update(1)


def task_distances(
    networks: Sequence[TaskNetwork],
    targets: Sequence[Split],
    target_num_classes: Sequence[int],
    *,
    sigma: float = DEFAULT_SIGMA,
    normalize: str | None = DEFAULT_NORMALIZE,
    **fisher_options,
) -> TaskDistances:
    """Computes d[b, t] for every pair of K tasks (Algorithm 1, ``Distance``).

    Args:
      networks: N_0..N_{K-1}, one trained network per task.
      targets: X_0..X_{K-1}, the data each Fisher is evaluated on (e.g. test splits).
      target_num_classes: number of classes of each task.
      sigma, normalize: see :func:`ldnas_jax.log_det_distance`.
      **fisher_options: ``estimator``, ``label_mode``, ``key``, ``max_examples``,
        ``chunk_size``, ``method``, ``progress`` of :func:`pair_fishers`.

    Returns:
      :class:`TaskDistances` with the K×K matrix; only one number per pair is kept.

    Raises:
      ValueError: σ ≤ 0, an unknown ``normalize``, duplicate task names or
        mismatched lengths (checked before any Fisher is computed), and the
        errors of :func:`fisher_on_task`.

    Example:
      >>> # d = task_distances(list(nets.values()), [data[n].test for n in nets],
      >>> #                    [data[n].num_classes for n in nets])
      >>> # closest_task(d.matrix, "E3", names=d.names)
    """
    # Cheap checks first: a bad σ should not surface after K² Fisher computations.
    check_positive(sigma, name="sigma")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize={normalize!r}; choose one of {NORMALIZATIONS}")
    for network in networks:
        _check_network(network)
    names = tuple(n.task for n in networks)
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be distinct, got {list(names)}")
    k = len(networks)
    log_dets = np.zeros((k, k))
    for b, t, fisher in pair_fishers(networks, targets, target_num_classes, **fisher_options):
        log_dets[b, t] = mean_log_det(fisher, sigma=sigma, normalize=normalize)
    return TaskDistances(names, distances_from_log_dets(log_dets), log_dets)
