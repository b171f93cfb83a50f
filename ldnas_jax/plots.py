"""Pictures of results: distance heatmaps, α trajectories, accuracy against parameters.

Every function writes a PNG when ``path`` is given and returns the figure, so
notebooks can show it inline. Matplotlib's Agg backend is used when no display
is configured.
"""

from collections.abc import Sequence

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
    matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_distance_heatmap(
    mean: np.ndarray,
    names: Sequence[str],
    *,
    std: np.ndarray | None = None,
    path: str | None = None,
    title: str = "d[b, t]: rows source b, columns target t",
):
    """Heatmap of a K×K distance table, annotated with mean (± std), the closest source boxed.

    Example:
      >>> fig = plot_distance_heatmap(np.array([[0.0, 1.0], [2.0, 0.0]]), ["a", "b"])
    """
    mean = np.asarray(mean, float)
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.5, 1.0 * k + 1.8))
    image = ax.imshow(mean, cmap="viridis_r")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("target task t")
    ax.set_ylabel("source task b")
    ax.set_title(title, fontsize=10)
    scale = np.nanmax(mean) if np.nanmax(mean) > 0 else 1.0
    digits = max(2, int(np.ceil(-np.log10(scale))) + 2) if scale < 1 else 2
    for b in range(k):
        for t in range(k):
            text = f"{mean[b, t]:.{digits}f}"
            if std is not None:
                text += f"\n±{std[b, t]:.{digits}f}"
            ax.text(
                t,
                b,
                text,
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if mean[b, t] > 0.5 * scale else "black",
            )
    for t in range(k):  # box the closest source in each column
        column = np.where(np.arange(k) == t, np.inf, mean[:, t])
        b = int(np.argmin(column))
        ax.add_patch(plt.Rectangle((t - 0.5, b - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_alpha_curves(
    alpha_history: np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    path: str | None = None,
    title: str = "FUSE: softmax(α) per round",
):
    """softmax(α) of each candidate over FUSE rounds; ``alpha_history`` is (rounds, C) raw α.

    Example:
      >>> fig = plot_alpha_curves(np.zeros((3, 2)))
    """
    alpha = np.asarray(alpha_history, float)
    weights = np.exp(alpha - alpha.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for c in range(weights.shape[1]):
        ax.plot(
            np.arange(1, len(weights) + 1),
            weights[:, c],
            marker=".",
            label=labels[c] if labels is not None else f"candidate {c}",
        )
    ax.set_xlabel("round")
    ax.set_ylabel("softmax(α)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_accuracy_vs_params(
    results: dict[str, Sequence[tuple[float, int]]],
    *,
    path: str | None = None,
    title: str = "test accuracy against parameters",
):
    """Scatter of (num_params, accuracy) per method, e.g. LD-NAS, random search, full-space FUSE.

    Example:
      >>> fig = plot_accuracy_vs_params({"ld-nas": [(0.9, 1000)]})
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method, points in results.items():
        points = list(points)
        ax.scatter([p for _, p in points], [a for a, _ in points], label=method, s=30)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=130)
        plt.close(fig)
