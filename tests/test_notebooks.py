"""Every notebook in notebooks/ runs top to bottom in its small configuration and draws figures."""

import os
import sys
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow  # every notebook in a kernel

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # one cell; the whole notebook should take well under 90 s


def kernel_env(cache_dir: Path) -> dict[str, str]:
    """The kernel's environment: small configuration, this checkout first on the path."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # let the kernel use the inline backend, as Jupyter does
    env.update(
        LDNAS_NOTEBOOK_SMALL="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        JAX_PLATFORMS="cpu",
        # As strict as the rest of the suite (conftest.py).
        JAX_NUMPY_RANK_PROMOTION="raise",
        # Test speed only, compilation dominating on CPU: RBG keys compile far faster than
        # threefry, LLVM's optimisation passes are skipped (about a third of the kernel's CPU
        # time), and the compilation cache lets networks of one shape share their steps.
        JAX_DEFAULT_PRNG_IMPL="rbg",
        XLA_FLAGS=f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip(),
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    return env


def run_notebook(path: Path, workdir: Path, cache_dir: Path):
    """Executes a notebook in a fresh kernel, in `workdir`; raises on the first failing cell."""
    notebook = nbformat.read(path, as_version=4)
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


@pytest.fixture(scope="session")
def jax_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_compilation_cache")


def test_notebooks_are_found():
    assert len(NOTEBOOKS) >= 2, f"expected notebooks in {ROOT / 'notebooks'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_opens_in_colab_and_installs_without_a_url(path):
    stored = nbformat.read(path, as_version=4)
    assert "colab" in stored.metadata, f"{path.name} lacks Colab's notebook metadata"
    install = next(cell for cell in stored.cells if cell.cell_type == "code").source
    # The install route every user can follow: a wheel built from a checkout, or the checkout.
    assert "pip wheel --no-deps . -w dist" in install and "ldnas_jax-*.whl" in install
    assert "REPO_URL" not in install and "YOUR-ORG" not in install
    intro = stored.cells[0].source
    assert "few minutes" not in intro, "state measured times, not guesses"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_draws(path, tmp_path, jax_cache_dir):
    stored = nbformat.read(path, as_version=4)
    nbformat.validate(stored)
    code = [cell for cell in stored.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        f"{path.name} is stored with outputs; clear them before committing"
    )
    assert "google.colab" in code[0].source and "pip install" in code[0].source

    executed = run_notebook(path, tmp_path, jax_cache_dir)

    outputs = [out for cell in executed.cells if cell.cell_type == "code" for out in cell.outputs]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    images = [
        out
        for out in outputs
        if out.output_type in ("display_data", "execute_result") and "image/png" in out.data
    ]
    assert images, f"{path.name} produced no figure"
    ran = [cell.execution_count for cell in executed.cells if cell.cell_type == "code"]
    assert ran == list(range(1, len(code) + 1)), "every code cell runs once, in order"
