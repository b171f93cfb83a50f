"""The Fréchet-type Fisher task distance of the authors' follow-up paper.

Le, Soltani, Dong and Tarokh, "Fisher Task Distance and Its Application in Neural
Architecture Search" (arXiv:2103.12827, 2021/2022), measure the distance from a source
task b to a target task t as

    d[b, t] = (1/√2) ‖ F̂_{b,t}^{1/2} − F̂_{t,t}^{1/2} ‖_F,   F̂ = F / tr F,

where F_{b,t} is the Fisher of b's network on t's data and F_{t,t} that of t's own network
(the same pair as eq. 2 of LD-NAS). Dividing F by its trace before the square root is the
same as dividing F^{1/2} by its Frobenius norm, since ‖F^{1/2}‖²_F = tr F; both F̂^{1/2} then
have unit norm and d lies in [0, 1]. For diagonal Fishers F̂^{1/2} is the elementwise square
root of p = diag F / Σ diag F, and d is the Hellinger distance between p and q:

    d² = ½ Σ_i (√p_i − √q_i)² = 1 − Σ_i √(p_i q_i).

Where the normalisation comes from: the search tools returned the paper's abstract but not
its definition, so it was checked against the authors' public code (lephuoccat/
Fisher-Information-NAS, ``fisher_distance_cifar.py``, and lephuoccat/TAS-few-shot): each
Fisher is divided by its total over the whole network, then ``0.5 * Σ (√F_s − √F_t)²`` is
printed, the *square* of d above (same ranking). An earlier script of theirs divided by
the Euclidean norm instead; the later, trace-normalised form is used here because it matches
the 1/√2 factor (a unit-norm difference of unit vectors) and ``normalize="sum"`` of eq. 2.

When the two networks' heads differ in size, the authors zero-pad the smaller head's Fisher
to the larger shape; :func:`aligned_fishers` does that for pytrees of one structure.

Like the log-det distance, these functions compose under ``jax.jit`` and ``jax.vmap``:
with a traced Fisher they compute in ``jax.numpy`` and return JAX values, the value
checks skipped (see :mod:`ldnas_jax.distances._log_det`).
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import is_traced
from ldnas_jax.distances._log_det import flatten_fisher, normalize_fisher


def frechet_task_distance(
    fisher_source: Any, fisher_target: Any, *, squared: bool = False
) -> float:
    """d[b, t] = (1/√2) ‖ (F_{b,t}/tr)^{1/2} − (F_{t,t}/tr)^{1/2} ‖_F for diagonal Fishers.

    Args:
      fisher_source: F_{b,t}, diagonal Fisher of baseline b's network on the target's data
        (pytree or flat array).
      fisher_target: F_{t,t}, the target network's own diagonal Fisher. Pytrees of one
        structure whose leaves differ in shape (heads of different sizes) are zero-padded.
      squared: return d² (what the authors' code printed) instead of d.

    Returns:
      d in [0, 1] as a Python float; 0 iff the normalised Fishers are equal. A JAX
      scalar when a Fisher is traced (under ``jit`` or ``vmap``).

    Example:
      >>> frechet_task_distance(np.array([1.0, 0.0]), np.array([0.0, 3.0]))
      1.0
      >>> frechet_task_distance(np.array([1.0, 2.0]), np.array([2.0, 4.0]))
      0.0
      >>> jax.jit(frechet_task_distance)(jnp.array([1.0, 0.0]), jnp.array([0.0, 3.0])).item()
      1.0
    """
    a, b = aligned_fishers(fisher_source, fisher_target)
    p, q = normalize_fisher(a, "sum"), normalize_fisher(b, "sum")
    if is_traced(p, q):
        d2 = 0.5 * jnp.sum(jnp.square(jnp.sqrt(p) - jnp.sqrt(q)))
        return jnp.minimum(d2 if squared else jnp.sqrt(d2), 1.0)
    d2 = 0.5 * float(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2))
    return min(d2, 1.0) if squared else min(float(np.sqrt(d2)), 1.0)


def aligned_fishers(fisher_a: Any, fisher_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two Fishers as float64 vectors of equal length, entry i the same parameter in both.

    Flat arrays must have the same shape. Pytrees must share their structure; a leaf whose
    shapes differ (the head of a network with fewer classes) is zero-padded at the end of
    each axis to the larger shape, the authors' route: a missing parameter has no Fisher.

    When either Fisher is traced (under ``jit`` or ``vmap``) both come back as JAX
    vectors, padded the same way.

    Example:
      >>> a, b = aligned_fishers({"w": np.ones((2, 2))}, {"w": np.ones((2, 3))})
      >>> a.tolist(), b.shape
      ([1.0, 1.0, 0.0, 1.0, 1.0, 0.0], (6,))
    """
    leaves_a, tree_a = jax.tree.flatten(fisher_a)
    leaves_b, tree_b = jax.tree.flatten(fisher_b)
    if tree_a != tree_b:
        raise ValueError(f"the Fishers have different structures: {tree_a} vs {tree_b}")
    bare = tree_a.num_nodes == 1  # a single array, not a container: no head to pad
    xp = jnp if is_traced(leaves_a, leaves_b) else np
    padded_a, padded_b = [], []
    for index, (x, y) in enumerate(zip(leaves_a, leaves_b)):
        x, y = xp.asarray(x), xp.asarray(y)
        if x.shape != y.shape:
            if bare or x.ndim != y.ndim:
                raise ValueError(
                    f"Fisher shape mismatch {x.shape} vs {y.shape}"
                    + ("" if bare else f" at leaf {index}")
                    + "; pass pytrees of one architecture so a smaller head can be zero-padded"
                )
            shape = np.maximum(x.shape, y.shape)
            x = xp.pad(x, [(0, int(s - d)) for s, d in zip(shape, x.shape)])
            y = xp.pad(y, [(0, int(s - d)) for s, d in zip(shape, y.shape)])
        padded_a.append(x)
        padded_b.append(y)
    return (
        flatten_fisher(padded_a, name="first Fisher"),
        flatten_fisher(padded_b, name="second Fisher"),
    )
