"""Pictures of results: distance heatmaps, α trajectories, cells, accuracy against parameters.

The one plotting module of the package. Every function writes a PNG when
``path`` is given and returns what it drew, so notebooks can show it inline.
Matplotlib is imported on the first call, never by importing the package.
The figure-level plots go through pyplot (Agg when no display is configured);
:func:`plot_cell`, :func:`plot_cells` and :func:`plot_alpha_history` draw on a bare
``Figure`` (or the ``ax`` given) and leave pyplot's state alone.
"""

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

_NODE_RADIUS = 0.18
_ARC_RAD = 0.35  # curvature of cell edges that skip nodes
_BOX_LABEL = "closest source b of each target t (column)"

# Legend names of the built-in operations; others (registered by a user) keep their name.
OPERATION_ABBREVIATIONS = {
    "zero": "0",
    "identity": "id",
    "sep_conv_3x3": "sep3",
    "sep_conv_5x5": "sep5",
    "dil_conv_3x3": "dil3",
    "dil_conv_5x5": "dil5",
    "conv_7x1_1x7": "c7x1",
    "max_pool_3x3": "max3",
    "avg_pool_3x3": "avg3",
}


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in (
        "agg",
        "module://matplotlib_inline.backend_inline",
    ):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _new_axes(figsize):
    """Axes on a figure outside pyplot, drawn by the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure.add_subplot()


def _softmax_rows(alpha_history) -> np.ndarray:
    alpha = np.asarray(alpha_history, dtype=np.float64)
    if alpha.ndim != 2:
        raise ValueError(f"alpha_history must be (rounds, C), got shape {alpha.shape}")
    weights = np.exp(alpha - alpha.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def _draw_alpha(ax, alpha_history, labels, marker: str) -> None:
    """softmax(α) of each candidate against the round, on ``ax``."""
    weights = _softmax_rows(alpha_history)
    rounds, num_candidates = weights.shape
    labels = (
        list(labels) if labels is not None else [f"candidate {c}" for c in range(num_candidates)]
    )
    if len(labels) != num_candidates:
        raise ValueError(f"got {len(labels)} labels for {num_candidates} candidates")
    for c in range(num_candidates):
        ax.plot(np.arange(1, rounds + 1), weights[:, c], marker=marker, label=labels[c])
    ax.set_ylabel("softmax(α)")
    _integer_ticks(ax.xaxis, 1, rounds)  # rounds are whole: no 1.5 between them


def _integer_ticks(axis, first: int, last: int) -> None:
    """Ticks of ``axis`` at integers only, at most 10 of them, from ``first`` to ``last``."""
    from matplotlib.ticker import FixedLocator

    step = max(1, int(np.ceil((last - first + 1) / 10)))
    axis.set_major_locator(FixedLocator(np.arange(first, last + 1, step)))


def plot_distance_heatmap(
    mean: np.ndarray,
    names: Sequence[str],
    *,
    std: np.ndarray | None = None,
    path: str | None = None,
    title: str = "d[b, t]: rows source b, columns target t",
    shares: np.ndarray | Mapping[str, np.ndarray] | None = None,
    missed_epsilon: Iterable[str] = (),
):
    """Heatmap of a K×K distance table, annotated with mean (± std), the closest source boxed.

    A legend under the table says what the red boxes mark: in each column t, the source
    b ≠ t of the smallest distance.

    Args:
      mean: d[b, t], rows sources b, columns targets t.
      names: the K task names.
      std: optional spread of each entry (e.g. over seeds), written under the mean.
      path: if given, the PNG is written there.
      title: the first line of the title.
      shares: how sure each boxed closest source is: a (K, K) array of shares in [0, 1]
        (e.g. :func:`ldnas_jax.distances.closest_shares`), or ``{label: array}`` for several
        (e.g. ``{"seeds": ..., "resamples": ...}``). The boxed cell of column t shows
        ``shares[b*, t]`` as a percentage, several joined by "|"; the title says of what.
      missed_epsilon: names of tasks whose ε-network missed ε (accuracy < 1 − ε); their
        tick labels get a trailing "*" and the title a note.

    Example:
      >>> fig = plot_distance_heatmap(np.array([[0.0, 1.0], [2.0, 0.0]]), ["a", "b"])
      >>> fig = plot_distance_heatmap(np.array([[0.0, 1.0], [2.0, 0.0]]), ["a", "b"],
      ...                             shares=np.array([[0.0, 1.0], [1.0, 0.0]]),
      ...                             missed_epsilon=["b"])
      >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
      ['a', 'b*']
      >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
      ['closest source b of each target t (column)']
    """
    mean = np.asarray(mean, float)
    names = list(names)
    k = len(names)
    if mean.shape != (k, k):
        raise ValueError(f"mean must be ({k}, {k}) for {k} names, got shape {mean.shape}")
    share_tables = _share_tables(shares, k)
    missed = _missed_names(missed_epsilon, names)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.5, 1.0 * k + 1.8))
    image = ax.imshow(mean, cmap="viridis_r")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    labels = [f"{n}*" if n in missed else n for n in names]
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("target task t")
    ax.set_ylabel("source task b")
    notes = []
    if share_tables:
        notes.append(f"box: closest b, % of {' | '.join(share_tables)} where it is closest")
    if missed:
        notes.append("* ε-network missed ε")
    ax.set_title("\n".join([title, *notes]), fontsize=10 if not notes else 9)
    scale = np.nanmax(mean) if np.nanmax(mean) > 0 else 1.0
    digits = max(2, int(np.ceil(-np.log10(scale))) + 2) if scale < 1 else 2
    closest = [_closest_row(mean, t) for t in range(k)]
    for b in range(k):
        for t in range(k):
            text = f"{mean[b, t]:.{digits}f}"
            if std is not None:
                text += f"\n±{std[b, t]:.{digits}f}"
            if share_tables and b == closest[t]:
                text += "\n" + "|".join(f"{100 * s[b, t]:.0f}%" for s in share_tables.values())
            ax.text(
                t,
                b,
                text,
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if mean[b, t] > 0.5 * scale else "black",
            )
    for t, b in enumerate(closest):  # box the closest source in each column
        box = plt.Rectangle((t - 0.5, b - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5)
        ax.add_patch(box)
    key = plt.Rectangle((0, 0), 1, 1, fill=False, edgecolor="red", lw=1.5, label=_BOX_LABEL)
    ax.legend(
        handles=[key],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        fontsize=7,
        frameon=False,
        handlelength=1.2,
    )
    fig.tight_layout()
    _save(fig, path)
    return fig


def _closest_row(mean: np.ndarray, t: int) -> int:
    """The row b ≠ t of column t's smallest entry (the first on ties)."""
    return int(np.argmin(np.where(np.arange(len(mean)) == t, np.inf, mean[:, t])))


