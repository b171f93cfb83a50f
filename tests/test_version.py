"""One version: pyproject.toml's, read back from the installed metadata everywhere it is shown.

Issue 28 item 3 / issue 27 item 7: `ldnas_jax.__version__` said 0.2.0 while the metadata, the
wheel and results.json said 0.1.0, and there was no `--version`; the 0.1 module paths and
names lived on through a meta-path finder (`_compat.py`), which 0.2.0 removes.
"""

import importlib
import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from _processes import python_m

import ldnas_jax
from ldnas_jax import run_info
from ldnas_jax.cli import main

ROOT = Path(__file__).resolve().parents[1]


def pyproject_version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["version"]


def test_the_installed_metadata_is_pyproject_s_version():
    assert metadata.version("ldnas_jax") == pyproject_version(), (
        "the installed metadata is stale: reinstall with `pip install -e .`"
    )


def test_the_package_results_and_command_line_report_the_installed_version(capsys):
    installed = metadata.version("ldnas_jax")
    assert ldnas_jax.__version__ == installed
    assert run_info.versions()["ldnas_jax"] == installed  # what results.json records
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.split()[-1:] == [installed]


def test_a_source_tree_that_was_never_installed_says_so(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert run_info.package_version() == "0+unknown"
    assert run_info.versions()["ldnas_jax"] == "0+unknown"


def test_the_changelog_s_newest_section_is_this_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## \[?(\d+\.\d+\.\d+[^\]\s]*)", text, flags=re.MULTILINE)
    assert sections and sections[0] == pyproject_version(), sections


@pytest.mark.parametrize(
    "old_path", ["ldnas_jax.distance", "ldnas_jax.task_distance", "ldnas_jax.transfer"]
)
def test_the_0_1_module_paths_are_gone(old_path):
    # 0.2.0 drops the aliases (CHANGELOG.md); a stale alias would import with a warning.
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old_path)


@pytest.mark.parametrize("old_name", ["spearman", "window_max", "flatten_fisher"])
def test_the_0_1_top_level_names_are_gone(old_name):
    with pytest.raises(AttributeError, match=f"no attribute '{old_name}'"):
        getattr(ldnas_jax, old_name)
    assert old_name not in dir(ldnas_jax)


@pytest.mark.slow
def test_python_m_ldnas_jax_version_prints_the_version(tmp_path):
    result = subprocess.run(**python_m("--version", cwd=tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"python -m ldnas_jax {metadata.version('ldnas_jax')}\n"
