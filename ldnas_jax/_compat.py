"""Old import paths, kept for one release: each works and warns where the code now lives.

Before 0.2 the package was flat (``ldnas_jax.distance``, ``ldnas_jax.task_distance``, ...) and
``ldnas_jax`` exported 71 names. Both still resolve, through a meta-path finder for the
modules and the package's ``__getattr__`` for the names, with a :class:`DeprecationWarning`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED_MODULES = {
    "ldnas_jax.distance": "ldnas_jax.distances._log_det",
    "ldnas_jax.distance_family": "ldnas_jax.tasks._family",
    "ldnas_jax.fast_routes": "ldnas_jax.xla_cpu._fast_routes",
    "ldnas_jax.fisher_layerwise": "ldnas_jax.fisher._layerwise",
    "ldnas_jax.frechet": "ldnas_jax.distances._frechet",
    "ldnas_jax.full_fisher": "ldnas_jax.distances._full_log_det",
    "ldnas_jax.matmul_conv": "ldnas_jax.xla_cpu._matmul_conv",
    "ldnas_jax.pooling": "ldnas_jax.xla_cpu._pooling",
    "ldnas_jax.reproduce": "ldnas_jax.experiments._reproduce",
    "ldnas_jax.task2vec": "ldnas_jax.distances._task2vec",
    "ldnas_jax.task_distance": "ldnas_jax.tasks._pairs",
    "ldnas_jax.task_networks": "ldnas_jax.tasks._networks",
    "ldnas_jax.transfer": "ldnas_jax.experiments._transfer",
}

# Names that left the top level: name -> the public package that holds it now.
MOVED_NAMES = {
    **dict.fromkeys(
        ["ESTIMATORS", "LayerwisePlan", "layerwise_plan", "make_layerwise_engine",
         "make_vmap_engine", "per_example_gradients"],
        "ldnas_jax.fisher",
    ),
    **dict.fromkeys(["matmul_convs", "tiled_max_pooling", "window_max"], "ldnas_jax.xla_cpu"),
    **dict.fromkeys(
        ["FamilyDistances", "closest_tasks", "cosine_distance", "distances_from_log_dets",
         "family_distance_matrices", "flatten_fisher", "frechet_task_distance",
         "full_fisher_log_det", "full_log_det_distance", "make_task_distances",
         "task2vec_distance"],
        "ldnas_jax.distances",
    ),
    "full_log_det_task_distances": "ldnas_jax.tasks",
    **dict.fromkeys(["DenseNet121", "ResNet18"], "ldnas_jax.models"),
    **dict.fromkeys(["init_variables", "is_epsilon_approximation"], "ldnas_jax.train"),
    "train_or_load_task_network": "ldnas_jax.pipeline",
    **dict.fromkeys(
        ["DistanceTables", "distance_tables", "search_comparison", "train_hand_designed",
         "FineTuneBudget", "fine_tune", "spearman", "summarize_transfer", "train_from_scratch"],
        "ldnas_jax.experiments",
    ),
}


def moved_name(name: str):
    """The object an old top-level name refers to, with a warning naming its new home."""
    home = MOVED_NAMES[name]
    warnings.warn(
        f"ldnas_jax.{name} moved to {home}.{name}; the old name goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(home), name)


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new_name: str):
        self.new_name = new_name

    def create_module(self, spec):
        return importlib.import_module(self.new_name)

    def exec_module(self, module):  # the target module is already executed
        pass


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new_name = MOVED_MODULES.get(fullname)
        if new_name is None:
            return None
        warnings.warn(
            f"{fullname} moved to {new_name.rsplit('._', 1)[0]}; "
            "the old module path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new_name))


def install() -> None:
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