def _share_tables(shares, k: int) -> dict[str, np.ndarray]:
    """``shares`` as ``{label: (K, K) array}``, checked: one table gets the label "runs"."""
    if shares is None:
        return {}
    tables = dict(shares) if isinstance(shares, Mapping) else {"runs": shares}
    checked = {}
    for label, table in tables.items():
        table = np.asarray(table, dtype=float)
        if table.shape != (k, k):
            raise ValueError(f"shares[{label!r}] must be ({k}, {k}), got shape {table.shape}")
        if not np.all((table >= 0) & (table <= 1)):
            raise ValueError(f"shares[{label!r}] must hold shares in [0, 1]")
        checked[str(label)] = table
    return checked


def _missed_names(missed_epsilon, names: list[str]) -> set[str]:
    if isinstance(missed_epsilon, str):
        raise TypeError(
            f"missed_epsilon must be a collection of task names, got {missed_epsilon!r}"
        )
    missed = set(missed_epsilon)
    unknown = sorted(missed - set(names))
    if unknown:
        raise ValueError(f"missed_epsilon names unknown tasks {unknown}; the tasks are {names}")
    return missed


def plot_alpha_curves(
    alpha_history: np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    genotypes: Sequence | None = None,
    winner: int | None = None,
    path: str | None = None,
    title: str = "FUSE: softmax(α) per round",
):
    """softmax(α) of each candidate over FUSE rounds; ``alpha_history`` is (rounds, C) raw α.

    Args:
      alpha_history: (rounds, C) α after each round.
      labels: one legend label per candidate (default ``candidate i``), or
      genotypes: the C candidates, named in the legend by :func:`short_genotype`; the
        legend's title gives the edge order and a caption the abbreviations used.
      winner: index of the winning candidate, marked "(winner)" in the legend.
      path: if given, the PNG is written there.
      title: the figure's title.

    Example:
      >>> fig = plot_alpha_curves(np.zeros((3, 2)))
      >>> fig.axes[0].get_xticks().tolist()  # whole rounds only
      [1, 2, 3]
    """
    if genotypes is not None:
        if labels is not None:
            raise ValueError("give labels or genotypes, not both")
        genotypes = list(genotypes)
        labels = [short_genotype(g) for g in genotypes]
    if winner is not None:
        count = len(labels) if labels is not None else np.shape(alpha_history)[-1]
        if not 0 <= winner < count:
            raise ValueError(f"winner must index one of the {count} candidates, got {winner}")
        labels = list(labels) if labels is not None else [f"candidate {c}" for c in range(count)]
        labels[winner] += " (winner)"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5 if genotypes else 6, 3.5))
    _draw_alpha(ax, alpha_history, labels, marker=".")
    ax.set_xlabel("round")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    if genotypes:
        # Genotype labels are long: under the axes, one line each; the saved PNG grows to fit.
        ax.legend(
            fontsize=7,
            title=f"{_edge_order_title(genotypes)}\n{_abbreviation_caption(genotypes)}",
            title_fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            frameon=False,
        )
    else:
        ax.legend(fontsize=7, loc="best")
    _save(fig, path, tight=bool(genotypes))
    return fig


