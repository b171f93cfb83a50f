"""ε-approximation networks for tasks: train one per task and keep what the distance needs."""

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

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
) -> TaskNetwork:
    """Trains the ε-approximation network of one task and measures its test accuracy.

    Example:
      >>> from ldnas_jax.data import load_task
      >>> data = load_task("E0", max_train=256, max_test=64)
      >>> net = train_task_network(data, key=jax.random.key(0), epochs=1, progress=False)
      >>> net.num_classes
      2
    """
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
    meta = read_metadata(directory)
    try:
        model = make_model(meta["model_name"], meta["num_classes"])
        example = jnp.zeros((1, *meta["input_shape"]))
        like = jax.eval_shape(lambda: model.init(jax.random.key(0), example))
        like = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), dict(like))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"network at {directory} has invalid metadata: {err}") from err
    variables, _ = load_checkpoint(directory, like=like)
    network = TaskNetwork(
        meta["task"],
        meta["model_name"],
        meta["num_classes"],
        dict(variables),
        meta["test_accuracy"],
        meta["epsilon"],
    )
    return network, meta
