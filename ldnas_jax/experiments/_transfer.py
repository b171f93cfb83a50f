"""Ground truth for "closest": how well each baseline's ε-network transfers to a target.

A task distance is only as good as its ranking of what transfers. For a target t
and every baseline b ≠ t, :func:`fine_tune` replaces N_b's classifier layer with
a fresh one of t's size, keeps every other weight, trains on a small budget of
t's training examples and measures accuracy on t's test split. Ranking the
baselines by that accuracy gives the ground truth a distance should reproduce.

Sign convention: a smaller distance should mean better transfer, so the score of
a distance for one target is Spearman's ρ between −d[b, t] and the transfer
accuracy of b (equivalently, between d[b, t] and the error). ρ = +1: the ranking
by distance is exactly the ranking by transfer; ρ = −1: exactly reversed.

Two references come with every target, outside the ranking:

* ``scratch_accuracy``: the same architecture from a fresh initialisation, same
  budget, which tells whether transfer helps at all;
* ``self_accuracy``: the target's own ε-network fine-tuned the same way (head
  reset), an upper reference; the target is never one of its own baselines.

Training here compiles one step per (architecture, number of classes, frozen
or not) and reuses it for every network and learning rate, so ranking K−1
baselines for a target costs one compilation, not K−1.
"""

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from tqdm.auto import tqdm

from ldnas_jax._checks import NonFiniteError, check_classification_data, check_finite_tree
from ldnas_jax.data import Split, TaskData
from ldnas_jax.distances._registry import make_task_distances
from ldnas_jax.models import make_model
from ldnas_jax.pipeline import DistanceOptions
from ldnas_jax.tasks._pairs import fisher_on_task
from ldnas_jax.tasks._networks import TaskNetwork
from ldnas_jax.train import make_train_step

SIGN_CONVENTION = (
    "spearman = rho(-d[b, t], transfer accuracy of b) over the baselines b != t of each "
    "target t: +1 means a smaller distance always goes with better transfer"
)

DistanceFn = Callable[[Any, Any], float]


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


class TargetTransfer(NamedTuple):
    """What :func:`transfer_check` finds for one target t.

    Attributes:
      target: t.
      baselines: the baseline tasks b ≠ t, in task order.
      accuracy: transfer accuracy of each baseline (mean over repeats).
      loss: transfer test cross-entropy of each baseline (mean over repeats); it
        seldom ties, so it still ranks when small test sets tie the accuracies.
      ranking: baselines from best to worst transfer (ties keep task order).
      best_sources: every baseline with the highest transfer accuracy.
      scratch_accuracy: the same budget from a fresh initialisation.
      self_accuracy: t's own ε-network fine-tuned the same way (not ranked).
      distances: ``{distance name: {b: d[b, t]}}``.
      spearman: ``{distance name: ρ(−d, accuracy)}``; NaN when either side is constant.
      spearman_loss: ``{distance name: ρ(−d, −loss)}``, the same sign convention.
      closest: ``{distance name: argmin_b d[b, t]}``.
      closest_is_best: ``{distance name: closest ∈ best_sources}``.
      closest_rank: ``{distance name: transfer rank of the closest task}`` (1 = best,
        average rank for ties).
      regret: ``{distance name: max accuracy − accuracy of the closest task}``.
    """

    target: str
    baselines: tuple[str, ...]
    accuracy: dict[str, float]
    loss: dict[str, float]
    ranking: tuple[str, ...]
    best_sources: tuple[str, ...]
    scratch_accuracy: float
    self_accuracy: float
    distances: dict[str, dict[str, float]]
    spearman: dict[str, float]
    spearman_loss: dict[str, float]
    closest: dict[str, str]
    closest_is_best: dict[str, bool]
    closest_rank: dict[str, float]
    regret: dict[str, float]


