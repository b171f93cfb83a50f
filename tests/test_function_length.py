"""No function of the package, the benchmarks or the tests has a body over 80 lines (issue 27).

A body is measured from its first statement after the docstring to its last line, so a
long docstring costs nothing and nested functions count towards their parent as well as
on their own.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKED = (ROOT / "ldnas_jax", ROOT / "benchmarks", ROOT / "tests")
LIMIT = 80


def body_length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of ``node``'s body, its docstring excluded."""
    body = node.body
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        body = body[1:]
    if not body:
        return 0
    return node.end_lineno - body[0].lineno + 1


def long_functions(source: str, name: str, limit: int = LIMIT) -> list[str]:
    """``name:function:length`` for every function in ``source`` with a body over ``limit``."""
    tree = ast.parse(source, filename=name)
    return [
        f"{name}:{node.name}:{body_length(node)}"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_length(node) > limit
    ]


def test_measure_excludes_the_docstring():
    source = 'def f():\n    """Doc.\n\n    More.\n    """\n    a = 1\n    return a\n'
    (node,) = ast.parse(source).body
    assert body_length(node) == 2
    assert body_length(ast.parse("def g():\n    '''Only a docstring.'''\n").body[0]) == 0


def test_long_functions_names_file_function_and_length():
    long = "def big():\n" + "    x = 1\n" * (LIMIT + 1)
    short = "def small():\n" + "    x = 1\n" * LIMIT
    assert long_functions(long + short, "m.py") == [f"m.py:big:{LIMIT + 1}"]


def test_no_function_body_over_80_lines():
    modules = sorted(path for folder in CHECKED for path in folder.rglob("*.py"))
    assert {path.parent for path in modules} >= set(CHECKED)
    offenders = []
    for path in modules:
        name = path.relative_to(ROOT).as_posix()
        offenders += long_functions(path.read_text(encoding="utf-8"), name)
    assert not offenders, (
        f"function bodies over {LIMIT} lines (docstring excluded); split them into helpers:\n"
        + "\n".join(offenders)
    )
