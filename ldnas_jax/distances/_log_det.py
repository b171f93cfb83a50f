"""Log-determinant task distance (paper eqs. 2–3), distance matrices and the closest task.

For a diagonal Fisher F of a network with n parameters,
(1/n) log det(F + σ²I) = mean_i log(F_ii + σ²), and

    d[b, t] = | (1/n) log det(F_{b,t} + σ²I_n) − (1/m) log det(F_{t,t} + σ²I_m) |.

F_{b,t} is the Fisher of baseline b's network on the target's data and F_{t,t}
that of the target's own network. Networks of different sizes are compared
through the per-parameter means (eq. 2); with equal sizes this is eq. 3.

Normalisations (``normalize=``), each a choice of what σ is measured against:

* ``None``: the paper's eq. 2 as written, σ absolute. Size-free (duplicating every
  entry of a Fisher leaves d unchanged), but σ's weight follows the scale of the
  Fisher entries, which differs from network to network.
* ``"sum"``: each Fisher divided by its own total first (the authors' code). Free of
  scale, but not of size: the mean entry becomes 1/n, so d(f, concat(f, f)) = log 2
  for small σ, and the relative scale of F_{b,t} against F_{t,t} is thrown away.
* ``"target_mean"`` (the default): σ² relative to r_t, the mean entry of the target's own F_{t,t},
  for both Fishers of the pair: L = mean_i log(F_ii / r_t + σ²). This is eq. 2 with
  the absolute σ² replaced by σ²·r_t, so **it departs from the paper** only in the
  constant: σ is a fraction of the target network's typical Fisher entry, which means
  the same for SmallVGG and VGG-16. It is size-free, d is unchanged when both Fishers
  are multiplied by one constant, and d(c·f, f) > 0 for c ≠ 1 (how sure the baseline's
  network is on the target's data against the target's own network is kept).

Because r_t comes from the pair, the log-det of one Fisher needs it as ``reference=``:
``mean_log_det(F_bt, reference=pair_reference(F_tt))``. :func:`log_det_pair`,
:func:`log_det_distance` and :func:`distance_matrix` do this themselves.

Under JAX transformations
-------------------------
Called eagerly on concrete arrays, these functions compute in float64 NumPy, check the
values (NaN/inf, negative entries, an all-zero target) and return Python floats. When an
argument is traced (under ``jax.jit``, ``jax.vmap`` or ``jax.grad``, e.g. a stack of
Fishers mapped with ``vmap``), they compute the same formulas in ``jax.numpy`` at JAX's
default float precision (float32 unless x64 is enabled) and return JAX scalars or arrays;
shapes and dtypes are still checked, values are not (the program has none yet).
"""

import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ldnas_jax._checks import (
    NonFiniteError,
    check_positive_scalar,
    is_real_number_dtype,
    is_traced,
)

# Chosen by `python -m benchmarks.distance_validation` (docs/distance_validation.json) on the
# 8 embedded tasks, SmallVGG ε-networks (8 epochs), 3 seeds, with the label route "predicted",
# then checked on real MNIST without retuning. With "target_mean", σ from 1e-4 to 3e-3 puts a
# same-domain task closest for 6.0 of 8 targets (mean over seeds); 1e-3 is the largest σ of
# that plateau (less weight on near-zero entries). Beside it: the paper's absolute σ, 6.33 at
# best (σ = 1e-4, whose meaning follows the network's Fisher scale); "sum", 5.33 at best and
# 4.33 at its old default (σ = 1e-3, "pad"). Held out: MNIST T0–T3 with objects E4–E7, 5.0/8
# ("sum" at its old default: 4.33); seeds agree on 3 of 4 MNIST targets ("sum": 0). With the
# "pad" label route "target_mean" is poor (1.67/8): the default expects "predicted" labels.
# The seeds agree on the exact closest task for only 1 of 8 embedded targets, whatever the mode.
DEFAULT_SIGMA = 1e-3
DEFAULT_NORMALIZE = "target_mean"
NORMALIZATIONS = (None, "sum", "target_mean")
# Modes whose reference comes from the pair (F_{t,t}), not from the Fisher itself.
PAIR_NORMALIZATIONS = ("target_mean",)


def check_normalize(normalize: str | None) -> str | None:
    """Returns ``normalize`` if it names a mode of :data:`NORMALIZATIONS`, else a ``ValueError``.

    Example:
      >>> check_normalize("target_mean")
      'target_mean'
    """
    if not (normalize is None or isinstance(normalize, str)) or normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize={normalize!r}; choose one of {NORMALIZATIONS}")
    return normalize


