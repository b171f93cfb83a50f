"""The pictures explain themselves: checked on the matplotlib objects, not the pixels."""

import matplotlib
import numpy as np
import pytest

from ldnas_jax.nas import Genotype
from ldnas_jax.plots import (
    plot_accuracy_vs_params,
    plot_alpha_curves,
    plot_cells,
    plot_distance_heatmap,
    short_genotype,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

NORMAL = ("identity", "sep_conv_3x3", "max_pool_3x3", "conv_7x1_1x7", "zero", "identity")
REDUCE = ("max_pool_3x3", "identity", "identity", "sep_conv_3x3", "sep_conv_3x3", "zero")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _legend_texts(ax):
    legend = ax.get_legend()
    assert legend is not None, "no legend"
    return [t.get_text() for t in legend.get_texts()]


def test_the_heatmap_says_what_its_red_boxes_mark():
    mean = np.array([[0.0, 0.3, 0.2], [0.1, 0.0, 0.5], [0.4, 0.2, 0.0]])
    ax = plot_distance_heatmap(mean, ["a", "b", "c"]).axes[0]
    legend = ax.get_legend()
    assert _legend_texts(ax) == ["closest source b of each target t (column)"]
    assert matplotlib.colors.same_color(legend.legend_handles[0].get_edgecolor(), "red")
    # The boxes are where the legend says: each column's smallest off-diagonal entry.
    boxes = [p for p in ax.patches if matplotlib.colors.same_color(p.get_edgecolor(), "red")]
    corners = sorted((int(p.get_x() + 0.5), int(p.get_y() + 0.5)) for p in boxes)
    assert corners == [(0, 1), (1, 2), (2, 0)]  # (column t, row b): b=1 for t=0, ...


def test_short_genotype_abbreviates_each_edge_and_adds_a_distinct_reduction_cell():
    assert short_genotype(Genotype(NORMAL)) == "id sep3 max3 c7x1 0 id"
    assert short_genotype(Genotype(NORMAL, REDUCE)) == (
        "id sep3 max3 c7x1 0 id | max3 id id sep3 sep3 0"
    )
    with pytest.raises(TypeError, match="Genotype"):
        short_genotype("id sep3")


def test_alpha_curves_name_the_candidates_by_genotype_and_mark_the_winner():
    candidates = [Genotype(NORMAL), Genotype(NORMAL, REDUCE)]
    fig = plot_alpha_curves(np.zeros((3, 2)), genotypes=candidates, winner=1)
    ax = fig.axes[0]
    assert _legend_texts(ax) == [
        "id sep3 max3 c7x1 0 id",
        "id sep3 max3 c7x1 0 id | max3 id id sep3 sep3 0 (winner)",
    ]
    title = ax.get_legend().get_title().get_text()
    assert "0→1 0→2 1→2 0→3 1→3 2→3" in title  # the order of the six operations
    assert "normal cell | reduction cell" in title
    for short, name in [("sep3", "sep_conv_3x3"), ("c7x1", "conv_7x1_1x7"), ("0", "zero")]:
        assert f"{short} = {name}" in title
    assert "avg3" not in title  # only the abbreviations used
    shared = plot_alpha_curves(np.zeros((2, 1)), genotypes=candidates[:1]).axes[0]
    assert "one cell" in shared.get_legend().get_title().get_text()


def test_alpha_curves_refuse_labels_and_genotypes_together_and_a_winner_out_of_range():
    with pytest.raises(ValueError, match="labels or genotypes"):
        plot_alpha_curves(np.zeros((2, 1)), labels=["a"], genotypes=[Genotype(NORMAL)])
    with pytest.raises(ValueError, match="winner"):
        plot_alpha_curves(np.zeros((2, 2)), winner=2)


@pytest.mark.parametrize("rounds", [1, 2, 3, 7, 25])
def test_the_round_axis_has_whole_rounds_only(rounds):
    ax = plot_alpha_curves(np.zeros((rounds, 2))).axes[0]
    ax.figure.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert ticks[0] == 1 and 1 <= ticks[-1] <= rounds and len(ticks) <= 10
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert all("." not in label for label in labels), labels


def test_cells_shows_both_cells_or_says_they_are_one():
    fig = plot_cells(Genotype(NORMAL, REDUCE))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("normal cell") and titles[1].startswith("reduction cell")
    for ax, ops in zip(fig.axes, (NORMAL, REDUCE)):
        assert sorted(t.get_text() for t in ax.texts if not t.get_text().isdigit()) == sorted(ops)
    (ax,) = plot_cells(Genotype(NORMAL)).axes
    assert ax.get_title().startswith("one shared cell")


def test_cells_writes_a_png(tmp_path):
    path = tmp_path / "cell.png"
    plot_cells(Genotype(NORMAL, REDUCE), path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(TypeError, match="Genotype"):
        plot_cells(NORMAL)


def test_one_point_gets_a_linear_axis_around_it_and_a_label():
    ax = plot_accuracy_vs_params({"ld-nas": [(0.8125, 23456)]}).axes[0]
    assert ax.get_xscale() == "linear"
    low, high = ax.get_xlim()
    assert low < 23456 < high and high - low < 23456  # around the point, not from 0
    bottom, top = ax.get_ylim()
    assert bottom < 0.8125 < top and top - bottom <= 0.2
    assert [t.get_text() for t in ax.texts] == ["ld-nas\n0.812, 23,456 params"]


def test_counts_a_decade_apart_get_a_log_axis():
    points = {"ld-nas": [(0.8, 2_000)], "random search": [(0.7, 50_000)]}
    ax = plot_accuracy_vs_params(points).axes[0]
    assert ax.get_xscale() == "log"
    low, high = ax.get_xlim()
    assert low < 2_000 and 50_000 < high
    assert _legend_texts(ax) == ["ld-nas", "random search"]
    assert len(ax.texts) == 2
    many = {"m": [(0.5, 1000 + i) for i in range(9)]}  # too many to label
    assert len(plot_accuracy_vs_params(many).axes[0].texts) == 0


def test_accuracy_vs_params_refuses_no_points_and_non_positive_counts():
    with pytest.raises(ValueError, match="no"):
        plot_accuracy_vs_params({"ld-nas": []})
    with pytest.raises(ValueError, match="positive"):
        plot_accuracy_vs_params({"ld-nas": [(0.5, 0)]})
