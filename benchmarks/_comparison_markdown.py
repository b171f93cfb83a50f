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
_SEEDED = "LD-NAS, ε-networks per seed"
# A method as the other side of a difference: its name alone.
_PAIRED_LABELS = {**_LABELS, "ld-nas": "LD-NAS", "ld-nas_seeded_zoo": _SEEDED}
_METRICS = ("test_accuracy", "balanced_accuracy")


def comparison_markdown(result: Mapping) -> dict[str, str]:
    """``{"methods", "paired", "paired_seeded"}``: per method mean ± std over its seeds, then
    LD-NAS minus each other method paired by seed, with bootstrap 95 % intervals and the seeds
    LD-NAS was ahead, level and behind on (test accuracy); the same for LD-NAS with the
    ε-networks drawn per seed (``""`` without its rows).

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
    seeded = result.get("seeded_zoo") or {}
    return {
        "methods": _methods_table(result),
        "paired": _paired_table(result["paired_differences"], "LD-NAS"),
        "paired_seeded": _paired_table(seeded["paired_differences"], _SEEDED) if seeded else "",
    }


def _label(method: str, result: Mapping) -> str:
    if method == "ld-nas":
        closest = result.get("closest_task")
        return f"LD-NAS (closest: {closest})" if closest else "LD-NAS"
    if method == "ld-nas_seeded_zoo":
        picks = (result.get("seeded_zoo") or {}).get("closest_task", [])
        counts = ", ".join(f"{t} ×{picks.count(t)}" for t in sorted(set(picks)))
        return f"{_SEEDED} (closest: {counts})" if counts else _SEEDED
    return _LABELS.get(method, method)


def _methods_table(result: Mapping) -> str:
    lines = [
        "| method | seeds | accuracy (mean ± std) | balanced accuracy | parameters (mean) |",
        "|---|---|---|---|---|",
    ]
    for method, stats in result["summary"].items():
        cells = [_label(method, result), str(stats["test_accuracy"]["n"])]
        cells += [f"{stats[m]['mean']:.3f} ± {stats[m]['std']:.3f}" for m in _METRICS]
        cells.append(f"{stats['num_params']['mean']:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ahead_level_behind(differences) -> str:
    ahead = sum(d > 0 for d in differences)
    behind = sum(d < 0 for d in differences)
    return f"{ahead} / {len(differences) - ahead - behind} / {behind}"


def _paired_table(paired: Mapping, reference: str) -> str:
    lines = [
        f"| {reference} minus | seeds | accuracy [95 %] | balanced accuracy [95 %] "
        "| ahead / level / behind (accuracy) |",
        "|---|---|---|---|---|",
    ]
    for other, by_metric in paired.items():
        accuracy = by_metric["test_accuracy"]
        cells = [_PAIRED_LABELS.get(other, other), str(len(accuracy["seeds"]))]
        cells += [
            with_interval(by_metric[m]["mean"], by_metric[m]["interval_95"], "+.3f")
            for m in _METRICS
        ]
        cells.append(_ahead_level_behind(accuracy["differences"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