def short_genotype(genotype) -> str:
    """A genotype in one short line: each cell's edge operations, abbreviated.

    The operations follow the genotype's edge order (0→1, 0→2, 1→2, 0→3, ...);
    :data:`OPERATION_ABBREVIATIONS` gives the short names. When the reduction
    cell differs from the normal one it follows after "|".

    Example:
      >>> from types import SimpleNamespace as G
      >>> short_genotype(G(normal=("identity", "sep_conv_3x3", "zero"),
      ...                  reduce=("identity", "sep_conv_3x3", "zero")))
      'id sep3 0'
      >>> short_genotype(G(normal=("identity",), reduce=("max_pool_3x3",)))
      'id | max3'
    """
    if not (hasattr(genotype, "normal") and hasattr(genotype, "reduce")):
        raise TypeError(f"expected a Genotype, got {type(genotype).__name__}")
    cells = (
        [genotype.normal]
        if genotype.reduce == genotype.normal
        else [
            genotype.normal,
            genotype.reduce,
        ]
    )
    return " | ".join(" ".join(OPERATION_ABBREVIATIONS.get(op, op) for op in ops) for ops in cells)


def _edge_order_title(genotypes) -> str:
    n = genotypes[0].num_nodes
    edges = " ".join(f"{i}→{j}" for j in range(1, n) for i in range(j))
    shared = all(g.reduce == g.normal for g in genotypes)
    cells = "one cell, normal = reduction" if shared else "normal cell | reduction cell"
    return f"candidate: operations of edges {edges} ({cells})"


def _abbreviation_caption(genotypes) -> str:
    used = dict.fromkeys(op for g in genotypes for op in (*g.normal, *g.reduce))
    pairs = [
        f"{OPERATION_ABBREVIATIONS[op]} = {op}" for op in used if op in OPERATION_ABBREVIATIONS
    ]
    return ", ".join(pairs)


