"""ldnas_jax: neural architecture search guided by log-determinant Fisher task similarity.

The public API is flat::

    import ldnas_jax as ld
    fisher = ld.fisher_diagonal(apply_fn, params, (x, y))
    d = ld.log_det_distance(fisher_b_on_t, fisher_t_on_t)
"""

from ldnas_jax._checks import NonFiniteError
from ldnas_jax.distance import (
    DEFAULT_NORMALIZE,
    DEFAULT_SIGMA,
    closest_task,
    distance_matrix,
    flatten_fisher,
    log_det_distance,
    mean_log_det,
)
from ldnas_jax.fisher import ESTIMATORS, fisher_diagonal, make_vmap_engine
from ldnas_jax.fisher_layerwise import (
    LayerwisePlan,
    layerwise_plan,
    make_layerwise_engine,
    matmul_convs,
)
from ldnas_jax.models import VGG16, SmallVGG, make_model
from ldnas_jax.pipeline import (
    DistanceOptions,
    LDNASResult,
    SearchBudget,
    full_space_fuse_baseline,
    random_search_baseline,
    search_architecture,
)
from ldnas_jax.task_distance import TaskDistances, fisher_on_task, task_distances
from ldnas_jax.task_networks import TaskNetwork, train_task_network
from ldnas_jax.zoo import ArchitectureOptions, ZooEntry, build_zoo, load_zoo, save_zoo
from ldnas_jax.checkpoint import CheckpointError
from ldnas_jax.distance import distances_from_log_dets
from ldnas_jax.train import (
    TrainResult,
    eval_apply_fn,
    evaluate,
    init_variables,
    is_epsilon_approximation,
    train_classifier,
)

__version__ = "0.1.0"

__all__ = [
    "ArchitectureOptions",
    "CheckpointError",
    "DistanceOptions",
    "LDNASResult",
    "SearchBudget",
    "TaskDistances",
    "TaskNetwork",
    "ZooEntry",
    "build_zoo",
    "distances_from_log_dets",
    "fisher_on_task",
    "full_space_fuse_baseline",
    "load_zoo",
    "random_search_baseline",
    "save_zoo",
    "search_architecture",
    "task_distances",
    "train_task_network",
    "DEFAULT_NORMALIZE",
    "DEFAULT_SIGMA",
    "ESTIMATORS",
    "NonFiniteError",
    "SmallVGG",
    "TrainResult",
    "VGG16",
    "closest_task",
    "distance_matrix",
    "eval_apply_fn",
    "evaluate",
    "fisher_diagonal",
    "flatten_fisher",
    "LayerwisePlan",
    "layerwise_plan",
    "make_layerwise_engine",
    "matmul_convs",
    "init_variables",
    "is_epsilon_approximation",
    "log_det_distance",
    "make_model",
    "make_vmap_engine",
    "mean_log_det",
    "train_classifier",
]
