"""Task distances: pure functions of Fishers, with no models.

* Paper eq. 2/3: :func:`log_det_distance`, :func:`log_det_pair`, :func:`mean_log_det` (with
  :func:`pair_reference` for the pair normalisation ``"target_mean"``), :func:`distance_matrix`,
  :func:`distances_from_log_dets`, and :func:`closest_task` (Algorithm 1, line 16).
* How sure the closest task is: :func:`closest_shares` and :func:`win_shares`, the share of
  repeated tables (seeds, bootstrap resamples) in which each baseline wins.
* The full-matrix log-det from per-example gradients: :func:`full_fisher_log_det`,
  :func:`full_log_det_distance`.
* The family beside eq. 2: :func:`frechet_task_distance`, :func:`task2vec_distance`,
  :func:`cosine_distance`, and the registry :data:`TASK_DISTANCES`.

The log-dets, the pair distances, :func:`distance_matrix` and the full-matrix log-det
compose under ``jax.jit`` and ``jax.vmap`` (a stack of Fishers): eagerly they compute in
float64 NumPy, check values and return Python floats; traced, they compute in
``jax.numpy`` and return JAX values, shapes and dtypes checked, values not. The tables of
many Fishers (:func:`family_distance_matrices`, :func:`closest_task`, the shares) stay eager.
"""

from ldnas_jax.distances._frechet import aligned_fishers, frechet_task_distance
from ldnas_jax.distances._full_log_det import (
    MAX_EXAMPLES,
    full_fisher_log_det,
    full_log_det_distance,
    gradient_reference,
)
from ldnas_jax.distances._log_det import (
    DEFAULT_NORMALIZE,
    DEFAULT_SIGMA,
    NORMALIZATIONS,
    PAIR_NORMALIZATIONS,
    NamedDistances,
    check_normalize,
    check_reference,
    closest_task,
    distance_matrix,
    distances_from_log_dets,
    flatten_fisher,
    log_det_distance,
    log_det_pair,
    mean_log_det,
    normalize_fisher,
    pair_reference,
)
from ldnas_jax.distances._registry import (
    FULL_LOG_DET,
    TASK_DISTANCES,
    FamilyDistances,
    PairDistance,
    closest_tasks,
    family_distance_matrices,
    make_task_distances,
)
from ldnas_jax.distances._task2vec import cosine_distance, task2vec_distance
from ldnas_jax.distances._uncertainty import closest_shares, win_shares

__all__ = [
    "DEFAULT_NORMALIZE",
    "DEFAULT_SIGMA",
    "FULL_LOG_DET",
    "MAX_EXAMPLES",
    "NORMALIZATIONS",
    "PAIR_NORMALIZATIONS",
    "TASK_DISTANCES",
    "FamilyDistances",
    "NamedDistances",
    "PairDistance",
    "aligned_fishers",
    "check_normalize",
    "check_reference",
    "closest_shares",
    "closest_task",
    "closest_tasks",
    "cosine_distance",
    "distance_matrix",
    "distances_from_log_dets",
    "family_distance_matrices",
    "flatten_fisher",
    "frechet_task_distance",
    "full_fisher_log_det",
    "full_log_det_distance",
    "gradient_reference",
    "log_det_distance",
    "log_det_pair",
    "make_task_distances",
    "mean_log_det",
    "normalize_fisher",
    "pair_reference",
    "task2vec_distance",
    "win_shares",
]
