"""Task2Vec-style cosine distances between diagonal Fishers.

Achille et al., "Task2Vec: Task Embedding for Meta-Learning" (ICCV 2019), embed a task as
the diagonal Fisher of a probe network on the task's data and compare two embeddings with
the symmetric distance

    d_sym(F_a, F_b) = d_cos( F_a / (F_a + F_b),  F_b / (F_a + F_b) ),

divisions elementwise and d_cos(u, v) = 1 − u·v / (‖u‖ ‖v‖). Dividing by F_a + F_b keeps
the parameters with large Fisher everywhere from dominating. Entries that are zero in both
Fishers (0/0) are left out, as Task2Vec's small constant in the denominator would make them.

Here the two Fishers are, like eq. 2, F_{b,t} and F_{t,t} (baseline and target networks on
the target's data). Their networks differ, so their overall scales are not comparable the way
one probe network's are; ``normalize="sum"`` divides each by its total first.
``normalize=None`` gives Task2Vec's formula as published, and so does ``"target_mean"``
(both Fishers divided by one constant, which the ratios F_a / (F_a + F_b) do not see). Task2Vec's filter-wise
averaging of the Fisher is not applied: entries are per parameter.

:func:`cosine_distance` is the plain cosine distance between the (normalised) embeddings;
it is scale-invariant, so normalisation does not change it.

Both compose under ``jax.jit`` and ``jax.vmap``: with a traced Fisher they compute in
``jax.numpy``, the entries zero in both Fishers masked rather than dropped (which leaves
the cosine unchanged), and return JAX scalars, the value checks skipped.
"""

from typing import Any

import jax  # noqa: F401  (the doctests call jax.jit)
import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import is_traced
from ldnas_jax.distances._frechet import aligned_fishers
from ldnas_jax.distances._log_det import DEFAULT_NORMALIZE, normalize_fisher, pair_reference


def task2vec_distance(
    fisher_a: Any, fisher_b: Any, *, normalize: str | None = DEFAULT_NORMALIZE
) -> float:
    """Task2Vec's symmetric distance d_sym(F_a, F_b) (module docstring), in [0, 1].

    Args:
      fisher_a, fisher_b: diagonal Fishers (pytrees or flat arrays; pytrees of one structure
        with heads of different sizes are zero-padded, see :func:`ldnas_jax.aligned_fishers`).
      normalize: ``"sum"`` to divide each Fisher by its total first, None for the raw form;
        ``"target_mean"`` divides both by the mean entry of ``fisher_b`` (the target's),
        which gives the raw form's value.

    Example:
      >>> task2vec_distance(np.array([1.0, 1.0]), np.array([2.0, 2.0]))
      0.0
      >>> task2vec_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
      1.0
      >>> jax.jit(task2vec_distance)(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])).item()
      1.0
    """
    a, b = aligned_fishers(fisher_a, fisher_b)
    reference = pair_reference(b, normalize=normalize)
    a, b = (normalize_fisher(v, normalize, reference=reference) for v in (a, b))
    total = a + b
    if is_traced(a, b):
        keep = total > 0  # 0/0 entries become 0 in both: they add nothing to the cosine
        safe = jnp.where(keep, total, 1.0)
        return _cosine(jnp.where(keep, a / safe, 0.0), jnp.where(keep, b / safe, 0.0))
    keep = total > 0
    if not np.any(keep):
        raise ValueError("both Fishers are all zero; the Task2Vec distance is undefined")
    return _cosine(a[keep] / total[keep], b[keep] / total[keep])


def cosine_distance(fisher_a: Any, fisher_b: Any) -> float:
    """1 − cos(F_a, F_b) between two diagonal Fishers, in [0, 1] (entries are ≥ 0).

    Example:
      >>> round(cosine_distance(np.array([1.0, 0.0]), np.array([1.0, 1.0])), 6)
      0.292893
      >>> round(jax.jit(cosine_distance)(jnp.array([1.0, 0.0]), jnp.array([1.0, 1.0])).item(), 6)
      0.292893
    """
    a, b = aligned_fishers(fisher_a, fisher_b)
    return _cosine(a, b)


def _cosine(u: np.ndarray, v: np.ndarray) -> float:
    if is_traced(u, v):  # no zero-norm check: a traced norm has no value yet
        nu, nv = jnp.linalg.norm(u), jnp.linalg.norm(v)
        return jnp.clip(0.5 * jnp.sum(jnp.square(u / nu - v / nv)), 0.0, 1.0)
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        raise ValueError("a Fisher is all zero; the cosine distance is undefined")
    # ½‖û − v̂‖² equals 1 − cos for unit vectors and is exactly 0 when they coincide.
    return float(np.clip(0.5 * np.sum((u / nu - v / nv) ** 2), 0.0, 1.0))
