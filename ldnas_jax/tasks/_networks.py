"""ε-approximation networks for tasks: train one per task and keep what the distance needs."""

import numbers
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import (
    NonFiniteError,
    check_classification_data,
    check_finite_tree,
    check_int,
)
from ldnas_jax.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from ldnas_jax.data import Split, TaskData
from ldnas_jax.models import make_model
from ldnas_jax.train import evaluate, is_epsilon_approximation, train_classifier


class TaskNetwork(NamedTuple):
    """A trained ε-approximation network N_t for one task.

    Attributes:
      task: the task's name.
      model_name: a name accepted by :func:`ldnas_jax.make_model`.
      num_classes: size of the network's head.
      variables: ``{"params": ..., "batch_stats": ...}``.
      test_accuracy: accuracy on the task's test split.
      epsilon: the ε it was checked against; ``is_epsilon_approximation`` tells
        whether accuracy ≥ 1 − ε held.
      epochs_trained: epochs of training run (None: not recorded, e.g. an old checkpoint).
      best_epoch: the epoch whose variables were kept; equal to ``epochs_trained``
        unless an epoch cap chose an earlier one on validation accuracy.
      val_accuracy: accuracy of ``variables`` on the validation split (None: not
        recorded, or the task has no validation split).
    """

    task: str
    model_name: str
    num_classes: int
    variables: dict[str, Any]
    test_accuracy: float
    epsilon: float
    epochs_trained: int | None = None
    best_epoch: int | None = None
    val_accuracy: float | None = None

    @property
    def model(self):
        return make_model(self.model_name, self.num_classes)

    @property
    def is_epsilon_approximation(self) -> bool:
        return is_epsilon_approximation(self.test_accuracy, self.epsilon)


def toy_networks_and_split(
    names: str | list[str], *, examples: int = 4
) -> tuple[list[TaskNetwork], Split]:
    """Untrained two-class ``small_vgg`` ε-networks, one per name, and a random split for them.

    The fixture of the examples in these docs: network i is initialised with
    ``jax.random.key(i)``, records test accuracy 1.0 at ε = 0.1, and the split holds
    ``examples`` seeded uniform 8×8×3 images labelled 0, 1, 0, 1, ...

    Example:
      >>> nets, split = toy_networks_and_split("AB")
      >>> [n.task for n in nets], split.x.shape, split.y.tolist()
      (['A', 'B'], (4, 8, 8, 3), [0, 1, 0, 1])
    """
    x = np.random.default_rng(0).uniform(size=(examples, 8, 8, 3)).astype(np.float32)
    model = make_model("small_vgg", 2)
    networks = [
        TaskNetwork(name, "small_vgg", 2, dict(model.init(jax.random.key(i), x[:1])), 1.0, 0.1)
        for i, name in enumerate(names)
    ]
    return networks, Split(x, np.arange(examples) % 2)


