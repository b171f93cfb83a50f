"""ε-approximation networks for tasks: train one per task and keep what the distance needs."""

import numbers
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ldnas_jax._checks import NonFiniteError, check_classification_data, check_finite_tree
from ldnas_jax.checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from ldnas_jax.data import TaskData
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
    """

    task: str
    model_name: str
    num_classes: int
    variables: dict[str, Any]
    test_accuracy: float
    epsilon: float

    @property
    def model(self):
        return make_model(self.model_name, self.num_classes)

    @property
    def is_epsilon_approximation(self) -> bool:
        return is_epsilon_approximation(self.test_accuracy, self.epsilon)


def train_task_network(
    data: TaskData,
    *,
    key: jax.Array,
    model_name: str = "small_vgg",
    epochs: int = 4,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    epsilon: float = 0.1,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
) -> TaskNetwork:
    """Trains the ε-approximation network of one task and measures its test accuracy.

    ``checkpoint_dir``, ``checkpoint_every`` and ``resume`` checkpoint the training
    epochs as in :func:`ldnas_jax.train_classifier`; a resumed run gives the
    network an unbroken one would.

    Raises:
      TypeError: ``data`` is not a :class:`~ldnas_jax.data.TaskData`.
      ValueError: ε outside (0, 1), empty splits, labels outside
        ``[0, data.num_classes)``, an unknown model, bad counts.

    Example:
      >>> from ldnas_jax.data import load_task
      >>> data = load_task("E0", max_train=256, max_test=64)
      >>> net = train_task_network(data, key=jax.random.key(0), epochs=1, progress=False)
      >>> net.num_classes
      2
    """
    if not isinstance(data, TaskData):
        raise TypeError(f"data must be a TaskData (see load_task), got {type(data).__name__}")
    if not _is_real(epsilon) or not 0 < epsilon < 1:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon!r}")
    # Labels beyond the head would train on garbage one-hots; refuse them up front.
    for split in ("train", "test"):
        part = getattr(data, split)
        check_classification_data(
            part.x, part.y, name=f"{data.name} {split}", num_classes=data.num_classes
        )
    model = make_model(model_name, data.num_classes)
    result = train_classifier(
        model,
        (data.train.x, data.train.y),
        key=key,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        progress=progress,
        description=f"train {data.name}",
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    accuracy = evaluate(model, result.variables, (data.test.x, data.test.y))["accuracy"]
    return TaskNetwork(data.name, model_name, data.num_classes, result.variables, accuracy, epsilon)


def save_task_network(
    network: TaskNetwork, directory: str | Path, *, input_shape, extra: dict | None = None
) -> None:
    """Saves the variables with Orbax and the rest as JSON metadata (plus ``extra``)."""
    save_checkpoint(
        directory,
        network.variables,
        {
            "task": network.task,
            "model_name": network.model_name,
            "num_classes": network.num_classes,
            "test_accuracy": network.test_accuracy,
            "epsilon": network.epsilon,
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
    return meta


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
