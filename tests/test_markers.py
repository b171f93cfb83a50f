"""The slow tier: the expensive tests carry ``@pytest.mark.slow``, so ``-m "not slow"`` is quick.

Read from the test files' syntax trees, without importing them: a new subprocess test that
forgets the marker fails here, not by making the quick tier slow.
"""

import ast
import tomllib
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# Whole files: end to end, notebooks, README blocks, SIGKILL and resume, several processes.
SLOW_FILES = (
    "test_demo.py",
    "test_multi_process.py",
    "test_readme.py",
    "test_reproduce.py",
    "test_search_comparison.py",
)
# Single tests: a command or a search end to end, or a subprocess, in a file of quick tests.
SLOW_TESTS = {
    "test_cli.py": (
        "test_the_module_s_help_names_the_program_and_is_plain_text",
        "test_the_installed_module_reports_a_user_error_without_a_traceback",
    ),
    "test_command_resume.py": (
        "test_resume_reuses_networks_and_pairs_and_computes_only_the_missing_pair",
    ),
    "test_compile_cache.py": ("test_a_second_process_loads_what_the_first_compiled",),
    "test_distances_report.py": ("test_a_resume_recomputes_only_the_missing_bootstrap_column",),
    "test_notebooks.py": ("test_notebook_runs_and_draws",),  # the rest only read the files
    "test_pair_keys.py": ("test_every_entry_point_gives_the_table_s_number",),
    "test_pipeline.py": (
        "test_distances_command_writes_matrix_and_heatmap",
        "test_zoo_persists_and_reloads_without_retraining",
    ),
    "test_search_distance_family.py": (
        "test_each_distance_drives_the_search_to_the_argmin_of_its_own_column",
        "test_seeds_resume_to_the_unbroken_result_and_seed_0_is_the_one_seed_run",
    ),
    "test_transfer.py": ("test_command_writes_rankings_consistent_with_its_numbers",),
    "test_transfer_power.py": ("test_seeds_every_other_task_a_baseline_and_a_killed_run_resumed",),
}


def _is_slow_mark(node: ast.expr) -> bool:
    """``pytest.mark.slow``, as a decorator or in a ``pytestmark`` value."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_slow_mark(item) for item in node.elts)
    return ast.unparse(node) == "pytest.mark.slow"


def _file_is_slow(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        and _is_slow_mark(node.value)
        for node in tree.body
    )


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def slow_tests(source: str) -> set[str]:
    """The names of the module's test functions that carry the slow marker."""
    tree = ast.parse(source)
    tests = {name for name in _functions(tree) if name.startswith("test_")}
    if _file_is_slow(tree):
        return tests
    functions = _functions(tree)
    return {t for t in tests if any(_is_slow_mark(d) for d in functions[t].decorator_list)}


def process_starting_tests(source: str) -> set[str]:
    """Test functions that use ``subprocess``, directly or through the module's own helpers."""
    functions = _functions(ast.parse(source))

    def names(function):
        return {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}

    starting = {f for f, node in functions.items() if "subprocess" in names(node)}
    while True:  # helpers of helpers
        more = {f for f, node in functions.items() if names(node) & starting} - starting
        if not more:
            break
        starting |= more
    return {f for f in starting if f.startswith("test_")}


def test_slow_is_a_registered_marker():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    markers = config["tool"]["pytest"]["ini_options"]["markers"]
    assert any(line.split(":")[0].strip() == "slow" for line in markers)


@pytest.mark.parametrize("name", SLOW_FILES)
def test_the_slow_files_are_marked_as_a_whole(name):
    assert _file_is_slow(ast.parse((TESTS / name).read_text(encoding="utf-8"))), name


@pytest.mark.parametrize("name", sorted(SLOW_TESTS))
def test_the_slow_tests_of_quick_files_are_marked(name):
    marked = slow_tests((TESTS / name).read_text(encoding="utf-8"))
    missing = set(SLOW_TESTS[name]) - marked
    assert not missing, f"{name}: not marked slow: {sorted(missing)}"


def test_every_test_that_starts_a_process_is_slow():
    unmarked = []
    for path in sorted(TESTS.glob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        unmarked += [
            f"{path.name}::{t}" for t in process_starting_tests(source) - slow_tests(source)
        ]
    assert not unmarked, f"start a process but are not marked slow: {unmarked}"


def test_the_readers_tell_marked_from_unmarked_tests():
    source = (
        "import subprocess\nimport pytest\n\n"
        "def helper():\n    return subprocess.run(['true'])\n\n"
        "def test_through_a_helper():\n    helper()\n\n"
        "@pytest.mark.slow\ndef test_marked():\n    subprocess.run(['true'])\n\n"
        "def test_quick():\n    pass\n"
    )
    assert process_starting_tests(source) == {"test_through_a_helper", "test_marked"}
    assert slow_tests(source) == {"test_marked"}
    whole = "import pytest\n\npytestmark = [pytest.mark.slow]\n\ndef test_a():\n    pass\n"
    assert slow_tests(whole) == {"test_a"}
