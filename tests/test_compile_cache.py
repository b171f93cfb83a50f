"""The commands' persistent compilation cache: where it lives, when it turns on, what it stores."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from _fast_compiles import fast_compiles

from ldnas_jax import cli
from ldnas_jax.commands import _compile_cache, demo

ROOT = Path(__file__).resolve().parents[1]


def test_the_environment_chooses_the_directory(tmp_path):
    assert _compile_cache.compilation_cache_directory({}) == (
        _compile_cache.Path.home() / ".cache" / "ldnas_jax" / "jax"
    )
    ours = {"LDNAS_JAX_CACHE_DIR": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": "/elsewhere"}
    assert _compile_cache.compilation_cache_directory(ours) == tmp_path
    assert (
        _compile_cache.compilation_cache_directory({"JAX_COMPILATION_CACHE_DIR": "/j"}).name == "j"
    )
    for off in ("off", "OFF", "0", "none"):
        assert _compile_cache.compilation_cache_directory({"LDNAS_JAX_CACHE_DIR": off}) is None


def test_main_turns_the_cache_on_after_the_checks_and_before_running(monkeypatch):
    events = []
    monkeypatch.setattr(cli, "enable_compilation_cache", lambda: events.append("cache"))
    monkeypatch.setattr(demo, "execute", lambda plan: events.append("execute"))
    assert cli.main(["demo", "--target", "E66", "--out", "unused"]) == 2  # refused: no cache
    assert events == []
    assert cli.main(["demo", "--target", "E6", "--out", "unused-dir-never-written"]) == 0
    assert events == ["cache", "execute"]


@pytest.mark.slow
def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    program = textwrap.dedent(
        """
        import time, jax, jax.numpy as jnp
        from ldnas_jax.commands._compile_cache import enable_compilation_cache
        # Every program is stored: on a fast machine this one compiles in under the default floor.
        print(enable_compilation_cache(min_compile_seconds=0.0))
        x = jnp.ones((64, 64))
        step = jax.jit(lambda x: jnp.tanh(x @ x.T) @ jnp.sin(x) + jnp.cumsum(x, 0))
        step(x).block_until_ready()
        """
    )
    environ = {**os.environ, "LDNAS_JAX_CACHE_DIR": str(tmp_path / "cache")}
    environ["XLA_FLAGS"] = ""  # one device, as a command line run has

    def run():
        done = subprocess.run(
            [sys.executable, "-c", program],
            check=False,
            env=environ,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == str(tmp_path / "cache")
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert any(name.startswith("jit__lambda") for name in entries), entries
    run()  # a second process finds the entry and writes no new one for the same program
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries


def _cache_settings():
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    return {name: getattr(jax.config, name) for name in names}


def test_fast_compiles_gives_back_a_cache_a_command_turned_on(tmp_path):
    before = _cache_settings()
    cache = tmp_path / "cache"
    with fast_compiles(cache):
        # The path cli.main takes, with the environment fast_compiles sets.
        assert _compile_cache.enable_compilation_cache(min_compile_seconds=0.0) == cache
        jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)(jnp.ones((5, 7))).block_until_ready()
    written = sorted(p.name for p in cache.iterdir())
    assert written, "the block's compile was not stored: the test checks nothing"
    assert _cache_settings() == before
    assert os.environ["LDNAS_JAX_CACHE_DIR"] == "off"
    jax.jit(lambda x: jnp.cos(x) * 5.0 - 2.0)(jnp.ones((3, 11))).block_until_ready()
    assert sorted(p.name for p in cache.iterdir()) == written  # nothing more written there


# Run by a pytest in a subprocess under the suite's own conftest.py, with a shell that exports
# both cache variables: the suite keeps the cache off, and a test that leaves it on fails.
_INNER_TESTS = """
import os

import jax

from ldnas_jax.commands._compile_cache import enable_compilation_cache


def test_the_shell_s_cache_variables_do_not_reach_the_suite():
    assert os.environ["LDNAS_JAX_CACHE_DIR"] == "off"
    assert jax.config.jax_compilation_cache_dir is None


def test_leaves_the_cache_on(tmp_path):
    assert enable_compilation_cache({"LDNAS_JAX_CACHE_DIR": str(tmp_path)}) == tmp_path


def test_the_next_test_finds_it_off():
    assert jax.config.jax_compilation_cache_dir is None
"""


def test_the_suite_keeps_the_cache_off_and_fails_a_test_that_leaves_it_on(pytester, monkeypatch):
    monkeypatch.setenv("LDNAS_JAX_CACHE_DIR", str(pytester.path / "shell_cache"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(pytester.path / "jax_cache"))
    pytester.makeconftest((ROOT / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_inner=_INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_the_cache_on*",
            "E*the test left JAX settings changed (now restored): "
            "jax_compilation_cache_dir, jax_persistent_cache_min_compile_time_secs",
        ]
    )
    assert not (pytester.path / "shell_cache").exists()
    assert not (pytester.path / "jax_cache").exists()
