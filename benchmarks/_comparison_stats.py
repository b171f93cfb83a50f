"""Statistics of the search comparison: balanced accuracy, per-method summaries over seeds, and
paired differences (one method minus another on the same seed) with bootstrap intervals."""

from collections.abc import Sequence

import numpy as np

from ldnas_jax.experiments._ranks import bootstrap_interval
from ldnas_jax.experiments._scores import balanced_accuracy

__all__ = [
    "METRICS",
    "balanced_accuracy",
    "comparison_table",
    "method_summary",
    "paired_differences",
]

METRICS = ("test_accuracy", "balanced_accuracy", "num_params", "search_seconds")


def method_summary(rows: Sequence[dict], metrics: Sequence[str] = METRICS) -> dict:
    """``{method: {metric: {"mean", "std", "n"}}}`` over the seeds; std with ddof=1 (0 for one seed).

    Example:
      >>> rows = [{"method": "a", "x": 1.0}, {"method": "a", "x": 3.0}]
      >>> method_summary(rows, ["x"])
      {'a': {'x': {'mean': 2.0, 'std': 1.4142135623730951, 'n': 2}}}
    """
    summary = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        summary[method] = {}
        for metric in metrics:
            values = np.array([row[metric] for row in rows if row["method"] == method], float)
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            summary[method][metric] = {"mean": float(values.mean()), "std": std, "n": len(values)}
    return summary


def paired_differences(
    rows: Sequence[dict], reference: str = "ld-nas", metrics: Sequence[str] = METRICS
) -> dict:
    """``reference`` minus every other method, seed by seed, with a 95% bootstrap interval.

    Only seeds where both methods have a row are paired. The seeds are the units that the
    bootstrap resamples (:func:`~ldnas_jax.experiments._ranks.bootstrap_interval`, seed 0).

    Returns:
      ``{other: {metric: {"seeds", "differences", "mean", "interval_95"}}}``; empty when
      ``reference`` has no row.

    Example:
      >>> rows = [{"seed": 0, "method": "a", "x": 0.75}, {"seed": 0, "method": "b", "x": 0.5}]
      >>> paired_differences(rows, "a", ["x"])["b"]["x"]["differences"]
      [0.25]
    """
    by_seed = {(row["seed"], row["method"]): row for row in rows}
    ours = {seed: row for (seed, method), row in by_seed.items() if method == reference}
    paired = {}
    for other in dict.fromkeys(row["method"] for row in rows):
        seeds = sorted(s for s in ours if (s, other) in by_seed)
        if other == reference or not seeds:
            continue
        paired[other] = {}
        for metric in metrics:
            diffs = [ours[s][metric] - by_seed[(s, other)][metric] for s in seeds]
            paired[other][metric] = {
                "seeds": seeds,
                "differences": diffs,
                "mean": float(np.mean(diffs)),
                "interval_95": list(bootstrap_interval(diffs, seed=0)),
            }
    return paired


def comparison_table(summary: dict, paired: dict, reference: str = "ld-nas") -> str:
    """The printed table: mean ± std per method, then the paired differences and intervals."""
    header = (
        f"{'method':16s} {'n':>3s} {'accuracy':>15s} {'balanced acc.':>15s} "
        f"{'params':>17s} {'search s':>13s}"
    )
    lines = [header]
    for method, stats in summary.items():
        acc, bal = stats["test_accuracy"], stats["balanced_accuracy"]
        params, secs = stats["num_params"], stats["search_seconds"]
        lines.append(
            f"{method:16s} {acc['n']:3d} {acc['mean']:.3f} ± {acc['std']:.3f}   "
            f"{bal['mean']:.3f} ± {bal['std']:.3f}   "
            f"{params['mean']:7.0f} ± {params['std']:6.0f}  {secs['mean']:5.0f} ± {secs['std']:4.0f}"
        )
    lines.append(f"\n{reference} minus other, paired by seed: mean [95% bootstrap interval]")
    for other, metrics in paired.items():
        cells = [
            f"{metric} {d['mean']:+.3f} [{d['interval_95'][0]:+.3f}, {d['interval_95'][1]:+.3f}]"
            for metric, d in metrics.items()
            if metric in ("test_accuracy", "balanced_accuracy")
        ]
        lines.append(f"  vs {other:16s} " + "   ".join(cells))
    return "\n".join(lines)
