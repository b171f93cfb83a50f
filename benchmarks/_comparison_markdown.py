"""The search comparison's result as Markdown tables, the form the results page quotes.

Both tables come from the benchmark's ``comparison.json`` alone, so that the page's figures can
be regenerated (and tested) from the committed JSON rather than copied by hand.
"""

from collections.abc import Mapping

from ldnas_jax.commands._text import with_interval

__all__ = ["comparison_markdown"]

_LABELS = {
    "random_search": "random search",
    "full_space_fuse": "full-space FUSE",
    "small_vgg": "`SmallVGG`",
    "resnet18": "ResNet-18",
}
_METRICS = ("test_accuracy", "balanced_accuracy")


def comparison_markdown(result: Mapping) -> dict[str, str]:
    """``{"methods", "paired"}``: per method mean ± std over its seeds, then LD-NAS minus each
    other method paired by seed, with bootstrap 95 % intervals and the seeds LD-NAS was ahead,
    level and behind on (test accuracy).

    Example:
      >>> stats = lambda m: {"mean": m, "std": 0.0, "n": 2}
      >>> result = {
      ...     "closest_task": "E1",
      ...     "summary": {
      ...         "ld-nas": {"test_accuracy": stats(0.9), "balanced_accuracy": stats(0.8),
      ...                    "num_params": stats(1234.0)},
      ...     },
      ...     "paired_differences": {"random_search": {
      ...         m: {"seeds": [0, 1], "differences": [0.5, 0.0], "mean": 0.25,
      ...             "interval_95": [0.0, 0.5]} for m in _METRICS}},
      ... }
      >>> tables = comparison_markdown(result)
      >>> print(tables["methods"].splitlines()[-1])
      | LD-NAS (closest: E1) | 2 | 0.900 ± 0.000 | 0.800 ± 0.000 | 1,234 |
      >>> print(tables["paired"].splitlines()[-1])
      | random search | 2 | +0.250 [+0.000, +0.500] | +0.250 [+0.000, +0.500] | 1 / 1 / 0 |
    """
    return {"methods": _methods_table(result), "paired": _paired_table(result)}


def _label(method: str, closest: str | None) -> str:
    if method == "ld-nas":
        return f"LD-NAS (closest: {closest})" if closest else "LD-NAS"
    return _LABELS.get(method, method)


def _methods_table(result: Mapping) -> str:
    lines = [
        "| method | seeds | accuracy (mean ± std) | balanced accuracy | parameters (mean) |",
        "|---|---|---|---|---|",
    ]
    for method, stats in result["summary"].items():
        cells = [_label(method, result.get("closest_task")), str(stats["test_accuracy"]["n"])]
        cells += [f"{stats[m]['mean']:.3f} ± {stats[m]['std']:.3f}" for m in _METRICS]
        cells.append(f"{stats['num_params']['mean']:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ahead_level_behind(differences) -> str:
    ahead = sum(d > 0 for d in differences)
    behind = sum(d < 0 for d in differences)
    return f"{ahead} / {len(differences) - ahead - behind} / {behind}"


def _paired_table(result: Mapping) -> str:
    lines = [
        "| LD-NAS minus | seeds | accuracy [95 %] | balanced accuracy [95 %] "
        "| LD-NAS ahead / level / behind (accuracy) |",
        "|---|---|---|---|---|",
    ]
    for other, by_metric in result["paired_differences"].items():
        accuracy = by_metric["test_accuracy"]
        cells = [_label(other, None), str(len(accuracy["seeds"]))]
        cells += [
            with_interval(by_metric[m]["mean"], by_metric[m]["interval_95"], "+.3f")
            for m in _METRICS
        ]
        cells.append(_ahead_level_behind(accuracy["differences"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
