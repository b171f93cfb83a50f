"""Every ```python block of the README runs as written, on its own, in a fresh folder."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _processes import fast_compiling_env

pytestmark = pytest.mark.slow  # every README block in a fresh interpreter

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (ROOT / "README.md",)
BLOCK_TIMEOUT_S = 600  # a hang guard for one block; the first takes 2.5 min of CPU time

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, source) of each fenced ```python block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _FENCE.finditer(text)]


BLOCKS = [(path, line, source) for path in DOCUMENTS for line, source in python_blocks(path)]


def block_env(cache_dir: Path) -> dict[str, str]:
    """This checkout first on the path, CPU only; the rest only makes compilation faster."""
    return {**fast_compiling_env(cache_dir), "MPLBACKEND": "Agg", "TQDM_DISABLE": "1"}


def test_python_blocks_are_found(tmp_path):
    assert python_blocks(ROOT / "README.md"), "no ```python block found in README.md"
    sample = tmp_path / "sample.md"
    sample.write_text(
        "intro\n```python\nprint(1)\n```\n\n```bash\nls\n```\n```python\nx = 2\n```\n",
        encoding="utf-8",
    )
    assert python_blocks(sample) == [(3, "print(1)\n"), (10, "x = 2\n")]


@pytest.fixture(scope="module")
def jax_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_compilation_cache")


@pytest.mark.parametrize(
    "path, line, source", BLOCKS, ids=[f"{path.name}:{line}" for path, line, _ in BLOCKS]
)
def test_block_runs_in_a_fresh_folder(path, line, source, tmp_path, jax_cache_dir):
    script = tmp_path / "block.py"
    script.write_text(source, encoding="utf-8")
    start = time.perf_counter()
    # A deprecated import path in the README would warn in the user's own code (__main__).
    completed = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:__main__", str(script)],
        cwd=tmp_path,
        env=block_env(jax_cache_dir),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    seconds = time.perf_counter() - start
    assert completed.returncode == 0, (
        f"{path.name}, block at line {line}, failed after {seconds:.0f} s:\n"
        f"{completed.stderr[-4000:]}"
    )
    assert completed.stdout.strip(), f"{path.name}, block at line {line}, printed nothing"
