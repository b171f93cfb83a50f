"""Tasks as ε-networks, and the pair loop from those networks to d[b, t].

* :class:`TaskNetwork`, :func:`train_task_network`, :func:`save_task_network`,
  :func:`load_task_network`: one trained ε-approximation network per task.
* :func:`fisher_on_task`: F_{b,t}, network N_b's diagonal Fisher on target t's data, with
  the label routes for unequal heads (``"pad"``, ``"predicted"``).
* :func:`pair_fishers`: the one stream of (b, t, F_{b,t}) every table is built from;
  :func:`task_distances` and :func:`task_family_distances` turn it into K×K tables.
"""

from ldnas_jax.tasks._family import (
    FULL_LOG_DET,
    full_log_det_task_distances,
    gradients_on_task,
    task_family_distances,
)
from ldnas_jax.tasks._networks import (
    TaskNetwork,
    load_task_network,
    save_task_network,
    train_task_network,
)
from ldnas_jax.tasks._pairs import (
    DEFAULT_LABEL_MODE,
    LABEL_MODES,
    TaskDistances,
    fisher_on_task,
    pair_fishers,
    shared_apply_fn,
    task_distances,
    task_inputs,
)

__all__ = [
    "DEFAULT_LABEL_MODE",
    "FULL_LOG_DET",
    "LABEL_MODES",
    "TaskDistances",
    "TaskNetwork",
    "fisher_on_task",
    "full_log_det_task_distances",
    "gradients_on_task",
    "load_task_network",
    "pair_fishers",
    "save_task_network",
    "shared_apply_fn",
    "task_distances",
    "task_family_distances",
    "task_inputs",
    "train_task_network",
]
