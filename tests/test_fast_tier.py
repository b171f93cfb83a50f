"""The fast tier's list of compile-heavy tests (conftest.COMPILE_HEAVY) names tests that exist.

A renamed or removed test would otherwise drop out of the list silently and a renamed heavy
test would slip back into the fast tier; a stale entry fails here instead.
"""

import ast
import importlib
from pathlib import Path

import pytest

from conftest import COMPILE_HEAVY, pytest_collection_modifyitems

ROOT = Path(__file__).resolve().parent.parent


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def _resolve(dotted: str):
    """The object a doctest id names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("node_id", sorted(COMPILE_HEAVY))
def test_each_compile_heavy_entry_names_a_test_or_a_doctest(node_id):
    path, _, name = node_id.partition("::")
    assert (ROOT / path).is_file(), f"{node_id}: no file {path}"
    name = name.split("[")[0]
    if path.startswith("tests/"):
        assert name in _test_functions(ROOT / path), f"{node_id}: no such test function"
    else:
        assert ">>>" in (_resolve(name).__doc__ or ""), f"{node_id}: no doctest there"


class _Item:
    def __init__(self, nodeid):
        self.nodeid, self.markers = nodeid, []

    def add_marker(self, marker):
        self.markers.append(marker.name)


def test_the_hook_marks_listed_ids_and_their_parametrisations_slow_and_nothing_else():
    listed = next(i for i in sorted(COMPILE_HEAVY) if "[" not in i)
    items = [_Item(listed), _Item(listed + "[any]"), _Item("tests/test_x.py::test_quick")]
    pytest_collection_modifyitems(None, items)
    assert [item.markers for item in items] == [["slow"], ["slow"], []]
