"""The space check's result as Markdown tables, the form the results pages quote.

One function per table, each from the command's JSON alone, so that a page's figures can be
regenerated (and tested) from the committed JSON rather than copied by hand.
"""

from collections.abc import Mapping

from ldnas_jax.commands._text import with_interval

__all__ = ["space_check_markdown"]

# Column and row labels of the distances, in the order of SPACE_CHECK_DISTANCES.
_DISTANCE_COLUMNS = {
    "log_det": "d log-det (default)",
    "log_det_eq2": "d eq. 2",
    "frechet": "d Fréchet",
    "task2vec": "d Task2Vec",
}
_DISTANCE_ROWS = {
    "log_det": "`log_det` (default)",
    "log_det_eq2": "`log_det`, the paper's eq. 2",
    "frechet": "`frechet`",
    "task2vec": "`task2vec`",
}
_METRICS = ("test_accuracy", "balanced_accuracy")


def space_check_markdown(result: Mapping) -> dict[str, str]:
    """``{"spaces", "verdicts", "contrasts", "controls"}``: one Markdown table each.

    Args:
      result: the command's ``space_check.json`` (or :func:`~ldnas_jax.experiments.space_check`'s
        result with its ``"config"`` under ``"check"``); ``"controls"`` may be absent.

    Example:
      >>> result = {
      ...     "check": {"spaces": {"A": ["identity"], "full": ["identity", "max_pool_3x3"]}},
      ...     "distances": {"log_det": {"A": 0.5}},
      ...     "summary": {n: {m: {"mean": 0.9, "interval_95": [0.85, 0.95]}
      ...                     for m in _METRICS} for n in ("A", "full")},
      ... }
      >>> print(space_check_markdown(result)["spaces"].splitlines()[-1])
      | full space | `identity`, `max_pool_3x3` | – | 0.900 [0.850, 0.950] | 0.900 [0.850, 0.950] |
    """
    return {
        "spaces": _spaces_table(result),
        "verdicts": _verdicts_table(result.get("verdicts", {})),
        "contrasts": _contrasts_table(result.get("contrasts", {})),
        "controls": _controls_table(result.get("controls", {})),
    }


def _space_label(name: str) -> str:
    if name == "full":
        return "full space"
    if name.startswith("random_"):
        return f"random subset {name.removeprefix('random_')}"
    return name


def _mean_and_interval(stats: Mapping) -> str:
    return with_interval(stats["mean"], stats["interval_95"], ".3f")


def _spaces_table(result: Mapping) -> str:
    distances = result["distances"]
    header = ["space", "operations", *(_DISTANCE_COLUMNS.get(d, d) for d in distances)]
    header += ["accuracy [95 %]", "balanced accuracy [95 %]"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, stats in result["summary"].items():
        operations = ", ".join(f"`{op}`" for op in result["check"]["spaces"][name])
        cells = [_space_label(name), operations]
        cells += [f"{column[name]:.3f}" if name in column else "–" for column in distances.values()]
        cells += [_mean_and_interval(stats[m]) for m in _METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _both(by_metric: Mapping, name: str, cell) -> str:
    """One cell per metric, accuracy then balanced accuracy, joined by a slash."""
    return " / ".join(cell(by_metric[m][name]) for m in _METRICS if name in by_metric.get(m, {}))


def _verdicts_table(verdicts: Mapping) -> str:
    lines = [
        "| distance | picks | its rank | ρ(−d, accuracy) [95 %] | regret [95 %] |",
        "|---|---|---|---|---|",
    ]
    for name, v in verdicts.get("test_accuracy", {}).items():
        rho = _both(
            verdicts, name, lambda x: with_interval(x["rho"], x["rho_interval_95"], "+.2f")
        )
        regret = _both(
            verdicts, name, lambda x: with_interval(x["regret"], x["regret_interval_95"], ".3f")
        )
        rank = f"{v['chosen_rank']} / {v['baselines']}"
        lines.append(
            f"| {_DISTANCE_ROWS.get(name, name)} | {v['chosen']} | {rank} | {rho} | {regret} |"
        )
    return "\n".join(lines)


def _contrasts_table(contrasts: Mapping) -> str:
    lines = [
        "| distance | ρ minus default: accuracy / balanced "
        "| regret minus default: accuracy / balanced |",
        "|---|---|---|",
    ]
    for name in contrasts.get("test_accuracy", {}):
        rho = _both(
            contrasts,
            name,
            lambda c: with_interval(c["rho_minus_reference"], c["rho_interval_95"], "+.2f"),
        )
        regret = _both(
            contrasts,
            name,
            lambda c: with_interval(c["regret_minus_reference"], c["regret_interval_95"], "+.3f"),
        )
        lines.append(f"| {_DISTANCE_ROWS.get(name, name)} | {rho} | {regret} |")
    return "\n".join(lines)


def _controls_table(controls: Mapping) -> str:
    if not controls:
        return ""
    chosen = controls["test_accuracy"]["chosen"]
    lines = [
        f"| {chosen} (the default's pick) minus | accuracy [95 %] | balanced accuracy [95 %] |",
        "|---|---|---|",
    ]
    for name in controls["test_accuracy"]["minus"]:
        cells = [
            with_interval(c["mean"], c["interval_95"], "+.3f")
            for c in (controls[m]["minus"][name] for m in _METRICS if m in controls)
        ]
        lines.append(f"| {_space_label(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