def train_task_network(
    data: TaskData,
    *,
    key: jax.Array,
    model_name: str = "small_vgg",
    epochs: int = 4,
    max_epochs: int | None = None,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    epsilon: float = 0.1,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
) -> TaskNetwork:
    """Trains the ε-approximation network of one task and measures its test accuracy.

    Without ``max_epochs`` it trains exactly ``epochs`` epochs. With a cap it trains
    at least ``epochs``, then goes on epoch by epoch until the *validation* accuracy
    reaches 1 − ε or ``max_epochs`` epochs are done, and keeps the variables of the
    epoch with the best validation accuracy (the earliest of equals). The test split
    is only measured, once, on the variables kept: it never steers training.

    ``checkpoint_dir``, ``checkpoint_every`` and ``resume`` checkpoint the training
    epochs as in :func:`ldnas_jax.train_classifier`; a resumed run gives the
    network an unbroken one would.

    Raises:
      TypeError: ``data`` is not a :class:`~ldnas_jax.data.TaskData`.
      ValueError: ε outside (0, 1), empty splits (validation too, with a cap),
        labels outside ``[0, data.num_classes)``, an unknown model, bad counts,
        ``max_epochs`` < ``epochs`` or < 1.

    Example:
      >>> from ldnas_jax.data import load_task
      >>> data = load_task("E0", max_train=256, max_test=64)
      >>> net = train_task_network(data, key=jax.random.key(0), epochs=1, progress=False)
      >>> net.num_classes, net.epochs_trained
      (2, 1)

      With a cap, E0 (easy) meets ε on validation within it:

      >>> net = train_task_network(data, key=jax.random.key(0), epochs=1, max_epochs=3,
      ...                          progress=False)
      >>> net.val_accuracy >= 0.9, net.epochs_trained <= 3
      (True, True)
    """
    if not isinstance(data, TaskData):
        raise TypeError(f"data must be a TaskData (see load_task), got {type(data).__name__}")
    if not _is_real(epsilon) or not 0 < epsilon < 1:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon!r}")
    epochs = check_int(epochs, name="epochs")
    if max_epochs is not None:
        max_epochs = check_int(max_epochs, name="max_epochs")
        if max_epochs < epochs:
            raise ValueError(
                f"max_epochs ({max_epochs}) must be at least epochs ({epochs}): the cap "
                "bounds the training that goes on past epochs until ε is met"
            )
        if len(data.val.y) == 0:
            raise ValueError(
                f"{data.name}: max_epochs needs a validation split to choose on, but it is "
                "empty (load the task with val_fraction > 0)"
            )
    # Labels beyond the head would train on garbage one-hots; refuse them up front.
    checked = ("train", "test") + (("val",) if len(data.val.y) else ())
    for split in checked:
        part = getattr(data, split)
        check_classification_data(
            part.x, part.y, name=f"{data.name} {split}", num_classes=data.num_classes
        )
    model = make_model(model_name, data.num_classes)
    val = (data.val.x, data.val.y) if len(data.val.y) else None
    options = {
        "key": key,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "progress": progress,
        "description": f"train {data.name}",
    }
    # Uncapped: exactly ``epochs``, no validation pass (the checkpoint fingerprint stays as it was).
    keep = None if max_epochs is None else _BestOnValidation(minimum=epochs, target=1 - epsilon)
    result = train_classifier(
        model,
        (data.train.x, data.train.y),
        epochs=epochs if keep is None else max_epochs,
        val=None if keep is None else val,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        stop=keep,
        **options,
    )
    if keep is None:
        variables, trained, best = result.variables, len(result.history), len(result.history)
        val_accuracy = None if val is None else evaluate(model, variables, val)["accuracy"]
    else:
        trained = len(result.history)
        best = 1 + max(range(trained), key=lambda e: (result.history[e]["val_accuracy"], -e))
        val_accuracy = result.history[best - 1]["val_accuracy"]
        if keep.epoch == best:
            variables = keep.variables
        else:  # a resumed run: the best epoch came before its checkpoint; replay it exactly
            variables = train_classifier(
                model, (data.train.x, data.train.y), epochs=best, **options
            ).variables
    accuracy = evaluate(model, variables, (data.test.x, data.test.y))["accuracy"]
    return TaskNetwork(
        data.name,
        model_name,
        data.num_classes,
        variables,
        accuracy,
        epsilon,
        epochs_trained=trained,
        best_epoch=best,
        val_accuracy=val_accuracy,
    )


class _BestOnValidation:
    """The early-stop hook of a capped run: keeps the best epoch's variables in memory.

    Called as ``stop(history, variables)`` by :func:`~ldnas_jax.train_classifier`, it
    remembers the variables of the epoch with the highest ``val_accuracy`` seen (the
    earliest of equals) and stops once ``minimum`` epochs are done and the last epoch's
    validation accuracy reaches ``target``.

    Example:
      >>> hook = _BestOnValidation(minimum=2, target=0.9)
      >>> hook([{"val_accuracy": 0.95}], "a"), hook([{}, {"val_accuracy": 0.5}], "b")
      (False, False)
      >>> hook([{}, {}, {"val_accuracy": 0.92}], "c"), hook.epoch, hook.variables
      (True, 1, 'a')
    """

    def __init__(self, *, minimum: int, target: float):
        self.minimum, self.target = minimum, target
        self.epoch, self.variables, self.accuracy = None, None, -1.0

    def __call__(self, history: list[dict[str, float]], variables) -> bool:
        accuracy = history[-1]["val_accuracy"]
        if accuracy > self.accuracy:
            self.epoch, self.variables, self.accuracy = len(history), variables, accuracy
        return len(history) >= self.minimum and accuracy >= self.target


