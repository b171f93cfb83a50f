"""ldnas_jax: neural architecture search guided by log-determinant Fisher task similarity.

The public API is flat::

    import ldnas_jax as ld
    fisher = ld.fisher_diagonal(apply_fn, params, (x, y))
    d = ld.log_det_distance(fisher_b_on_t, fisher_t_on_t)

Data sets live in :mod:`ldnas_jax.data`, the search space and FUSE in :mod:`ldnas_jax.nas`.
"""

from ldnas_jax._checks import NonFiniteError
from ldnas_jax.checkpoint import CheckpointError
from ldnas_jax.distance import (
    DEFAULT_NORMALIZE,
    DEFAULT_SIGMA,
    closest_task,
    distance_matrix,
    distances_from_log_dets,
    flatten_fisher,
    log_det_distance,
    mean_log_det,
)
from ldnas_jax.distance_family import (
    TASK_DISTANCES,
    FamilyDistances,
    closest_tasks,
    family_distance_matrices,
    full_log_det_task_distances,
    make_task_distances,
    task_family_distances,
)
from ldnas_jax.fast_routes import fast_routes
from ldnas_jax.fisher import ESTIMATORS, fisher_diagonal, make_vmap_engine
from ldnas_jax.fisher_layerwise import LayerwisePlan, layerwise_plan, make_layerwise_engine
from ldnas_jax.frechet import frechet_task_distance
from ldnas_jax.full_fisher import full_fisher_log_det, full_log_det_distance, per_example_gradients
from ldnas_jax.matmul_conv import matmul_convs
from ldnas_jax.models import VGG16, DenseNet121, ResNet18, SmallVGG, make_model
from ldnas_jax.pipeline import (
    DistanceOptions,
    LDNASResult,
    SearchBudget,
    full_space_fuse_baseline,
    random_search_baseline,
    search_architecture,
    train_or_load_task_network,
)
from ldnas_jax.pooling import tiled_max_pooling, window_max
from ldnas_jax.reproduce import (
    DistanceTables,
    distance_tables,
    search_comparison,
    train_hand_designed,
)
from ldnas_jax.task2vec import cosine_distance, task2vec_distance
from ldnas_jax.task_distance import TaskDistances, fisher_on_task, task_distances
from ldnas_jax.task_networks import TaskNetwork, train_task_network
from ldnas_jax.train import (
    TrainResult,
    eval_apply_fn,
    evaluate,
    init_variables,
    is_epsilon_approximation,
    train_classifier,
)
from ldnas_jax.transfer import (
    FineTuneBudget,
    fine_tune,
    spearman,
    summarize_transfer,
    train_from_scratch,
    transfer_check,
)
from ldnas_jax.zoo import ArchitectureOptions, ZooEntry, build_zoo, load_zoo, save_zoo

__version__ = "0.1.0"

__all__ = [
    # checks and errors
    "CheckpointError",
    "NonFiniteError",
    # Fisher information
    "ESTIMATORS",
    "LayerwisePlan",
    "fisher_diagonal",
    "layerwise_plan",
    "make_layerwise_engine",
    "make_vmap_engine",
    "per_example_gradients",
    # fast routes around XLA:CPU's slow convolutions and pooling derivatives
    "fast_routes",
    "matmul_convs",
    "tiled_max_pooling",
    "window_max",
    # task distances
    "DEFAULT_NORMALIZE",
    "DEFAULT_SIGMA",
    "FamilyDistances",
    "TASK_DISTANCES",
    "TaskDistances",
    "closest_task",
    "closest_tasks",
    "cosine_distance",
    "distance_matrix",
    "distances_from_log_dets",
    "family_distance_matrices",
    "fisher_on_task",
    "flatten_fisher",
    "frechet_task_distance",
    "full_fisher_log_det",
    "full_log_det_distance",
    "full_log_det_task_distances",
    "log_det_distance",
    "make_task_distances",
    "mean_log_det",
    "task2vec_distance",
    "task_distances",
    "task_family_distances",
    # models and training
    "DenseNet121",
    "ResNet18",
    "SmallVGG",
    "TaskNetwork",
    "TrainResult",
    "VGG16",
    "eval_apply_fn",
    "evaluate",
    "init_variables",
    "is_epsilon_approximation",
    "make_model",
    "train_classifier",
    "train_task_network",
    # zoo, Algorithm 1 and its baselines
    "ArchitectureOptions",
    "DistanceOptions",
    "LDNASResult",
    "SearchBudget",
    "ZooEntry",
    "build_zoo",
    "full_space_fuse_baseline",
    "load_zoo",
    "random_search_baseline",
    "save_zoo",
    "search_architecture",
    "train_or_load_task_network",
    # the paper's protocol (reproduce)
    "DistanceTables",
    "distance_tables",
    "search_comparison",
    "train_hand_designed",
    # transfer: ground truth for "closest"
    "FineTuneBudget",
    "fine_tune",
    "spearman",
    "summarize_transfer",
    "train_from_scratch",
    "transfer_check",
]