def _is_real_dtype(dtype) -> bool:
    """Real numbers, the ml_dtypes floats (bfloat16, float8) included, which numpy calls void."""
    return is_real_number_dtype(dtype) or bool(jnp.issubdtype(dtype, jnp.floating))


def jax_float():
    """The float dtype of the traced path: JAX's default (float32 unless x64 is enabled)."""
    return jax.dtypes.canonicalize_dtype(np.float64)


def flatten_fisher(fisher: Any, *, name: str = "Fisher") -> np.ndarray:
    """Concatenates the leaves of a Fisher pytree (or an array) into a float64 vector.

    Any real dtype is accepted, bfloat16 and the other ml_dtypes floats included; the
    result is float64 whatever the input. Raises a ``ValueError`` when the Fisher is
    empty, holds NaN/inf or has negative entries, none of which a squared gradient can
    produce. With traced leaves (under ``jit`` or ``vmap``) the vector is a JAX array of
    :func:`jax_float`, and the value checks are skipped.

    Example:
      >>> flatten_fisher({"a": np.ones(2), "b": np.zeros((1, 2))}).tolist()
      [1.0, 1.0, 0.0, 0.0]
      >>> flatten_fisher(jnp.array([0.5, 2.0], jnp.bfloat16)).dtype
      dtype('float64')
      >>> jax.jit(flatten_fisher)({"a": jnp.ones(2)}).dtype
      dtype('float32')
    """
    if isinstance(fisher, Iterator):  # a one-shot iterator is no pytree; refuse, don't guess
        raise TypeError(
            f"{name} must be an array or a pytree of arrays, got {type(fisher).__name__}"
        )
    leaves = jax.tree.leaves(fisher)
    if is_traced(leaves):
        return _flatten_traced(leaves, name)
    leaves = [np.asarray(leaf) for leaf in leaves]
    if not leaves:
        raise ValueError(f"{name} is empty")
    for leaf in leaves:
        if not _is_real_dtype(leaf.dtype):
            raise TypeError(f"{name} must hold real numbers, got an entry of dtype {leaf.dtype}")
    flat = np.concatenate([leaf.astype(np.float64).ravel() for leaf in leaves])
    if flat.size == 0:
        raise ValueError(f"{name} has no entries")
    if not np.all(np.isfinite(flat)):
        raise NonFiniteError(
            f"{name} contains NaN or inf ({int(np.sum(~np.isfinite(flat)))} entries)"
        )
    if np.any(flat < 0):
        raise ValueError(f"{name} has negative entries; a diagonal Fisher is a mean of squares")
    return flat


def _flatten_traced(leaves: list, name: str) -> jax.Array:
    """:func:`flatten_fisher` of traced leaves: shapes and dtypes checked, values not."""
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    for leaf in leaves:
        if not _is_real_dtype(leaf.dtype):
            raise TypeError(f"{name} must hold real numbers, got an entry of dtype {leaf.dtype}")
    flat = jnp.concatenate([jnp.ravel(leaf).astype(jax_float()) for leaf in leaves])
    if flat.size == 0:
        raise ValueError(f"{name} has no entries")
    return flat


def as_jax_vector(flat) -> jax.Array:
    """A flat Fisher (NumPy or JAX) as a JAX vector of :func:`jax_float`, for the traced path."""
    return jnp.asarray(flat).astype(jax_float())


def pair_reference(
    fisher_target: Any, *, normalize: str | None = DEFAULT_NORMALIZE
) -> float | None:
    """The reference that ``normalize`` takes from the pair: r_t for ``"target_mean"``, else None.

    r_t is the mean entry of F_{t,t}, the target network's own Fisher on its data. Pass
    the result as ``reference=`` to :func:`mean_log_det` for F_{t,t} and for every
    F_{b,t} of the same target t (a K×K table needs one r_t per column).

    Raises:
      ValueError: an unknown mode, or a target Fisher that is all zero under
        ``"target_mean"`` (nothing to measure σ against).

    Under ``jit`` or ``vmap`` (a traced Fisher) r_t is a JAX scalar, and an all-zero
    target is not detected.

    Example:
      >>> pair_reference(np.array([1.0, 3.0]), normalize="target_mean")
      2.0
      >>> pair_reference(np.array([1.0, 3.0]), normalize="sum") is None
      True
      >>> jax.jit(pair_reference)(jnp.array([1.0, 3.0])).item()
      2.0
    """
    if check_normalize(normalize) not in PAIR_NORMALIZATIONS:
        return None
    flat = flatten_fisher(fisher_target, name="target Fisher")
    if is_traced(flat):
        return jnp.mean(flat)
    reference = float(np.mean(flat))
    if reference <= 0:
        raise ValueError("cannot take σ relative to the target's Fisher: all its entries are zero")
    return reference