def save_task_network(
    network: TaskNetwork, directory: str | Path, *, input_shape, extra: dict | None = None
) -> None:
    """Saves the variables with Orbax and the rest as JSON metadata (plus ``extra``).

    Example:
      >>> import tempfile
      >>> from ldnas_jax.models import make_model
      >>> variables = make_model("small_vgg", 2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
      >>> net = TaskNetwork("A", "small_vgg", 2, dict(variables), 0.9, 0.1, 5, 4, 0.93)
      >>> directory = tempfile.mkdtemp()
      >>> save_task_network(net, directory, input_shape=(8, 8, 3))
      >>> loaded, _ = load_task_network(directory)
      >>> loaded.epochs_trained, loaded.best_epoch, loaded.val_accuracy
      (5, 4, 0.93)
    """
    save_checkpoint(
        directory,
        network.variables,
        {
            "task": network.task,
            "model_name": network.model_name,
            "num_classes": network.num_classes,
            "test_accuracy": network.test_accuracy,
            "epsilon": network.epsilon,
            "epochs_trained": network.epochs_trained,
            "best_epoch": network.best_epoch,
            "val_accuracy": network.val_accuracy,
            "input_shape": list(input_shape),
            **(extra or {}),
        },
    )


def load_task_network(directory: str | Path) -> tuple[TaskNetwork, dict]:
    """Loads ``(network, metadata)``, checking the variables against the model they claim to be.

    Raises:
      CheckpointError: missing, incomplete or corrupt checkpoint, or variables whose
        structure or shapes do not fit the recorded model.
    """
    try:
        meta = read_metadata(directory)
    except CheckpointError as err:
        if not (Path(directory) / "meta.json").exists():
            raise  # incomplete, not invalid: the message says so already
        raise CheckpointError(f"network at {directory} has invalid metadata: {err}") from err
    fields = _check_network_metadata(meta, directory)
    try:
        model = make_model(fields["model_name"], fields["num_classes"])
        example = jnp.zeros((1, *fields["input_shape"]))
        like = jax.eval_shape(lambda: model.init(jax.random.key(0), example))
        like = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), dict(like))
    except Exception as err:  # flax raises many types for a bad shape
        raise CheckpointError(
            f"network at {directory} has invalid metadata: {type(err).__name__}: {err}"
        ) from err
    variables, _ = load_checkpoint(directory, like=like)
    try:
        check_finite_tree(variables, what=f"network at {directory}: variables")
    except NonFiniteError as err:
        raise CheckpointError(str(err)) from err
    network = TaskNetwork(
        fields["task"],
        fields["model_name"],
        fields["num_classes"],
        dict(variables),
        fields["test_accuracy"],
        fields["epsilon"],
        # Absent from checkpoints saved before they were recorded.
        epochs_trained=fields.get("epochs_trained"),
        best_epoch=fields.get("best_epoch"),
        val_accuracy=fields.get("val_accuracy"),
    )
    return network, meta


def _check_network_metadata(meta: Any, directory) -> dict[str, Any]:
    """The fields a network checkpoint needs, type-checked; bad ones raise CheckpointError."""

    def bad(message: str) -> CheckpointError:
        return CheckpointError(f"network at {directory} has invalid metadata: {message}")

    if not isinstance(meta, dict):
        raise bad(f"expected a JSON object, got {type(meta).__name__}")
    required = ("task", "model_name", "num_classes", "input_shape", "test_accuracy", "epsilon")
    missing = [k for k in required if k not in meta]
    if missing:
        raise bad(f"missing {missing}")
    for name in ("task", "model_name"):
        if not isinstance(meta[name], str):
            raise bad(f"{name} must be a string, got {meta[name]!r}")
    shape = meta["input_shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(_is_int(d) and d > 0 for d in shape)
    ):
        raise bad(f"input_shape must be [H, W, C] of positive ints, got {shape!r}")
    if not _is_int(meta["num_classes"]):
        raise bad(f"num_classes must be an int, got {meta['num_classes']!r}")
    accuracy, epsilon = meta["test_accuracy"], meta["epsilon"]
    if not _is_real(accuracy) or not 0 <= accuracy <= 1:
        raise bad(f"test_accuracy must be a number in [0, 1], got {accuracy!r}")
    if not _is_real(epsilon) or not 0 < epsilon < 1:
        raise bad(f"epsilon must be a number in (0, 1), got {epsilon!r}")
    for name in ("epochs_trained", "best_epoch"):  # optional: None or a count >= 1
        value = meta.get(name)
        if value is not None and not (_is_int(value) and value >= 1):
            raise bad(f"{name} must be null or an int >= 1, got {value!r}")
    val_accuracy = meta.get("val_accuracy")
    if val_accuracy is not None and not (_is_real(val_accuracy) and 0 <= val_accuracy <= 1):
        raise bad(f"val_accuracy must be null or a number in [0, 1], got {val_accuracy!r}")
    return meta


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
