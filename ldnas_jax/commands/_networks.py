"""The ε-networks a command trains once and reuses: on ``--resume``, and across commands."""

from collections.abc import Callable
from pathlib import Path

from ldnas_jax.commands._resume import network_directory, saved_network
from ldnas_jax.data import TaskData
from ldnas_jax.tasks import TaskNetwork, save_task_network


def saved_or_trained_network(
    networks: str | None,
    checkpoints: Path,
    seed: int,
    data: TaskData,
    *,
    model: str,
    train: Callable[[], TaskNetwork],
) -> TaskNetwork:
    """The ε-network of ``data``'s task and ``seed``: loaded if saved, else ``train()``, saved.

    Its directory is under ``networks`` (``--networks``) when given, else under the run's
    ``checkpoints`` (:func:`~ldnas_jax.commands._resume.network_directory`).

    Raises:
      CheckpointError: the saved network is another ``model``'s or another task's.
    """
    directory = network_directory(networks, checkpoints, seed, data.name)
    network = saved_network(directory, model=model, task=data.name)
    if network is None:
        network = train()
        save_task_network(network, directory, input_shape=data.train.x.shape[1:])
    return network