def check_reference(normalize: str | None, reference: float | None) -> float | None:
    """The reference as a float when ``normalize`` needs one, None when it takes none; else an error.

    A traced reference (under ``jit``) must be a real scalar; it is returned as it is.

    Example:
      >>> check_reference("target_mean", 2), check_reference(None, None)
      (2.0, None)
    """
    normalize = check_normalize(normalize)
    if normalize not in PAIR_NORMALIZATIONS:
        if reference is not None:
            raise ValueError(
                f"normalize={normalize!r} takes no reference (got {reference!r}); only "
                f"{PAIR_NORMALIZATIONS} do"
            )
        return None
    if reference is None:
        raise ValueError(
            f"normalize={normalize!r} measures σ against the target's Fisher: pass "
            "reference=pair_reference(F_tt, normalize=...), or use log_det_pair"
        )
    if is_traced(reference):
        return check_positive_scalar(reference, name="reference")
    if (
        isinstance(reference, (bool, np.bool_))
        or not isinstance(reference, numbers.Real)
        or not np.isfinite(reference)
        or reference <= 0
    ):
        raise ValueError(f"reference must be a finite number > 0, got {reference!r}")
    return float(reference)


def normalize_fisher(
    flat: np.ndarray, normalize: str | None, *, reference: float | None = None
) -> np.ndarray:
    """Applies a normalisation of :data:`NORMALIZATIONS` to a flat Fisher.

    None leaves it; ``"sum"`` divides by its own total (the authors' code);
    ``"target_mean"`` divides by ``reference``, the pair's r_t from :func:`pair_reference`.

    When ``flat`` or ``reference`` is traced the result is a JAX vector of
    :func:`jax_float`, and an all-zero Fisher under ``"sum"`` is not detected.

    Example:
      >>> normalize_fisher(np.array([1.0, 3.0]), "sum").tolist()
      [0.25, 0.75]
      >>> normalize_fisher(np.array([1.0, 3.0]), "target_mean", reference=4.0).tolist()
      [0.25, 0.75]
    """
    reference = check_reference(normalize, reference)
    traced = is_traced(flat, reference)
    if traced:
        flat = as_jax_vector(flat)
    if reference is not None:
        if traced:
            reference = jnp.asarray(reference).astype(flat.dtype)
        return flat / reference
    if normalize == "sum":
        total = flat.sum()
        if traced:
            return flat / total
        if total <= 0:
            raise ValueError("cannot sum-normalise a Fisher whose entries are all zero")
        return flat / total
    return flat


def mean_log_det(
    fisher: Any,
    *,
    sigma: float = DEFAULT_SIGMA,
    normalize: str | None = DEFAULT_NORMALIZE,
    reference: float | None = None,
) -> float:
    """(1/n) log det(diag(F) + σ² I_n), the per-parameter log-determinant, after ``normalize``.

    Args:
      fisher: a diagonal Fisher (pytree or array, any real dtype).
      sigma: σ > 0.
      normalize: a mode of :data:`NORMALIZATIONS` (see the module docstring).
      reference: for ``"target_mean"``, r_t = ``pair_reference(F_tt)`` of the pair this
        Fisher belongs to (the same for F_{t,t} and every F_{b,t}); None for the others.

    Returns:
      A Python float; a JAX scalar when an argument is traced (under ``jit`` or ``vmap``,
      see the module docstring).

    Example:
      >>> round(mean_log_det(np.zeros(3), sigma=1.0, normalize=None), 6)
      0.0
      >>> f_tt = np.array([2.0, 6.0])
      >>> r = pair_reference(f_tt, normalize="target_mean")
      >>> bool(np.isclose(mean_log_det(f_tt, sigma=1.0, normalize="target_mean", reference=r),
      ...                 np.mean(np.log([1.5, 2.5]))))
      True
      >>> stack = jnp.array([[0.0, 0.0], [3.0, 3.0]])   # vmap over a stack of Fishers
      >>> np.round(jax.vmap(lambda f: mean_log_det(f, sigma=1.0, normalize=None))(stack), 4)
      Array([0.    , 1.3863], dtype=float32)
    """
    sigma = check_positive_scalar(sigma, name="sigma")
    flat = normalize_fisher(flatten_fisher(fisher), normalize, reference=reference)
    if is_traced(flat, sigma):
        flat = as_jax_vector(flat)
        return jnp.mean(jnp.log(flat + jnp.square(jnp.asarray(sigma).astype(flat.dtype))))
    return float(np.mean(np.log(flat + float(sigma) ** 2)))