# ---------------------------------------------------------------------------------------------
# Ranks and rank correlation


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values`` in ascending order; tied values share their mean rank.

    Example:
      >>> average_ranks([10.0, 30.0, 20.0, 30.0]).tolist()
      [1.0, 3.5, 2.0, 3.5]
    """
    x = np.asarray(values, np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values to rank contain NaN or inf")
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last member of each group of equal values
    return (last - (counts - 1) / 2.0)[inverse.ravel()]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks.

    Returns NaN when either side is constant (no ranking to compare), as
    ``scipy.stats.spearmanr`` does.

    Example:
      >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])
      0.8
      >>> spearman([1, 2, 3], [3, 2, 1])
      -1.0
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"spearman needs two 1-D sequences of one length, got {a.shape} and {b.shape}"
        )
    if a.size < 2:
        raise ValueError(f"spearman needs at least 2 pairs to rank, got {a.size}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    if norm == 0:
        return float("nan")
    return float(np.clip(np.sum(ra * rb) / norm, -1.0, 1.0))


def transfer_ranking(accuracy: Mapping[str, float]) -> tuple[str, ...]:
    """Source tasks from best to worst transfer accuracy; ties keep their given order.

    Example:
      >>> transfer_ranking({"E1": 0.7, "E4": 0.9, "E5": 0.7})
      ('E4', 'E1', 'E5')
    """
    names = list(accuracy)
    return tuple(sorted(names, key=lambda n: -accuracy[n]))  # sorted is stable


# ---------------------------------------------------------------------------------------------
# Head replacement


def head_paths(model_name: str, example_x: np.ndarray) -> frozenset[tuple[str, ...]]:
    """Paths of the modules whose parameters depend on the number of classes: the classifier.

    Found by comparing the parameter shapes of the model built for 2 and for 3
    classes, so it works for any model of the registry without naming layers.

    Example:
      >>> sorted(head_paths("small_vgg", np.zeros((1, 32, 32, 3), np.float32)))
      [('Dense_1',)]
    """
    x = jnp.zeros((1, *np.shape(example_x)[1:]), jnp.float32)

    def shapes(num_classes):
        model = make_model(model_name, num_classes)
        tree = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
        return {p: s.shape for p, s in traverse_util.flatten_dict(dict(tree["params"])).items()}

    two, three = shapes(2), shapes(3)
    heads = frozenset(path[:-1] for path in two if two[path] != three[path])
    if not heads:
        raise ValueError(f"model {model_name!r} has no layer whose size follows num_classes")
    return heads


def _in_head(path: tuple[str, ...], heads: frozenset[tuple[str, ...]]) -> bool:
    return any(path[: len(h)] == h for h in heads)


def replace_head(
    network: TaskNetwork, num_classes: int, *, key: jax.Array, example_x: np.ndarray
) -> dict[str, Any]:
    """N_b's variables with a freshly initialised classifier of ``num_classes`` outputs.

    Every variable outside the classifier (convolutions, BatchNorm scales and
    running statistics, hidden dense layers) is N_b's, unchanged. The head is
    replaced even when the sizes agree: the target's classes mean something else.

    Example:
      >>> # variables = replace_head(nets["E3"], 4, key=jax.random.key(0), example_x=data.train.x)
    """
    heads = head_paths(network.model_name, example_x)
    model = make_model(network.model_name, num_classes)
    fresh = model.init(key, jnp.asarray(example_x[:1]), train=False)
    out = {}
    for collection, tree in network.variables.items():
        old = traverse_util.flatten_dict(dict(tree))
        new = traverse_util.flatten_dict(dict(fresh.get(collection, {})))
        kept = {p: v for p, v in old.items() if not _in_head(p, heads)}
        kept.update({p: v for p, v in new.items() if _in_head(p, heads)})
        out[collection] = traverse_util.unflatten_dict(kept)
    return out


# ---------------------------------------------------------------------------------------------
# Training with one compilation per architecture and head size


def _optimizer(learning_rate: float, heads: frozenset | None) -> optax.GradientTransformation:
    """Adam with the step size in its state (one compiled step serves every rate)."""
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
    if heads is None:
        return adam
    labels = lambda params: traverse_util.path_aware_map(
        lambda path, _: "head" if _in_head(path, heads) else "frozen", params
    )
    return optax.multi_transform({"head": adam, "frozen": optax.set_to_zero()}, labels)


@functools.lru_cache(maxsize=16)
def _cached_step(model_name: str, num_classes: int, heads: frozenset | None):
    # The rate here is a placeholder: inject_hyperparams reads it from the state.
    return make_train_step(make_model(model_name, num_classes), _optimizer(1e-3, heads))


@functools.lru_cache(maxsize=16)
def _cached_logits(model_name: str, num_classes: int):
    model = make_model(model_name, num_classes)
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def _evaluate(model_name: str, num_classes: int, variables, split: Split, batch: int = 256):
    """``(accuracy, mean cross-entropy)`` with one compiled shape: the last batch is padded."""
    x, y = check_classification_data(split.x, split.y, name="target test split")
    logits_fn = _cached_logits(model_name, num_classes)
    batch = min(batch, len(x))
    correct, loss = 0, 0.0
    for start in range(0, len(x), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        n = len(xb)
        if n < batch:
            xb = np.concatenate([xb, np.zeros((batch - n, *xb.shape[1:]), xb.dtype)])
        logits = logits_fn(variables, xb)[:n]
        correct += int(jnp.sum(jnp.argmax(logits, -1) == yb))
        loss += float(optax.softmax_cross_entropy_with_integer_labels(logits, yb).sum())
    return correct / len(x), loss / len(x)


def _fit(
    model_name: str,
    num_classes: int,
    variables: dict[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    *,
    key: jax.Array,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    heads: frozenset | None,
    bar,
    description: str,
):
    """The epoch loop of :func:`ldnas_jax.train.train_classifier` on a cached step."""
    x, y = train
    step = _cached_step(model_name, num_classes, heads)
    params = variables["params"]
    others = {k: v for k, v in variables.items() if k != "params"}
    opt_state = _optimizer(learning_rate, heads).init(params)
    batch_size = min(batch_size, len(x))
    steps = len(x) // batch_size
    history = []
    for epoch in range(epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), len(x)))
        loss_sum, correct = 0.0, 0
        for s in range(steps):
            idx = order[s * batch_size : (s + 1) * batch_size]
            params, others, opt_state, loss, right = step(params, others, opt_state, x[idx], y[idx])
            loss_sum += float(loss)
            correct += int(right)
            bar.update(1)
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum / steps,
            "train_accuracy": correct / (steps * batch_size),
        }
        if not np.isfinite(record["loss"]):
            raise NonFiniteError(
                f"{description}: loss became {record['loss']} in epoch {epoch + 1}"
            )
        history.append(record)
    variables = {"params": params, **others}
    check_finite_tree(variables, what=f"{description}: trained variables")
    return variables, history


def _check_budget(target: TaskData, max_examples, epochs, batch_size, learning_rate):
    if not isinstance(target, TaskData):
        raise TypeError(f"target must be a TaskData, got {type(target).__name__}")
    if max_examples is not None and (isinstance(max_examples, bool) or max_examples < 1):
        raise ValueError(f"max_examples must be a positive int or None, got {max_examples!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    x, y = check_classification_data(
        target.train.x[:max_examples],
        target.train.y[:max_examples],
        name=f"train split of {target.name!r}",
        num_classes=target.num_classes,
    )
    return x, y


def _train_and_test(
    source,
    model_name,
    variables,
    target,
    key,
    heads,
    *,
    max_examples,
    epochs,
    batch_size,
    learning_rate,
    max_test,
    progress,
) -> FineTuneResult:
    x, y = _check_budget(target, max_examples, epochs, batch_size, learning_rate)
    what = f"{source or 'scratch'} -> {target.name}"
    steps = epochs * (len(x) // min(batch_size, len(x)))
    with tqdm(total=steps, desc=what, disable=not progress, leave=False) as bar:
        variables, history = _fit(
            model_name,
            target.num_classes,
            variables,
            (x, y),
            key=key,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            heads=heads,
            bar=bar,
            description=what,
        )
    test = Split(target.test.x[:max_test], target.test.y[:max_test])
    accuracy, loss = _evaluate(model_name, target.num_classes, variables, test)
    return FineTuneResult(source, target.name, accuracy, loss, len(x), history, variables)


def fine_tune(
    network: TaskNetwork,
    target: TaskData,
    *,
    key: jax.Array,
    max_examples: int | None = 256,
    epochs: int = 4,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    train_backbone: bool = True,
    max_test: int | None = None,
    progress: bool = False,
) -> FineTuneResult:
    """Transfers N_b to target t: new head of t's size, train on n target examples, test.

    Args:
      network: the source ε-network N_b (any head size).
      target: the target task's data; training uses the first ``max_examples`` of
        its train split, accuracy its test split (the first ``max_test``).
      key: PRNG key of the new head and of the batch order. The same key gives every
        source the same head initialisation and batches, so sources differ only in
        their weights.
      max_examples, epochs, batch_size, learning_rate, train_backbone, max_test: see
        :class:`FineTuneBudget`.
      progress: show a tqdm bar.

    Returns:
      :class:`FineTuneResult`.

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
    init_key, order_key = jax.random.split(key)
    heads = head_paths(network.model_name, target.train.x[:1])
    variables = replace_head(
        network, target.num_classes, key=init_key, example_x=target.train.x[:1]
    )
    return _train_and_test(
        network.task,
        network.model_name,
        variables,
        target,
        order_key,
        None if train_backbone else heads,
        max_examples=max_examples,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_test=max_test,
        progress=progress,
    )


