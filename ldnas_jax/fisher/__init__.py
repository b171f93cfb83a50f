"""The diagonal Fisher information (paper eq. 1) of any JAX classifier, and per-example gradients.

* :func:`fisher_diagonal`: diag F, the mean over examples of squared per-example gradients
  of log p(y|x), for the ``"empirical"``, ``"sampled"`` and ``"exact"`` estimators.
* Engines (:class:`FisherEngine`): :func:`make_vmap_engine` (the reference, ``vmap(grad)``)
  and :func:`make_layerwise_engine` (layer by layer from the traced program, no
  per-example tensor where avoidable, for linen, NNX, Equinox or plain functions);
  :func:`layerwise_plan` says which parameter takes which route. On a GPU or TPU
  ``method="auto"`` times both once per program and keeps the faster
  (:func:`engine_timings`, :func:`clear_engine_timings`, :data:`TIMED_BACKENDS`).
* Label routes for a network whose head is smaller than the task's classes:
  :func:`pad_logits` (the paper's zero padding) and :func:`predicted_labels`.
* :func:`per_example_gradients`: G, whose Gram matrix gives the full empirical Fisher.
"""

from ldnas_jax.fisher._diagonal import METHODS, fisher_diagonal
from ldnas_jax.fisher._engine import FisherEngine, make_vmap_engine
from ldnas_jax.fisher._engine_choice import (
    TIMED_BACKENDS,
    EngineTiming,
    clear_engine_timings,
    engine_timings,
)
from ldnas_jax.fisher._estimators import ESTIMATORS
from ldnas_jax.fisher._labels import pad_logits, predicted_labels
from ldnas_jax.fisher._layerwise import make_layerwise_engine
from ldnas_jax.fisher._per_example import per_example_gradients
from ldnas_jax.fisher._plan import LayerwisePlan, layerwise_plan

__all__ = [
    "ESTIMATORS",
    "METHODS",
    "TIMED_BACKENDS",
    "EngineTiming",
    "FisherEngine",
    "LayerwisePlan",
    "clear_engine_timings",
    "engine_timings",
    "fisher_diagonal",
    "layerwise_plan",
    "make_layerwise_engine",
    "make_vmap_engine",
    "pad_logits",
    "per_example_gradients",
    "predicted_labels",
]
