"""The commands' persistent compilation cache: where it lives, when it turns on, what it stores."""

import os
import subprocess
import sys
import textwrap

from ldnas_jax import cli
from ldnas_jax.commands import _compile_cache, demo


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
