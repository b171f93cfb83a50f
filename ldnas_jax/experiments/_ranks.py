"""Statistics for the transfer check: average ranks, Spearman's ρ, a ranking by accuracy, and a
bootstrap interval for the mean over independent units."""

from collections.abc import Mapping, Sequence

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values`` in ascending order; tied values share their mean rank.

    Example:
      >>> average_ranks([10.0, 30.0, 20.0, 30.0]).tolist()
      [1.0, 3.5, 2.0, 3.5]
    """
    x = np.asarray(values, np.float64)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values to rank contain NaN or inf")
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of the last member of each group of equal values
    return (last - (counts - 1) / 2.0)[inverse.ravel()]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks.

    Returns NaN when either side is constant (no ranking to compare), as
    ``scipy.stats.spearmanr`` does.

    Example:
      >>> spearman([1, 2, 3, 4], [10, 20, 40, 30])
      0.8
      >>> spearman([1, 2, 3], [3, 2, 1])
      -1.0
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"spearman needs two 1-D sequences of one length, got {a.shape} and {b.shape}"
        )
    if a.size < 2:
        raise ValueError(f"spearman needs at least 2 pairs to rank, got {a.size}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    if norm == 0:
        return float("nan")
    return float(np.clip(np.sum(ra * rb) / norm, -1.0, 1.0))


def transfer_ranking(accuracy: Mapping[str, float]) -> tuple[str, ...]:
    """Source tasks from best to worst transfer accuracy; ties keep their given order.

    Example:
      >>> transfer_ranking({"E1": 0.7, "E4": 0.9, "E5": 0.7})
      ('E4', 'E1', 'E5')
    """
    names = list(accuracy)
    return tuple(sorted(names, key=lambda n: -accuracy[n]))  # sorted is stable


def bootstrap_interval(
    values: Sequence[float], *, seed: int = 0, resamples: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``.

    Each resample draws ``len(values)`` values with replacement (one row of
    ``numpy.random.default_rng(seed).integers(0, n, (resamples, n))``); the interval is the
    ``(1 − level) / 2`` and ``(1 + level) / 2`` quantiles (linear interpolation) of the
    resampled means. The values are the units of the resampling, e.g. one Spearman ρ per
    (target, seed); the interval says how far the mean moves when other units of the same
    kind had been drawn, not how uncertain each unit is.

    Args:
      values: finite numbers, at least one.
      seed: seed of the resampling, so the interval repeats exactly.
      resamples: number of resamples, >= 1.
      level: coverage in (0, 1).

    Returns:
      ``(low, high)``.

    Raises:
      ValueError: empty, non-finite or non-1-D values; a bad ``resamples`` or ``level``.

    Example:
      Two units 0 and 1: a resampled mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the
      95% interval is the whole range:

      >>> bootstrap_interval([0.0, 1.0])
      (0.0, 1.0)
      >>> bootstrap_interval([0.3, 0.3, 0.3])
      (0.3, 0.3)
    """
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values to resample contain NaN or inf")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be an int >= 1, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    rows = np.random.default_rng(seed).integers(0, x.size, size=(int(resamples), x.size))
    means = x[rows].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    # Every resampled mean lies within [min, max]; clip the last-ulp drift of the averaging.
    return float(np.clip(low, x.min(), x.max())), float(np.clip(high, x.min(), x.max()))
