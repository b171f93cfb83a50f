"""The notebooks in notebooks/: how they install, what they are stored with, and that they run.

The quick tests only read the stored files (and run the install cell against a fake `%pip`); the
slow one runs each notebook top to bottom in a fresh kernel in its small configuration.
"""

import ast
import copy
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from _processes import fast_compiling_env

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # one cell; the longest notebook, 03, took under 5 min in all (its intro)
WHEEL_COMMAND = "pip wheel --no-deps . -w dist"
# A private module of the package, reached by name (`ldnas_jax.experiments._reproduce`) or
# through the notebooks' aliases (`ld._checks`, `nas._cells`); dunders are public.
PRIVATE_NAME = re.compile(r"\b(?:ldnas_jax|ld|nas)(?:\.\w+)*\._(?!_)")
# What an output stored from one machine should not show a reader on another.
MACHINE_PATH = re.compile(r"/tmp/|/home/|/root/|/Users/|site-packages")

ids = [p.stem for p in NOTEBOOKS]


def kernel_env(cache_dir: Path) -> dict[str, str]:
    """The kernel's environment: small configuration, this checkout first on the path."""
    env = fast_compiling_env(cache_dir)
    env.pop("MPLBACKEND", None)  # let the kernel use the inline backend, as Jupyter does
    # As strict as the rest of the suite (conftest.py).
    env.update(LDNAS_NOTEBOOK_SMALL="1", JAX_NUMPY_RANK_PROMOTION="raise")
    return env


def run_notebook(path: Path, workdir: Path, cache_dir: Path):
    """Executes a notebook in a fresh kernel, in `workdir`; raises on the first failing cell."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:  # whatever it is stored with, judge only this run's outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        allow_errors=False,
    )
    # The kernel must be this interpreter, so that it sees the test environment's packages;
    # jupyter_client runs the "python" of ipykernel's spec as sys.executable.
    client.km = client.create_kernel_manager()
    command = client.km.format_kernel_cmd()
    assert Path(command[0]).resolve() == Path(sys.executable).resolve(), (
        f"kernel 'python3' runs {command[0]}, not {sys.executable}; "
        "run `python -m ipykernel install --sys-prefix` in the test environment"
    )
    client.execute(env=kernel_env(cache_dir))
    return notebook


def images(notebook) -> list:
    """The PNG figures among a notebook's outputs."""
    return [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type in ("display_data", "execute_result") and "image/png" in out.data
    ]


def private_imports(notebook) -> list[str]:
    """Every use of a private ldnas_jax module or name in the notebook's code cells."""
    from IPython.core.inputtransformer2 import TransformerManager  # %pip, %matplotlib

    found = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        found += [m.group(0) for m in PRIVATE_NAME.finditer(cell.source)]
        for node in ast.walk(ast.parse(TransformerManager().transform_cell(cell.source))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ldnas_jax"):
                found += [
                    f"from {node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    return found


def stored_output_problems(notebook) -> list[str]:
    """Why a notebook is not stored with the outputs of one clean run (empty: it is)."""
    problems = []
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"execution counts {counts}, not 1..{len(code)}: run it once, in order")
    if not images(notebook):
        problems.append("no figure (image/png output)")
    for i, cell in enumerate(code):
        for out in cell.outputs:
            if out.output_type == "error":
                problems.append(f"code cell {i} stored with an error: {out.ename}")
            if out.output_type == "stream":
                text = out.text
            else:
                text = str({k: v for k, v in out.get("data", {}).items() if "image" not in k})
            if MACHINE_PATH.search(text):
                problems.append(f"code cell {i} shows a path of its machine: {text[:200]!r}")
    return problems


def run_install_cell(source: str, cwd: Path, monkeypatch) -> list[tuple[str, str]]:
    """Runs an install cell as IPython would, in `cwd`, with ldnas_jax not installed.

    Returns the line magics it ran, `{...}` expanded, without running them.
    """
    from IPython.core.inputtransformer2 import TransformerManager

    magics, namespace = [], {}

    class Shell:
        def run_line_magic(self, name, line):
            magics.append((name, eval("f" + repr(line), namespace)))

    namespace["get_ipython"] = Shell
    find_spec = importlib.util.find_spec

    def find_all_but_ldnas_jax(name, *args, **kwargs):
        return None if name == "ldnas_jax" else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_all_but_ldnas_jax)
    monkeypatch.chdir(cwd)
    exec(TransformerManager().transform_cell(source), namespace)
    return magics