def plot_accuracy_vs_params(
    results: dict[str, Sequence[tuple[float, int]]],
    *,
    path: str | None = None,
    title: str = "test accuracy against parameters",
):
    """Scatter of (num_params, accuracy) per method, e.g. LD-NAS, random search, full-space FUSE.

    The parameter axis is logarithmic where the counts span ten times or more, else
    linear around the points. Up to eight points are labelled with their method,
    accuracy and parameter count.

    Example:
      >>> fig = plot_accuracy_vs_params({"ld-nas": [(0.9, 1000)]})
      >>> fig.axes[0].get_xscale(), [t.get_text() for t in fig.axes[0].texts]
      ('linear', ['ld-nas\\n0.900, 1,000 params'])
    """
    results = {method: list(points) for method, points in results.items()}
    everything = [p for points in results.values() for p in points]
    if not everything:
        raise ValueError("results holds no (accuracy, num_params) points")
    params = np.array([p for _, p in everything], dtype=float)
    accuracy = np.array([a for a, _ in everything], dtype=float)
    if np.any(params <= 0):
        raise ValueError(f"parameter counts must be positive, got {params.min():g}")
    fig, ax = _pyplot().subplots(figsize=(5.5, 3.8))
    for method, points in results.items():
        ax.scatter([p for _, p in points], [a for a, _ in points], label=method, s=30)
        if len(everything) <= 8:
            for a, p in points:
                ax.annotate(
                    f"{method}\n{a:.3f}, {p:,} params",
                    (p, a),
                    xytext=(6, 4),
                    textcoords="offset points",
                    fontsize=7,
                )
    if params.max() >= 10 * params.min():
        ax.set_xscale("log")
        ax.set_xlim(params.min() / 1.6, params.max() * 4)  # room for the labels
    else:  # one decade or less: a log axis would show no tick near the points
        pad = max(0.15 * (params.max() - params.min()), 0.1 * params.max())
        ax.set_xlim(params.min() - pad, params.max() + 2 * pad)  # room for the labels
    pad = max(0.15 * (accuracy.max() - accuracy.min()), 0.05)
    ax.set_ylim(max(0.0, accuracy.min() - pad), min(1.02, accuracy.max() + pad))
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_alpha_history(alpha_history, labels: Sequence[str] | None = None, path=None, ax=None):
    """softmax(α) of each candidate against the FUSE round, drawn on ``ax`` (or new axes).

    Args:
      alpha_history: (rounds, C) α after each round (``FuseResult.alpha_history``).
      labels: one legend label per candidate; default ``candidate i``.
      path: if given, the figure is saved there.
      ax: axes to draw into; by default a new figure outside pyplot is made.

    Returns:
      The axes drawn into.

    Example:
      >>> ax = plot_alpha_history(np.zeros((3, 2)))
    """
    _softmax_rows(alpha_history)  # checks the shape before any figure exists
    if ax is None:
        ax = _new_axes((5, 3.2))
    _draw_alpha(ax, alpha_history, labels, marker="o")
    ax.set_xlabel("FUSE round")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    _save_axes(ax, path)
    return ax


def plot_cell(genotype, path=None, ax=None, cell: str = "normal", title: str | None = None):
    """Draws one cell of a genotype as a DAG: nodes as circles, edges labelled by op.

    Nodes sit on a line from the input (0) to the output (last). Edges between
    neighbours are straight; longer ones arc, alternately above and below, higher
    the more nodes they skip, so their labels do not collide.

    Args:
      genotype: the architecture (a :class:`ldnas_jax.nas.Genotype`).
      path: if given, the figure is saved there (e.g. ``"cell.png"``).
      ax: axes to draw into; by default a new figure outside pyplot is made.
      cell: ``"normal"`` or ``"reduce"``.
      title: the axes' title; default names the cell and its input and output nodes.

    Returns:
      The axes drawn into.

    Example:
      >>> from ldnas_jax.nas import Genotype
      >>> g = Genotype(("identity", "sep_conv_3x3", "max_pool_3x3"), num_nodes=3)
      >>> ax = plot_cell(g, path=None)
    """
    if not (hasattr(genotype, "edges") and hasattr(genotype, "num_nodes")):
        raise TypeError(f"expected a Genotype, got {type(genotype).__name__}")
    from matplotlib.patches import Circle, FancyArrowPatch

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
    if title is None:
        title = f"{cell} cell (node 0: input, node {n - 1}: output)"
    ax.set_title(title, fontsize=9)
    _save_axes(ax, path)
    return ax