def log_det_pair(
    fisher_source: Any,
    fisher_target: Any,
    *,
    sigma: float = DEFAULT_SIGMA,
    normalize: str | None = DEFAULT_NORMALIZE,
) -> tuple[float, float]:
    """``(L_bt, L_tt)``, the two per-parameter log-dets of eq. 2 under one normalisation.

    The pair's reference (``"target_mean"``: the mean entry of F_{t,t}) is applied to
    both, so d[b, t] = |L_bt − L_tt|.

    Example:
      >>> l_bt, l_tt = log_det_pair(np.full(4, 3.0), np.full(2, 1.0), sigma=1.0,
      ...                           normalize="target_mean")
      >>> round(l_bt, 6), round(l_tt, 6)   # log(3 + 1), log(1 + 1)
      (1.386294, 0.693147)
    """
    sigma = check_positive_scalar(sigma, name="sigma")
    reference = pair_reference(fisher_target, normalize=normalize)
    source = mean_log_det(fisher_source, sigma=sigma, normalize=normalize, reference=reference)
    target = mean_log_det(fisher_target, sigma=sigma, normalize=normalize, reference=reference)
    return source, target


def log_det_distance(
    fisher_source: Any,
    fisher_target: Any,
    *,
    sigma: float = DEFAULT_SIGMA,
    normalize: str | None = DEFAULT_NORMALIZE,
) -> float:
    """The LD-NAS distance d[b, t] (eq. 2; eq. 3 when sizes match).

    Args:
      fisher_source: F_{b,t}, the diagonal Fisher of baseline b's network on the
        target's data (a pytree or flat array with n entries).
      fisher_target: F_{t,t}, the target network's own Fisher (m entries).
      sigma: the constant σ, > 0; absolute with ``normalize=None`` (the paper), a
        fraction of the target's mean Fisher entry with ``"target_mean"``, and of
        1/n with ``"sum"``. ``DEFAULT_SIGMA`` goes with ``DEFAULT_NORMALIZE``.
      normalize: None (the paper's eq. 2), ``"sum"`` (the authors' code: each Fisher
        divided by its total) or ``"target_mean"`` (the default: σ² relative to the mean
        entry of F_{t,t}, applied to both; a departure from the paper's absolute σ). See
        the module docstring for what each keeps and loses. The default was validated
        with the ``"predicted"`` label route; with ``"pad"`` it does poorly (see
        ``DEFAULT_SIGMA``'s comment).

    Returns:
      d ≥ 0 as a Python float when called eagerly on concrete Fishers; a JAX scalar
      when an argument is traced (under ``jax.jit``, ``jax.vmap``), computed at JAX's
      default precision with the value checks skipped (module docstring).

    Example:
      >>> round(log_det_distance(np.full(4, 0.5), np.full(2, 0.5), sigma=0.5, normalize=None), 6)
      0.0
      >>> log_det_distance(np.ones(3), np.zeros(3), sigma=1.0, normalize=None) > 0
      True
      >>> f = np.array([1.0, 4.0])   # one scale for the pair: d is unchanged
      >>> bool(np.isclose(log_det_distance(2 * f, f, sigma=0.1, normalize="target_mean"),
      ...                 log_det_distance(20 * f, 10 * f, sigma=0.1, normalize="target_mean")))
      True

      It composes under ``jit`` (and ``vmap`` over a stack of source Fishers):

      >>> d = jax.jit(log_det_distance)(jnp.array([2.0, 8.0]), jnp.array([1.0, 4.0]))
      >>> bool(np.isclose(d, log_det_distance(2 * f, f))), type(d).__name__
      (True, 'ArrayImpl')
    """
    source, target = log_det_pair(fisher_source, fisher_target, sigma=sigma, normalize=normalize)
    return abs(source - target)


class NamedDistances(NamedTuple):
    """A K×K distance table with its task names: what :func:`distance_matrix` returns for
    Fishers keyed by name. :func:`closest_task` reads the names from it.

    Attributes:
      names: the K task names, in row and column order.
      matrix: d[b, t], rows sources b, columns targets t.
    """

    names: tuple[str, ...]
    matrix: np.ndarray


