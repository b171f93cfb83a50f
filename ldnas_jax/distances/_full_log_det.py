"""Log-det distance with the exact full empirical Fisher, for small networks (no diagonal).

The full empirical Fisher of a network with n parameters on M examples is

    F = GᵀG / M,   G[i] = ∇θ log p(y_i | x_i, θ)   (G is M × n),

the matrix of paper eq. 1 before its diagonal is taken. Its log-determinant never needs the
n × n matrix: by Sylvester's identity det(I_n + AB) = det(I_M + BA),

    log det(σ² I_n + GᵀG / c) = n log σ² + log det(I_M + G Gᵀ / (c σ²)),

so an M × M Gram matrix suffices when M ≪ n (for M > n the n × n side is the smaller one,
and is used instead). The slogdet runs in float64 numpy.

Normalisation mirrors :func:`ldnas_jax.mean_log_det`: ``normalize=None`` uses c = M (the
Fisher as computed); ``normalize="sum"`` divides F by its trace, the full-matrix analogue of
dividing the diagonal by its total (the trace *is* that total), so c = ‖G‖²_F;
``normalize="target_mean"`` divides F by r_t, the mean diagonal entry of the target's own
F_{t,t} (:func:`gradient_reference` of its G), so c = M·r_t. Either way the result is divided
by n, a per-parameter log-det, and its diagonal counterpart is exactly
``mean_log_det(diag F, ...)`` with the same reference. By Hadamard's inequality the full value
never exceeds it.

With a traced G (under ``jax.jit`` or ``jax.vmap``) the same formula runs in ``jax.numpy``
at JAX's default precision (float32 unless x64 is enabled) and returns a JAX scalar, the
value checks skipped. In float32 a small σ makes the Gram side ill-conditioned: prefer the
eager float64 path (or x64) where σ² is far below the Fisher's entries.
"""

import jax  # noqa: F401  (the doctests call jax.jit)
import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import NonFiniteError, check_positive_scalar, is_traced
from ldnas_jax.distances._log_det import (
    DEFAULT_NORMALIZE,
    DEFAULT_SIGMA,
    PAIR_NORMALIZATIONS,
    check_normalize,
    check_reference,
    jax_float,
)

# Memory guards. G is held in float32 (M × n × 4 bytes) and the Gram matrix in float64
# (k × k × 8 bytes, k = min(M, n)); the slogdet costs O(k³).
MAX_EXAMPLES = 4096


def full_fisher_log_det(
    gradients,
    *,
    sigma: float = DEFAULT_SIGMA,
    normalize: str | None = DEFAULT_NORMALIZE,
    max_examples: int = MAX_EXAMPLES,
    reference: float | None = None,
) -> float:
    """(1/n) log det(σ² I_n + F) for the full empirical Fisher F = GᵀG / M (module docstring).

    Args:
      gradients: G as an (M, n) array, e.g. from :func:`ldnas_jax.fisher.per_example_gradients`.
      sigma: σ > 0, as in :func:`ldnas_jax.log_det_distance`.
      normalize: None (c = M), ``"sum"`` (F divided by its trace, c = ‖G‖²_F) or
        ``"target_mean"`` (F divided by ``reference``, c = M·reference).
      max_examples: memory guard on min(M, n), the side of the matrix factorised.
      reference: for ``"target_mean"``, r_t = ``gradient_reference(G_tt)`` of the target's
        own network; None for the other modes.

    Returns:
      A Python float; a JAX scalar when G, σ or the reference is traced (module docstring).

    Example:
      >>> g = np.array([[1.0, 0.0], [0.0, 1.0]])   # F = I/2
      >>> round(full_fisher_log_det(g, sigma=1.0, normalize=None), 6), round(float(np.log(1.5)), 6)
      (0.405465, 0.405465)
      >>> fn = jax.jit(lambda g: full_fisher_log_det(g, sigma=1.0, normalize=None))
      >>> round(fn(jnp.asarray(g)).item(), 6)
      0.405465
    """
    sigma = check_positive_scalar(sigma, name="sigma")
    check_normalize(normalize)
    if isinstance(gradients, tuple):
        raise TypeError(
            "pass G as an (M, n) array; compute it with "
            "ldnas_jax.fisher.per_example_gradients(apply_fn, params, x, y)"
        )
    g = _gradient_matrix(gradients)
    m, n = g.shape
    if min(m, n) > max_examples:
        raise ValueError(
            f"the Gram matrix would be {min(m, n)}×{min(m, n)}, above max_examples={max_examples}; "
            "use fewer examples"
        )
    reference = check_reference(normalize, reference)  # after G's own errors, which name G
    if is_traced(g, sigma, reference):
        return _traced_log_det(g, sigma, normalize, reference)
    if normalize is None:
        scale = float(m)
    elif normalize in PAIR_NORMALIZATIONS:
        scale = float(m) * reference
    else:
        scale = float(np.sum(g * g))
    if scale <= 0:
        raise ValueError("cannot trace-normalise a Fisher whose gradients are all zero")
    s2 = float(sigma) ** 2
    small = g @ g.T if m <= n else g.T @ g  # the k×k side, k = min(M, n)
    sign, log_det = np.linalg.slogdet(np.eye(small.shape[0]) + small / (scale * s2))
    if sign <= 0 or not np.isfinite(log_det):
        raise NonFiniteError(
            f"log-det of I + GGᵀ/(cσ²) is not finite (sign {sign}, value {log_det})"
        )
    return float(np.log(s2) + log_det / n)


