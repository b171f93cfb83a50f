"""How sure is the closest task: the share of repeated tables in which each baseline wins.

A closest-task decision is an argmin over a handful of numbers, each computed from one
trained ε-network and one sample of the target's examples. Repeating the computation
(another seed of the networks, a bootstrap resample of the examples) and counting how often
each baseline comes out closest says how much the decision can be trusted.
"""

import numpy as np

from ldnas_jax._checks import NonFiniteError


def win_shares(distances) -> np.ndarray:
    """The share of rows in which each column is the smallest: ``(R, B) -> (B,)``.

    Row r holds the distances d[b, t] of the B baselines to one target in one repetition
    (a seed, a bootstrap resample). A tie splits that row's win equally between the tied
    baselines, so the shares always sum to 1.

    Example:
      >>> win_shares([[0.1, 0.3, 0.2], [0.4, 0.2, 0.3], [0.1, 0.5, 0.6], [0.2, 0.2, 0.9]])
      array([0.625, 0.375, 0.   ])
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(
            f"distances must be a non-empty (repetitions, baselines) array, got shape {d.shape}"
        )
    if not np.all(np.isfinite(d)):
        raise NonFiniteError(f"distances contain NaN or inf at {np.argwhere(~np.isfinite(d))[0]}")
    winners = d == d.min(axis=1, keepdims=True)
    return (winners / winners.sum(axis=1, keepdims=True)).mean(axis=0)


def closest_shares(tables) -> np.ndarray:
    """``share[b, t]``: the share of K×K tables in which b is the closest baseline to t.

    ``tables`` is ``(R, K, K)``, rows sources and columns targets, one table per repetition.
    The diagonal (a task against itself) never wins and holds 0; every column sums to 1.

    Example:
      >>> first = np.array([[0.0, 0.1, 0.5], [0.2, 0.0, 0.3], [0.9, 0.4, 0.0]])
      >>> second = np.array([[0.0, 0.1, 0.2], [0.2, 0.0, 0.3], [0.1, 0.4, 0.0]])
      >>> closest_shares([first, second])
      array([[0. , 1. , 0.5],
             [0.5, 0. , 0.5],
             [0.5, 0. , 0. ]])
    """
    stack = np.asarray(tables, dtype=np.float64)
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2] or stack.shape[1] < 2:
        raise ValueError(f"tables must be (repetitions, K, K) with K >= 2, got shape {stack.shape}")
    k = stack.shape[1]
    shares = np.zeros((k, k))
    for t in range(k):
        baselines = [b for b in range(k) if b != t]
        shares[baselines, t] = win_shares(stack[:, baselines, t])
    return shares
