"""ldnas_jax: neural architecture search guided by log-determinant Fisher task similarity.

The public API is flat and small::

    import ldnas_jax as ld
    fisher = ld.fisher_diagonal(apply_fn, params, (x, y))
    d = ld.log_det_distance(fisher_b_on_t, fisher_t_on_t)

The sub-packages follow the method's flow and hold everything else:
:mod:`~ldnas_jax.data` → :mod:`~ldnas_jax.models` → :mod:`~ldnas_jax.fisher` /
:mod:`~ldnas_jax.distances` → :mod:`~ldnas_jax.tasks` → :mod:`~ldnas_jax.nas` →
:mod:`~ldnas_jax.pipeline` → :mod:`~ldnas_jax.experiments` → :mod:`~ldnas_jax.commands`,
with the exact XLA:CPU rewrites in :mod:`~ldnas_jax.xla_cpu`.

Names load on first use, so ``import ldnas_jax`` pulls in neither Orbax, matplotlib nor
TensorFlow Datasets.
"""

import importlib

# name -> the module that defines it; imported on first access (PEP 562).
_PUBLIC = {
    # errors
    "CheckpointError": "ldnas_jax.checkpoint",
    "NonFiniteError": "ldnas_jax._checks",
    # the one resumable loop of training, searches and the commands' tables
    "JsonCheckpoint": "ldnas_jax.resumable",
    "LoopState": "ldnas_jax.resumable",
    "Step": "ldnas_jax.resumable",
    "StepCheckpoints": "ldnas_jax.resumable",
    "run_resumable": "ldnas_jax.resumable",
    # 1. Fisher (paper eq. 1)
    "fisher_diagonal": "ldnas_jax.fisher._diagonal",
    # 2. distances (eq. 2/3) and the closest task
    "DEFAULT_NORMALIZE": "ldnas_jax.distances._log_det",
    "DEFAULT_SIGMA": "ldnas_jax.distances._log_det",
    "TASK_DISTANCES": "ldnas_jax.distances._registry",
    "closest_shares": "ldnas_jax.distances._uncertainty",
    "closest_task": "ldnas_jax.distances._log_det",
    "distance_matrix": "ldnas_jax.distances._log_det",
    "log_det_distance": "ldnas_jax.distances._log_det",
    "mean_log_det": "ldnas_jax.distances._log_det",
    # tasks: ε-networks and the pair loop F_{b,t} -> d[b, t]
    "TaskDistances": "ldnas_jax.tasks._pairs",
    "TaskNetwork": "ldnas_jax.tasks._networks",
    "fisher_on_task": "ldnas_jax.tasks._pairs",
    "task_distances": "ldnas_jax.tasks._pairs",
    "task_family_distances": "ldnas_jax.tasks._family",
    "train_task_network": "ldnas_jax.tasks._networks",
    # models and training
    "SmallVGG": "ldnas_jax.models",
    "VGG16": "ldnas_jax.models",
    "TrainResult": "ldnas_jax.train",
    "eval_apply_fn": "ldnas_jax.train",
    "evaluate": "ldnas_jax.train",
    "make_model": "ldnas_jax.models",
    "train_classifier": "ldnas_jax.train",
    "fast_routes": "ldnas_jax.xla_cpu._fast_routes",
    # 3-4. zoo and Algorithm 1 with its baselines
    "ArchitectureOptions": "ldnas_jax.zoo",
    "ZooEntry": "ldnas_jax.zoo",
    "build_zoo": "ldnas_jax.zoo",
    "load_zoo": "ldnas_jax.zoo",
    "save_zoo": "ldnas_jax.zoo",
    "DistanceOptions": "ldnas_jax.pipeline",
    "LDNASResult": "ldnas_jax.pipeline",
    "SearchBudget": "ldnas_jax.pipeline",
    "FinalTraining": "ldnas_jax.pipeline",
    "SEARCH_FUSE": "ldnas_jax.pipeline",
    "FuseConfig": "ldnas_jax.nas",
    "RandomSearchConfig": "ldnas_jax.nas",
    "BaselineResult": "ldnas_jax.pipeline",
    "ClosestTask": "ldnas_jax.pipeline",
    "find_closest_task": "ldnas_jax.pipeline",
    "search_and_train": "ldnas_jax.pipeline",
    "full_space_fuse_baseline": "ldnas_jax.pipeline",
    "random_search_baseline": "ldnas_jax.pipeline",
    "search_architecture": "ldnas_jax.pipeline",
    # ground truth for "closest"
    "transfer_check": "ldnas_jax.experiments._transfer",
}

_SUBPACKAGES = (
    "commands", "data", "distances", "experiments", "fisher", "models", "nas", "pipeline",
    "resumable", "tasks", "train", "xla_cpu", "zoo",
)

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name == "__version__":  # the installed metadata's; read on first use, as it costs an import
        from ldnas_jax.run_info import package_version

        globals()["__version__"] = version = package_version()
        return version
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"ldnas_jax.{name}")
    raise AttributeError(f"module 'ldnas_jax' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_PUBLIC, *_SUBPACKAGES, "__version__"})
