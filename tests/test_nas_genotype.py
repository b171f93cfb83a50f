"""Genotype: validation, JSON round trip, hashing, text and pictures."""

import json

import numpy as np
import pytest

from ldnas_jax import nas

NORMAL = ("identity", "sep_conv_3x3", "max_pool_3x3", "identity", "conv_7x1_1x7", "zero")
REDUCE = ("max_pool_3x3",) * 6


def test_edge_order():
    assert nas.cell_edges(4) == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert nas.num_cell_edges(4) == 6
    assert nas.num_nodes_for_edges(6) == 4
    with pytest.raises(ValueError, match="densely connected"):
        nas.num_nodes_for_edges(5)


def test_defaults_and_edges():
    g = nas.Genotype(NORMAL)
    assert g.num_nodes == 4 and g.reduce == NORMAL
    assert g.edges()[1] == (0, 2, "sep_conv_3x3")
    assert g.edges("reduce") == tuple((i, j, op) for (i, j), op in zip(nas.cell_edges(4), NORMAL))
    assert g.operations == ("identity", "sep_conv_3x3", "max_pool_3x3", "conv_7x1_1x7", "zero")


def test_json_round_trip():
    g = nas.Genotype(NORMAL, REDUCE)
    text = g.to_json()
    assert json.loads(text) == {"num_nodes": 4, "normal": list(NORMAL), "reduce": list(REDUCE)}
    assert nas.Genotype.from_json(text) == g


def test_hashable_and_immutable():
    a = nas.Genotype(list(NORMAL), REDUCE)  # lists are stored as tuples
    b = nas.Genotype(NORMAL, REDUCE)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.num_nodes = 5


def test_str_lists_edges():
    text = str(nas.Genotype(NORMAL, REDUCE))
    assert "normal: 0->1: identity, 0->2: sep_conv_3x3" in text
    assert "2->3: zero" in text
    assert "reduce: 0->1: max_pool_3x3" in text


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"num_nodes": 4, "normal": [', "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"num_nodes": 4, "normal": ["identity"]}', "missing"),
        ('{"num_nodes": 4, "normal": ["identity"], "reduce": ["identity"]}', "6 edges"),
        ('{"num_nodes": 2, "normal": ["conv_9x9"], "reduce": ["zero"]}', "unknown operation"),
        ('{"num_nodes": "2", "normal": ["zero"], "reduce": ["zero"]}', "num_nodes"),
        ('{"num_nodes": 2, "normal": "zero", "reduce": ["zero"]}', "list"),
        ('{"num_nodes": 2, "normal": [3], "reduce": ["zero"]}', "str"),
        ('{"num_nodes": 1, "normal": [], "reduce": []}', "num_nodes"),
    ],
)
def test_corrupted_json(text, message):
    with pytest.raises(ValueError, match=message):
        nas.Genotype.from_json(text)


def test_invalid_construction():
    with pytest.raises(ValueError, match="unknown operation 'bogus'"):
        nas.Genotype(("bogus",), num_nodes=2)
    with pytest.raises(ValueError, match="reduce cell has 2 operations"):
        nas.Genotype(("zero",), ("zero", "zero"), num_nodes=2)
    with pytest.raises(TypeError, match="single string"):
        nas.Genotype("identity", num_nodes=2)


def test_plot_cell_writes_png(tmp_path):
    g = nas.Genotype(NORMAL, REDUCE)
    for cell in ("normal", "reduce"):
        path = tmp_path / f"{cell}.png"
        ax = nas.plot_cell(g, path=path, cell=cell)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert {t.get_text() for t in ax.texts} >= set(getattr(g, cell))


def test_plot_alpha_history_writes_png(tmp_path):
    path = tmp_path / "alpha.png"
    nas.plot_alpha_history(np.array([[0.0, 0.0], [0.5, -0.5]]), labels=["a", "b"], path=path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="rounds, C"):
        nas.plot_alpha_history(np.zeros(3))
