"""Terminal text of the commands: tables for their reports, defaults for their help."""

from typing import Any

import numpy as np


def format_table(matrix: np.ndarray, names, *, title: str = "") -> str:
    """A K×K table as text, rows source b, columns target t.

    Example:
      >>> print(format_table(np.array([[0.0, 0.5], [0.25, 0.0]]), ["A", "B"]))
      source\\target         A         B
                   A         0       0.5
                   B      0.25         0
    """
    head = "source\\target " + " ".join(f"{n:>9}" for n in names)
    rows = [
        f"{b:>14} " + " ".join(f"{matrix[i, j]:9.4g}" for j in range(len(names)))
        for i, b in enumerate(names)
    ]
    return "\n".join(([title] if title else []) + [head, *rows])


def with_interval(value: float, interval, spec: str) -> str:
    """``value [low, high]`` in the format ``spec`` (e.g. ``".3f"``, ``"+.2f"``); ``[n/a]``
    where there is no interval.

    Example:
      >>> with_interval(0.25, [0.125, 0.5], "+.2f"), with_interval(1.0, None, ".1f")
      ('+0.25 [+0.12, +0.50]', '1.0 [n/a]')
    """
    if interval is None:
        return f"{value:{spec}} [n/a]"
    low, high = interval
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def show(value: Any) -> str:
    """A default as a user types it: lists space-separated, ``%`` escaped for argparse.

    Example:
      >>> show(["E0", "E1"]), show(0.1)
      ('E0 E1', '0.1')
    """
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text.replace("%", "%%")