def _traced_log_det(g, sigma, normalize, reference):
    """:func:`full_fisher_log_det`'s formula in ``jax.numpy``, for traced arguments."""
    g = jnp.asarray(g).astype(jax_float())
    m, n = g.shape
    if normalize is None:
        scale = float(m)
    elif normalize in PAIR_NORMALIZATIONS:
        scale = m * jnp.asarray(reference).astype(g.dtype)
    else:
        scale = jnp.sum(g * g)
    s2 = jnp.square(jnp.asarray(sigma).astype(g.dtype))
    small = g @ g.T if m <= n else g.T @ g
    _, log_det = jnp.linalg.slogdet(jnp.eye(small.shape[0], dtype=g.dtype) + small / (scale * s2))
    return jnp.log(s2) + log_det / n


def full_log_det_distance(
    gradients_source,
    gradients_target,
    *,
    sigma: float = DEFAULT_SIGMA,
    normalize: str | None = DEFAULT_NORMALIZE,
) -> float:
    """Eq. 2 with full Fishers: | L(F_{b,t}) − L(F_{t,t}) |, L = :func:`full_fisher_log_det`.

    Args:
      gradients_source: G of baseline N_b on the target's data (M × n),.
      gradients_target: G of the target network N_t on the same data (M' × m).
      sigma, normalize: as in :func:`full_fisher_log_det`.

    Example:
      >>> g = np.eye(3)
      >>> full_log_det_distance(g, 2 * g, sigma=1.0, normalize="sum")
      0.0
      >>> round(full_log_det_distance(2 * g, g, sigma=1.0, normalize="target_mean"), 6)  # log(5/2)
      0.916291
      >>> fn = jax.jit(lambda a, b: full_log_det_distance(a, b, sigma=1.0, normalize="target_mean"))
      >>> round(fn(2 * jnp.eye(3), jnp.eye(3)).item(), 5)
      0.91629
    """
    reference = None
    if check_normalize(normalize) in PAIR_NORMALIZATIONS:
        reference = gradient_reference(gradients_target)
    source = full_fisher_log_det(
        gradients_source, sigma=sigma, normalize=normalize, reference=reference
    )
    target = full_fisher_log_det(
        gradients_target, sigma=sigma, normalize=normalize, reference=reference
    )
    return abs(source - target)


def gradient_reference(gradients_target) -> float:
    """r_t for ``"target_mean"``: the mean diagonal entry of F_{t,t} = GᵀG / M, i.e. ‖G‖²_F / (M n).

    Example:
      >>> gradient_reference(np.array([[1.0, 0.0], [0.0, 3.0]]))   # diag F = (0.5, 4.5)
      2.5
    """
    g = _gradient_matrix(gradients_target)
    if is_traced(g):
        return jnp.sum(g * g) / g.size
    reference = float(np.sum(g * g)) / g.size
    if reference <= 0:
        raise ValueError(
            "cannot take σ relative to the target's Fisher: its gradients are all zero"
        )
    return reference


def _gradient_matrix(gradients) -> np.ndarray:
    """G as a float64 matrix, checked; a traced G as a JAX matrix, its values unchecked."""
    traced = is_traced(gradients)
    g = jnp.asarray(gradients).astype(jax_float()) if traced else np.asarray(gradients, np.float64)
    if g.ndim != 2:
        raise ValueError(f"G must be an (examples, params) matrix, got shape {g.shape}")
    if g.size == 0:
        raise ValueError(f"G is empty (shape {g.shape}): need at least one example and parameter")
    if not traced and not np.all(np.isfinite(g)):
        raise NonFiniteError(f"G contains NaN or inf ({int(np.sum(~np.isfinite(g)))} entries)")
    return g