def plot_cells(genotype, path=None):
    """Both cells of a genotype, the normal one above the reduction one.

    A genotype whose reduction cell is its normal cell is drawn once, titled
    "one shared cell".

    Args:
      genotype: the architecture (a :class:`ldnas_jax.nas.Genotype`).
      path: if given, the figure is saved there (e.g. ``"cell.png"``).

    Returns:
      The figure, one axes per distinct cell.

    Example:
      >>> from ldnas_jax.nas import Genotype
      >>> g = Genotype(("identity", "sep_conv_3x3", "max_pool_3x3"), num_nodes=3)
      >>> [ax.get_title() for ax in plot_cells(g).axes]
      ['one shared cell, normal and reduction (node 0: input, node 2: output)']
    """
    if not (hasattr(genotype, "edges") and hasattr(genotype, "num_nodes")):
        raise TypeError(f"expected a Genotype, got {type(genotype).__name__}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = genotype.num_nodes
    shared = genotype.reduce == genotype.normal
    cells = ["normal"] if shared else ["normal", "reduce"]
    figure = Figure(figsize=(2.4 * n, (0.55 * n + 0.8) * len(cells)))
    FigureCanvasAgg(figure)
    nodes = f"(node 0: input, node {n - 1}: output)"
    for row, cell in enumerate(cells):
        ax = figure.add_subplot(len(cells), 1, row + 1)
        if shared:
            title = f"one shared cell, normal and reduction {nodes}"
        else:
            title = f"{'normal' if cell == 'normal' else 'reduction'} cell {nodes}"
        plot_cell(genotype, ax=ax, cell=cell, title=title)
    if path is not None:
        figure.savefig(os.fspath(path), dpi=120, bbox_inches="tight")
    return figure


def _save(fig, path, tight: bool = False):
    if path is not None:
        fig.savefig(path, dpi=130, bbox_inches="tight" if tight else None)
        _pyplot().close(fig)


def _save_axes(ax, path) -> None:
    if path is not None:
        ax.figure.savefig(os.fspath(path), dpi=120, bbox_inches="tight")


def plot_space_check(result: Mapping, path=None, distance: str = "log_det"):
    """The space check (:func:`ldnas_jax.experiments.space_check`) as one picture.

    Each baseline space's mean test accuracy (bootstrap interval over seeds) against
    d[b, t] of ``distance``, the chosen (closest) task's space as a star; the controls
    (full space, random subsets) as dashed lines.

    Returns:
      The matplotlib Axes.
    """
    ax = _new_axes((6.5, 4.2))
    column = result["distances"][distance]
    summary = result["summary"]
    chosen = result["verdicts"]["test_accuracy"][distance]["chosen"]
    for name, d in column.items():
        stats = summary[name]["test_accuracy"]
        low, high = stats["interval_95"]
        star = name == chosen
        ax.errorbar(
            d,
            stats["mean"],
            yerr=[[stats["mean"] - low], [high - stats["mean"]]],
            fmt="*" if star else "o",
            markersize=14 if star else 6,
            color="C3" if star else "C0",
            label="closest task's space" if star else None,
        )
        ax.annotate(name, (d, stats["mean"]), textcoords="offset points", xytext=(5, 5))
    controls = [(n, s) for n, s in summary.items() if n not in column]
    for k, (name, stats) in enumerate(controls):
        ax.axhline(stats["test_accuracy"]["mean"], color=f"C{k + 4}", ls="--", lw=1, label=name)
    ax.set_xlabel(f"d[b, {result['config']['target']}] ({distance})")
    ax.set_ylabel("mean test accuracy of the space's winner")
    title = f"Space check, target {result['config']['target']}: baseline spaces and controls"
    if not result.get("complete", True):  # a report of a run so far says which seeds it holds
        title += f"\nseeds {result['seeds_reported']} of {result['config']['seeds']} so far"
    ax.set_title(title)
    ax.legend(fontsize="small")
    _save_axes(ax, path)
    return ax
