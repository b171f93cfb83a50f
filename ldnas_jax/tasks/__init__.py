"""Tasks as ε-networks, and the one pair loop from those networks to d[b, t].

* :class:`TaskNetwork`, :func:`train_task_network`, :func:`save_task_network`,
  :func:`load_task_network`: one trained ε-approximation network per task
  (:func:`toy_networks_and_split`: untrained ones, the examples' fixture).
* :class:`FisherOptions`, :class:`DistanceOptions`: how each F_{b,t} is estimated and
  how d[b, t] is computed from it.
* :func:`fisher_on_task`: F_{b,t}, network N_b's diagonal Fisher on target t's data, with
  the label routes for unequal heads (``"pad"``, ``"predicted"``).
* :func:`pair_fishers`: the one stream of (b, t, F_{b,t}) every distance is built from,
  each pair keyed by :func:`pair_key`; :func:`task_distances` (K×K table),
  :func:`column_distances` (one target's column), :func:`pair_log_dets` (resumable
  tables) and :func:`task_family_distances` (every family distance) consume it.
* :func:`bootstrap_closest_shares`: how often each baseline is closest over paired
  resamples of each target's examples (:func:`bootstrap_log_dets`, :func:`bootstrap_tables`).
"""

from ldnas_jax.tasks._bootstrap import (
    bootstrap_closest_shares,
    bootstrap_column_log_dets,
    bootstrap_log_dets,
    bootstrap_tables,
)
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
    toy_networks_and_split,
    train_task_network,
)
from ldnas_jax.tasks._on_task import fisher_on_task, shared_apply_fn, task_inputs
from ldnas_jax.tasks._options import (
    DEFAULT_LABEL_MODE,
    LABEL_MODES,
    DistanceOptions,
    FisherOptions,
    check_distance_options,
    check_fisher_options,
    distance_options,
    fisher_options,
)
from ldnas_jax.tasks._pairs import (
    TaskDistances,
    column_distances,
    column_pairs,
    every_pair,
    pair_fisher,
    pair_fishers,
    pair_key,
    pair_log_dets,
    task_distances,
)

__all__ = [
    "DEFAULT_LABEL_MODE",
    "FULL_LOG_DET",
    "LABEL_MODES",
    "DistanceOptions",
    "FisherOptions",
    "TaskDistances",
    "TaskNetwork",
    "bootstrap_closest_shares",
    "bootstrap_column_log_dets",
    "bootstrap_log_dets",
    "bootstrap_tables",
    "check_distance_options",
    "check_fisher_options",
    "column_distances",
    "column_pairs",
    "distance_options",
    "every_pair",
    "fisher_on_task",
    "fisher_options",
    "full_log_det_task_distances",
    "gradients_on_task",
    "load_task_network",
    "pair_fisher",
    "pair_fishers",
    "pair_key",
    "pair_log_dets",
    "save_task_network",
    "shared_apply_fn",
    "task_distances",
    "task_family_distances",
    "task_inputs",
    "toy_networks_and_split",
    "train_task_network",
]