def distance_matrix(
    fishers: Sequence[Sequence[Any]] | Mapping,
    *,
    sigma: float = DEFAULT_SIGMA,
    normalize: str | None = DEFAULT_NORMALIZE,
) -> np.ndarray | NamedDistances:
    """K×K matrix with ``D[b, t] = log_det_distance(F[b][t], F[t][t])``.

    Args:
      fishers: ``fishers[b][t]`` is F_{b,t}, the Fisher of task b's network on
        task t's data, for b, t in 0..K-1: nested sequences, or nested mappings
        keyed by task name (each inner mapping holds every outer key, in any
        order; rows and columns follow the outer mapping's order).
      sigma, normalize: as in :func:`log_det_distance`; a pair reference is taken
        once per column t from F[t][t].

    Returns:
      Names in, names out. For nested sequences, a float64 array; for nested
      mappings, a :class:`NamedDistances` holding that array and the task names.
      Rows are sources b, columns targets t. The diagonal is 0 and the matrix is
      in general not symmetric. Under ``jit`` (traced Fishers) the matrix is a JAX
      array, computed as the module docstring says.

    Example:
      >>> F = [[np.array([1.0]), np.array([2.0])], [np.array([3.0]), np.array([4.0])]]
      >>> distance_matrix(F, sigma=1.0, normalize=None).round(3).tolist()
      [[0.0, 0.511], [0.693, 0.0]]
      >>> named = distance_matrix({"a": {"a": F[0][0], "b": F[0][1]},
      ...                          "b": {"a": F[1][0], "b": F[1][1]}}, sigma=1.0, normalize=None)
      >>> named.names, closest_task(named, "a")
      (('a', 'b'), 'b')
    """
    sigma = check_positive_scalar(sigma, name="sigma")
    rows = _square_table(fishers)
    k = len(rows)
    references = [pair_reference(rows[t][t], normalize=normalize) for t in range(k)]
    entries = [
        [
            mean_log_det(rows[b][t], sigma=sigma, normalize=normalize, reference=references[t])
            for t in range(k)
        ]
        for b in range(k)
    ]
    stack = jnp.stack if is_traced(entries) else np.array
    matrix = distances_from_log_dets(stack([stack(row) for row in entries]))
    return NamedDistances(tuple(fishers), matrix) if isinstance(fishers, Mapping) else matrix


def _square_table(fishers) -> list[list[Any]]:
    """``fishers[b][t]`` as a list of rows; nested mappings are read by task name, not order."""
    if isinstance(fishers, Mapping):
        names = list(fishers)
        rows = []
        for b in names:
            row = fishers[b]
            if not isinstance(row, Mapping) or set(row) != set(names):
                got = sorted(row) if isinstance(row, Mapping) else type(row).__name__
                raise ValueError(
                    f"fishers[{b!r}] must map every task {names} to a Fisher, got {got}"
                )
            rows.append([row[t] for t in names])
        if not rows:
            raise ValueError("fishers is empty: need a K×K table with K >= 1")
        return rows
    if isinstance(fishers, (str, bytes)) or not isinstance(
        fishers, Sequence | np.ndarray | jax.Array
    ):
        raise TypeError(
            f"fishers must be a K×K table (nested sequences or mappings), got {type(fishers).__name__}"
        )
    rows = []
    for b, row in enumerate(fishers):
        if isinstance(row, Mapping) or not isinstance(row, Sequence | np.ndarray | jax.Array):
            raise TypeError(f"fishers[{b}] must be a sequence of Fishers, got {type(row).__name__}")
        rows.append(list(row))
    k = len(rows)
    if k == 0:
        raise ValueError("fishers is empty: need a K×K table with K >= 1")
    if any(len(r) != k for r in rows):
        raise ValueError(
            f"fishers must be a square K×K table, got row lengths {[len(r) for r in rows]}"
        )
    return rows