def train_from_scratch(
    model_name: str,
    target: TaskData,
    *,
    key: jax.Array,
    max_examples: int | None = 256,
    epochs: int = 4,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    train_backbone: bool = True,
    max_test: int | None = None,
    progress: bool = False,
) -> FineTuneResult:
    """The reference for :func:`fine_tune`: a fresh network, trained on the same budget.

    With the same key as :func:`fine_tune`, the head starts from the same values and
    sees the same batches. ``train_backbone=False`` trains only the head on random
    features, the matching reference for a linear probe.

    Example:
      >>> from ldnas_jax.data import load_task
      >>> r = train_from_scratch("small_vgg", load_task("E0", max_train=64, max_test=64),
      ...                        key=jax.random.key(0), epochs=1)
      >>> r.source is None and r.num_examples == 64
      True
    """
    init_key, order_key = jax.random.split(key)
    x = target.train.x[:1]
    model = make_model(model_name, target.num_classes)
    variables = dict(model.init(init_key, jnp.asarray(x), train=False))
    return _train_and_test(
        None,
        model_name,
        variables,
        target,
        order_key,
        None if train_backbone else head_paths(model_name, x),
        max_examples=max_examples,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_test=max_test,
        progress=progress,
    )


# ---------------------------------------------------------------------------------------------
# The check: transfer ranking against each distance's ranking