@pytest.fixture(scope="session")
def jax_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_compilation_cache")


def test_notebooks_are_found():
    assert len(NOTEBOOKS) >= 2, f"expected notebooks in {ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_opens_in_colab_and_states_its_install_route(path):
    stored = nbformat.read(path, as_version=4)
    assert "colab" in stored.metadata, f"{path.name} lacks Colab's notebook metadata"
    intro = stored.cells[0].source
    install = next(cell for cell in stored.cells if cell.cell_type == "code").source
    # The route every user can follow, stated where a reader starts and in the cell itself:
    # a wheel built in a checkout and uploaded, or the checkout.
    for text in (intro, install):
        assert WHEEL_COMMAND in text and "ldnas_jax-*.whl" in text and "checkout" in text
    assert "%pip install" in install
    for placeholder in ("REPO_URL", "YOUR-ORG", "<your"):
        assert placeholder not in intro + install, f"{path.name}: placeholder {placeholder}"
    assert "few minutes" not in intro, "state measured times, not guesses"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_install_cell_installs_an_uploaded_wheel_or_the_checkout(path, tmp_path, monkeypatch):
    pytest.importorskip("IPython")
    stored = nbformat.read(path, as_version=4)
    install = next(cell for cell in stored.cells if cell.cell_type == "code")

    # Colab: the wheel uploaded to the working directory (/content), the newest name if several.
    for version in ("0.1.0", "0.2.0"):
        (tmp_path / f"ldnas_jax-{version}-py3-none-any.whl").touch()
    wheel = tmp_path / "ldnas_jax-0.2.0-py3-none-any.whl"
    magics = run_install_cell(install.source, tmp_path, monkeypatch)
    assert magics == [("pip", f'install -q "{wheel}"')]
    # Run in a checkout's notebooks/ folder: the checkout.
    magics = run_install_cell(install.source, ROOT / "notebooks", monkeypatch)
    assert magics == [("pip", f'install -q "{ROOT}"')]
    # Neither: says what to upload.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"upload the wheel"):
        run_install_cell(install.source, empty, monkeypatch)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_is_stored_with_the_outputs_of_a_run(path):
    stored = nbformat.read(path, as_version=4)
    nbformat.validate(stored)
    problems = stored_output_problems(stored)
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_imports_public_names_only(path):
    pytest.importorskip("IPython")
    found = private_imports(nbformat.read(path, as_version=4))
    assert not found, f"{path.name} uses private modules or names: {found}"


def test_the_stored_notebook_checks_can_fail():
    pytest.importorskip("IPython")
    stored = nbformat.read(NOTEBOOKS[0], as_version=4)
    cleared = copy.deepcopy(stored)
    for cell in cleared.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    problems = stored_output_problems(cleared)
    assert any("execution counts" in p for p in problems)
    assert any("no figure" in p for p in problems)
    leaky = copy.deepcopy(stored)
    leaky.cells.append(nbformat.v4.new_code_cell("print(1)", execution_count=99))
    leaky.cells[-1].outputs = [nbformat.v4.new_output("stream", text="/tmp/tmpab12/x.npz\n")]
    assert len(stored_output_problems(leaky)) == 2  # the count and the path
    private = copy.deepcopy(stored)
    private.cells.append(
        nbformat.v4.new_code_cell(
            "from ldnas_jax.experiments._reproduce import device_info\n"
            "from ldnas_jax.experiments import (\n    _row,\n)\nld._checks\nld.__version__"
        )
    )
    assert private_imports(private) == [
        "ldnas_jax.experiments._",
        "ld._",
        "from ldnas_jax.experiments import _row",
    ]


@pytest.mark.slow  # every notebook in a kernel
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs_and_draws(path, tmp_path, jax_cache_dir):
    stored = nbformat.read(path, as_version=4)
    nbformat.validate(stored)
    code = [cell for cell in stored.cells if cell.cell_type == "code"]

    executed = run_notebook(path, tmp_path, jax_cache_dir)

    outputs = [out for cell in executed.cells if cell.cell_type == "code" for out in cell.outputs]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    assert images(executed), f"{path.name} produced no figure"
    ran = [cell.execution_count for cell in executed.cells if cell.cell_type == "code"]
    assert ran == list(range(1, len(code) + 1)), "every code cell runs once, in order"