def distances_from_log_dets(log_dets: np.ndarray) -> np.ndarray:
    """Eq. 2 from a K×K table of per-parameter log-dets ``L[b, t] = (1/n) log det(F_{b,t} + σ²I)``.

    Lets callers keep one number per pair instead of K² Fisher pytrees. Under a pair
    normalisation (``"target_mean"``) every entry of column t must share the column's
    reference: ``L[b, t] = mean_log_det(F_bt, reference=pair_reference(F_tt))``, with
    the same r_t for the diagonal entry ``L[t, t]``.

    A traced table (under ``jit``) gives a JAX array, its values unchecked.

    Example:
      >>> distances_from_log_dets(np.array([[-2.0, -1.0], [-3.0, -4.0]])).tolist()
      [[0.0, 3.0], [1.0, 0.0]]
    """
    if is_traced(log_dets):
        log_dets = jnp.asarray(log_dets)
        if not _is_real_dtype(log_dets.dtype):
            raise TypeError(f"log_dets must hold real numbers, got dtype {log_dets.dtype}")
        if log_dets.ndim != 2 or log_dets.shape[0] != log_dets.shape[1] or not log_dets.size:
            raise ValueError(
                f"log_dets must be a non-empty square matrix, got shape {log_dets.shape}"
            )
        return jnp.abs(log_dets - jnp.diag(log_dets)[None, :])
    log_dets = _real_matrix(log_dets, "log_dets")
    return np.abs(log_dets - np.diag(log_dets)[None, :])


def closest_task(
    distances: np.ndarray | NamedDistances,
    target: int | str,
    *,
    names: Sequence[str] | None = None,
    candidates: Sequence[int | str] | None = None,
) -> int | str:
    """b* = argmin_b d[b, t] over baselines b ≠ t (Algorithm 1, line 16).

    Args:
      distances: K×K matrix from :func:`distance_matrix` (rows sources), or a
        :class:`NamedDistances`, whose names then serve as ``names``.
      target: column index or name of the target task.
      names: task names for the rows/columns; when given, names are returned.
      candidates: baselines to choose among (default: all tasks but the target).

    Example:
      >>> D = np.array([[0.0, 0.3, 0.9], [0.2, 0.0, 0.4], [0.5, 0.1, 0.0]])
      >>> closest_task(D, 2), closest_task(D, "b", names=["a", "b", "c"])
      (1, 'c')
    """
    if isinstance(distances, NamedDistances):
        if names is not None and tuple(names) != distances.names:
            raise ValueError(f"names {list(names)} differ from the table's {list(distances.names)}")
        distances, names = distances.matrix, distances.names
    d = _real_matrix(distances, "distances")
    # Negative entries usually mean log-dets were passed for distances; rounding (e.g. a
    # cosine distance of -1e-17) is tolerated.
    if np.any(d < -1e-9 * max(1.0, float(np.abs(d).max()))):
        raise ValueError(
            "distances must be >= 0 (got negative entries; log-dets passed for distances?)"
        )
    if names is not None:
        names = _check_names(names, d.shape[0])
    index = _task_index(target, names, d.shape[0])
    pool = (
        [_task_index(c, names, d.shape[0]) for c in candidates]
        if candidates is not None
        else [b for b in range(d.shape[0]) if b != index]
    )
    pool = [b for b in pool if b != index]
    if not pool:
        raise ValueError("no baseline task to choose from")
    best = min(pool, key=lambda b: d[b, index])
    return names[best] if names is not None else best


def _real_matrix(matrix, what: str) -> np.ndarray:
    """A non-empty, square, finite float64 matrix, or a clear error."""
    array = np.asarray(matrix)
    if not _is_real_dtype(array.dtype):
        raise TypeError(f"{what} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty square matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise NonFiniteError(f"{what} contains NaN or inf at {np.argwhere(~np.isfinite(array))[0]}")
    return array


def _check_names(names: Sequence[str], k: int) -> list[str]:
    names = list(names)
    if len(names) != k:
        raise ValueError(f"names has {len(names)} entries for a {k}×{k} matrix")
    if len(set(names)) != k:
        raise ValueError(f"names must be distinct, got {names}")
    return names


def _task_index(task: int | str, names: Sequence[str] | None, k: int) -> int:
    if isinstance(task, str):
        if names is None:
            raise ValueError(
                f"task {task!r} is a name but no names were given: pass names=[...] (the K "
                "task names in row order, e.g. TaskDistances.names) or a column index"
            )
        if task not in names:
            raise ValueError(f"unknown task {task!r}; known: {list(names)}")
        return list(names).index(task)
    if isinstance(task, (bool, np.bool_)) or not isinstance(task, numbers.Integral):
        raise TypeError(f"a task is a column index (int) or a name (str), got {task!r}")
    if not 0 <= int(task) < k:
        raise ValueError(f"task index {task} out of range for {k} tasks")
    return int(task)