def transfer_targets(names: Sequence[str], targets: Sequence[str] | None = None) -> list[str]:
    """Validates the task set and returns the targets to rank baselines for (default: all).

    Raises:
      ValueError: fewer than 3 tasks (a target needs 2 baselines to rank), repeated
        task names, or a target that is not one of the tasks.

    Example:
      >>> transfer_targets(["E0", "E1", "E4"], ["E4"])
      ['E4']
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"task names repeat: {names}")
    if len(names) < 3:
        raise ValueError(
            f"transfer check needs at least 3 tasks so that each target has 2 baselines to "
            f"rank; got {len(names)}: {names}"
        )
    targets = names if targets is None else list(targets)
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise ValueError(f"unknown target task(s) {unknown}; the tasks are {names}")
    if not targets:
        raise ValueError("no target task given")
    return targets


def target_distances(
    networks: Sequence[TaskNetwork],
    datas: Sequence[TaskData],
    target: int,
    distances: Mapping[str, DistanceFn],
    *,
    options: DistanceOptions | None = None,
    key: jax.Array | None = None,
) -> dict[str, dict[str, float]]:
    """``{distance name: {b: fn(F_{b,t}, F_{t,t})}}`` for every baseline b ≠ t.

    The Fishers are those of :func:`ldnas_jax.task_distances` (on the target's
    train split, same keys), so ``log_det`` equals its column t. Two Fishers are
    held at a time.
    """
    k = len(networks)
    key = jax.random.key(0) if key is None else key
    options = DistanceOptions() if options is None else options
    data = datas[target]

    def fisher(b):
        return fisher_on_task(
            networks[b],
            data.train,
            data.num_classes,
            estimator=options.estimator,
            label_mode=options.label_mode,
            key=jax.random.fold_in(key, b * k + target),
            max_examples=options.max_examples,
        )

    own = fisher(target)
    values = {name: {} for name in distances}
    for b in range(k):
        if b == target:
            continue
        other = fisher(b)
        for name, fn in distances.items():
            values[name][networks[b].task] = float(fn(other, own))
    return values


def _score(
    accuracy: dict[str, float], loss: dict[str, float], distances: dict[str, dict[str, float]]
) -> dict[str, dict]:
    """Spearman, closest task, its rank and regret for each distance."""
    baselines = list(accuracy)
    acc = np.array([accuracy[b] for b in baselines])
    neg_loss = -np.array([loss[b] for b in baselines])
    best = acc.max()
    ranks = average_ranks(-acc)  # 1 = best transfer
    keys = ("spearman", "spearman_loss", "closest", "closest_is_best", "closest_rank", "regret")
    out = {k: {} for k in keys}
    for name, column in distances.items():
        d = np.array([column[b] for b in baselines])
        closest = baselines[int(np.argmin(d))]  # first of equals, as closest_task
        i = baselines.index(closest)
        out["spearman"][name] = spearman(-d, acc)
        out["spearman_loss"][name] = spearman(-d, neg_loss)
        out["closest"][name] = closest
        out["closest_is_best"][name] = bool(acc[i] == best)
        out["closest_rank"][name] = float(ranks[i])
        out["regret"][name] = float(best - acc[i])
    return out


def transfer_check(
    networks: Sequence[TaskNetwork],
    datas: Sequence[TaskData],
    *,
    key: jax.Array,
    distances: Mapping[str, DistanceFn] | None = None,
    targets: Sequence[str] | None = None,
    budget: FineTuneBudget | None = None,
    repeats: int = 1,
    options: DistanceOptions | None = None,
    progress: bool = True,
) -> dict[str, TargetTransfer]:
    """Ranks the baselines of each target by transfer and scores each distance against it.

    For each target t: every other task's ε-network is fine-tuned on t
    (:func:`fine_tune`), plus the from-scratch and self references; accuracies
    are averaged over ``repeats`` keys (each shared by all sources of a repeat).
    Each distance is computed from F_{b,t} and F_{t,t} (:func:`target_distances`).

    Args:
      networks: one ε-network per task, in the order of ``datas``.
      datas: the tasks' data.
      key: PRNG key; fine-tuning of target t, repeat r uses ``fold_in(fold_in(key, t), r)``
        and the Fishers keys derived from ``fold_in(key, 10_000)``.
      distances: ``{name: fn(F_{b,t}, F_{t,t}) -> float}``; default every distance of
        :func:`ldnas_jax.distances.make_task_distances` (log-det eq. 2, Fréchet,
        Task2Vec, cosine) with ``options.sigma`` and ``options.normalize``.
      targets: names of the targets (default: every task).
      budget: the fine-tuning budget (default :class:`FineTuneBudget`).
      repeats: fine-tuning keys to average accuracy over.
      options: Fisher estimator, label mode, σ, normalisation, Fisher examples
        (default :class:`ldnas_jax.DistanceOptions`).
      progress: show tqdm bars.

    Returns:
      ``{target name: TargetTransfer}``; see :data:`SIGN_CONVENTION`.

    Example:
      >>> # results = transfer_check(nets, datas, key=jax.random.key(0))
      >>> # results["E6"].spearman["log_det"], results["E6"].closest_is_best["log_det"]
    """
    if len(networks) != len(datas):
        raise ValueError(f"need one network per task: {len(networks)} networks, {len(datas)} tasks")
    names = [d.name for d in datas]
    mismatch = [(n.task, d) for n, d in zip(networks, names) if n.task != d]
    if mismatch:
        raise ValueError(
            f"networks and tasks are out of order (network task, data task): {mismatch}"
        )
    chosen = transfer_targets(names, targets)
    budget = FineTuneBudget() if budget is None else budget
    options = DistanceOptions() if options is None else options
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if distances is None:
        distances = make_task_distances(sigma=options.sigma, normalize=options.normalize)
    if not distances:
        raise ValueError("no distance to check")
    tune = dict(budget._asdict())
    fisher_key = jax.random.fold_in(key, 10_000)  # apart from the targets' fine-tuning keys
    results = {}
    runs = len(chosen) * repeats * (len(names) + 1)
    with tqdm(total=runs, desc="transfer", disable=not progress, leave=False) as bar:
        for name in chosen:
            t = names.index(name)
            data = datas[t]
            column = target_distances(
                networks, datas, t, distances, options=options, key=fisher_key
            )
            accuracy = {n: 0.0 for n in names if n != name}
            loss = dict(accuracy)
            scratch = own = 0.0
            for r in range(repeats):
                k = jax.random.fold_in(jax.random.fold_in(key, t), r)
                for b, net in enumerate(networks):
                    result = fine_tune(net, data, key=k, **tune)
                    if b == t:
                        own += result.test_accuracy / repeats
                    else:
                        accuracy[net.task] += result.test_accuracy / repeats
                        loss[net.task] += result.test_loss / repeats
                    bar.update(1)
                scratch += (
                    train_from_scratch(networks[t].model_name, data, key=k, **tune).test_accuracy
                    / repeats
                )
                bar.update(1)
            best = max(accuracy.values())
            results[name] = TargetTransfer(
                target=name,
                baselines=tuple(accuracy),
                accuracy=accuracy,
                loss=loss,
                ranking=transfer_ranking(accuracy),
                best_sources=tuple(b for b, a in accuracy.items() if a == best),
                scratch_accuracy=scratch,
                self_accuracy=own,
                distances=column,
                **_score(accuracy, loss, column),
            )
    return results


def summarize_transfer(results: Mapping[str, TargetTransfer]) -> dict[str, Any]:
    """Per distance over all targets: mean ρ, how often closest = best source, mean regret.

    Targets whose ρ is undefined (constant accuracies or distances) are left out of
    the mean and counted in ``spearman_undefined``. A target whose baselines all
    transfer equally well ranks nothing, and any closest task would "be the best":
    ``closest_is_best``, ``mean_closest_rank`` and ``mean_regret`` count only the
    ``targets_ranked`` targets with at least two different accuracies.

    Returns:
      ``{"distances": {name: {...}}, "targets": K_t, "targets_ranked": ...,
      "best_transfer_beats_scratch": ...}``.

    Example:
      >>> # summarize_transfer(results)["distances"]["log_det"]["closest_is_best"]  ->  5
    """
    if not results:
        raise ValueError("no transfer results to summarise")
    everything = list(results.values())
    ranked = [r for r in everything if len(set(r.accuracy.values())) > 1]
    mean = lambda values: float(np.mean(values)) if len(values) else None
    per_distance = {}
    for name in everything[0].spearman:
        rhos = [r.spearman[name] for r in everything]
        defined = [x for x in rhos if np.isfinite(x)]
        by_loss = [r.spearman_loss[name] for r in everything]
        per_distance[name] = {
            "mean_spearman": mean(defined),
            "spearman_defined": len(defined),
            "spearman_undefined": len(rhos) - len(defined),
            "mean_spearman_loss": mean([x for x in by_loss if np.isfinite(x)]),
            "closest_is_best": sum(r.closest_is_best[name] for r in ranked),
            "mean_closest_rank": mean([r.closest_rank[name] for r in ranked]),
            "mean_regret": mean([r.regret[name] for r in ranked]),
        }
    return {
        "distances": per_distance,
        "targets": len(everything),
        "targets_ranked": len(ranked),
        "best_transfer_beats_scratch": sum(
            max(r.accuracy.values()) > r.scratch_accuracy for r in everything
        ),
    }
