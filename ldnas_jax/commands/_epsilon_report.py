"""The commands' report on ε-networks: which met the paper's assumption accuracy >= 1 − ε.

The distance assumes every task's network is an ε-approximation of its task; a table built on
networks that missed ε says so in its JSON (``epsilon_networks``, ``missed_epsilon``), its
printed report (:func:`epsilon_line`) and its heatmap (a ``*`` after the task's name).
"""


def epsilon_networks(accuracies: list[dict[str, float]], epsilon: float) -> list[dict]:
    """One record per seed and task: test accuracy and whether it met accuracy >= 1 − ε.

    Example:
      >>> epsilon_networks([{"E0": 0.95, "E4": 0.6}], 0.1)[1]
      {'seed': 0, 'task': 'E4', 'test_accuracy': 0.6, 'met_epsilon': False}
    """
    return [
        {"seed": seed, "task": task, "test_accuracy": a, "met_epsilon": bool(a >= 1 - epsilon)}
        for seed, acc in enumerate(accuracies)
        for task, a in acc.items()
    ]


def epsilon_line(missed: list[dict], epsilon: float) -> str:
    """The report's line on the ε-networks: those that missed ε, or that all met it.

    Example:
      >>> epsilon_line([{"seed": 1, "task": "E4", "test_accuracy": 0.612}], 0.1)
      'ε-networks that missed ε = 0.1 (test accuracy < 0.9): E4 seed 1 (0.612)'
    """
    threshold = f"{1 - epsilon:.4g}"
    if not missed:
        return f"every ε-network met ε = {epsilon:g} (test accuracy >= {threshold})"
    listed = ", ".join(f"{m['task']} seed {m['seed']} ({m['test_accuracy']:.3f})" for m in missed)
    return f"ε-networks that missed ε = {epsilon:g} (test accuracy < {threshold}): {listed}"
