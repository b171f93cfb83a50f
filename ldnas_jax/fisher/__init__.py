"""The diagonal Fisher information (paper eq. 1) of any JAX classifier, and per-example gradients.

* :func:`fisher_diagonal`: diag F, the mean over examples of squared per-example gradients
  of log p(y|x), for the ``"empirical"``, ``"sampled"`` and ``"exact"`` estimators.
* Engines: :func:`make_vmap_engine` (the reference, ``vmap(grad)``) and
  :func:`make_layerwise_engine` (layer by layer, no per-example tensor where avoidable);
  :func:`layerwise_plan` says which parameter takes which route.
* :func:`per_example_gradients`: G, whose Gram matrix gives the full empirical Fisher.
"""

from ldnas_jax.fisher._diagonal import ESTIMATORS, METHODS, fisher_diagonal, make_vmap_engine
from ldnas_jax.fisher._layerwise import LayerwisePlan, layerwise_plan, make_layerwise_engine
from ldnas_jax.fisher._per_example import per_example_gradients

__all__ = [
    "ESTIMATORS",
    "METHODS",
    "LayerwisePlan",
    "fisher_diagonal",
    "layerwise_plan",
    "make_layerwise_engine",
    "make_vmap_engine",
    "per_example_gradients",
]
