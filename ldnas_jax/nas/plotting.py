"""Pictures of cells and of α trajectories, drawn with matplotlib.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly,
never through pyplot, so plotting works headless and leaves the user's global
backend alone.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from ldnas_jax.nas.genotype import Genotype

__all__ = ["plot_alpha_history", "plot_cell"]

_NODE_RADIUS = 0.18
_ARC_RAD = 0.35  # curvature of edges that skip nodes


def _new_axes(figsize) -> Axes:
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure.add_subplot()


def _save(ax: Axes, path) -> None:
    if path is not None:
        ax.figure.savefig(os.fspath(path), dpi=120, bbox_inches="tight")


def plot_cell(
    genotype: Genotype,
    path: str | os.PathLike | None = None,
    ax: Axes | None = None,
    cell: str = "normal",
) -> Axes:
    """Draws one cell of a genotype as a DAG: nodes as circles, edges labelled by op.

    Nodes sit on a line from the input (0) to the output (last). Edges between
    neighbours are straight; longer ones arc, alternately above and below, higher
    the more nodes they skip, so their labels do not collide.

    Args:
      genotype: the architecture.
      path: if given, the figure is saved there (e.g. ``"cell.png"``).
      ax: axes to draw into; by default a new figure is made.
      cell: ``"normal"`` or ``"reduce"``.

    Returns:
      The axes drawn into.

    Example:
      >>> g = Genotype(("identity", "sep_conv_3x3", "max_pool_3x3"), num_nodes=3)
      >>> ax = plot_cell(g, path=None)
    """
    if not isinstance(genotype, Genotype):
        raise TypeError(f"expected a Genotype, got {type(genotype).__name__}")
    edges = genotype.edges(cell)
    n = genotype.num_nodes
    if ax is None:
        ax = _new_axes((2.4 * n, 0.9 * n + 1.0))
    circles = [
        Circle((node, 0), _NODE_RADIUS, fc="#cfe2f3", ec="black", zorder=3) for node in range(n)
    ]
    for i, j, op in edges:
        span = j - i
        # arc3 puts the curve's midpoint at rad * span / 2 off the chord.
        rad = 0.0 if span == 1 else _ARC_RAD * (1 if span % 2 == 0 else -1)
        ax.add_patch(
            FancyArrowPatch(
                (i, 0),
                (j, 0),
                connectionstyle=f"arc3,rad={rad}",
                arrowstyle="-|>",
                mutation_scale=12,
                patchA=circles[i],
                patchB=circles[j],
                color="0.3",
                alpha=0.35 if op == "zero" else 1.0,
            )
        )
        height = 0.08 if span == 1 else -rad * span / 2
        ax.text(
            (i + j) / 2,
            height,
            op,
            ha="center",
            va="center",
            fontsize=7,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
        )
    for node, circle in enumerate(circles):
        ax.add_patch(circle)
        ax.text(node, 0, str(node), ha="center", va="center", zorder=4)
    extent = _ARC_RAD * (n - 1) / 2 + 0.3
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{cell} cell (node 0: input, node {n - 1}: output)", fontsize=9)
    _save(ax, path)
    return ax


def plot_alpha_history(
    alpha_history,
    labels: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Plots softmax(α) of each candidate against the FUSE round.

    Args:
      alpha_history: (rounds, C) α after each round (``FuseResult.alpha_history``).
      labels: one legend label per candidate; default ``candidate i``.
      path: if given, the figure is saved there.
      ax: axes to draw into; by default a new figure is made.

    Returns:
      The axes drawn into.

    Example:
      >>> ax = plot_alpha_history(np.zeros((3, 2)))
    """
    alpha_history = np.asarray(alpha_history, dtype=np.float64)
    if alpha_history.ndim != 2:
        raise ValueError(f"alpha_history must be (rounds, C), got shape {alpha_history.shape}")
    rounds, num_candidates = alpha_history.shape
    labels = labels or [f"candidate {c}" for c in range(num_candidates)]
    if len(labels) != num_candidates:
        raise ValueError(f"got {len(labels)} labels for {num_candidates} candidates")
    shifted = np.exp(alpha_history - alpha_history.max(axis=1, keepdims=True))
    weights = shifted / shifted.sum(axis=1, keepdims=True)
    if ax is None:
        ax = _new_axes((5, 3.2))
    for c in range(num_candidates):
        ax.plot(np.arange(1, rounds + 1), weights[:, c], marker="o", label=labels[c])
    ax.set_xlabel("FUSE round")
    ax.set_ylabel("softmax(α)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    _save(ax, path)
    return ax
