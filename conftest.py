"""Strict, CPU-only configuration for the tests and the package's doctests.

It sits at the repository root so that it also governs ``--doctest-modules`` over
``ldnas_jax/``. Four host devices let the sharded paths run on one machine.
"""

import os

# Must precede the first jax import.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
# JAX's persistent compilation cache stays off in this process, whatever the caller's shell
# exports: tests must not write to ~/.cache, and a command run in-process (``cli.main``) turns
# the cache on wherever LDNAS_JAX_CACHE_DIR points. JAX reads JAX_COMPILATION_CACHE_DIR once,
# at import. Tests that want the cache turn it on for a block (tests/_fast_compiles.py).
os.environ["LDNAS_JAX_CACHE_DIR"] = "off"
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

pytest_plugins = ["pytester"]  # tests/test_compile_cache.py runs the guard below in a pytest

# Implicit rank broadcasting and implicit dtype promotion are bugs in this code base.
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    return jax.random.key(0)


# What a test may change for a block but must give back: the settings that decide whether and
# where compiled programs are written to disk, and the key type every later test draws.
GUARDED_CONFIG = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_default_prng_impl",
)
GUARDED_ENVIRON = ("LDNAS_JAX_CACHE_DIR",)


def compile_settings() -> dict[str, object]:
    """The guarded JAX settings and environment variables, by name."""
    settings = {name: getattr(jax.config, name) for name in GUARDED_CONFIG}
    settings.update({name: os.environ.get(name) for name in GUARDED_ENVIRON})
    return settings


def restore_compile_settings(saved: dict[str, object]) -> list[str]:
    """Puts back ``saved`` and resets JAX's cache object; returns the names that had changed."""
    changed = sorted(name for name, value in compile_settings().items() if value != saved[name])
    for name in changed:
        if name in GUARDED_ENVIRON:
            if saved[name] is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = saved[name]
        else:
            jax.config.update(name, saved[name])
    if changed:
        compilation_cache.reset_cache()  # JAX keeps its cache object until told to re-read
    return changed


_SESSION_SETTINGS = compile_settings()


@pytest.fixture(autouse=True)
def _gives_back_the_compile_settings():
    """A test that leaves the persistent cache on (or the key type changed) fails, and is undone.

    Left on, the cache would serve every later test of the process from a folder that pytest
    may already have removed.
    """
    yield
    changed = restore_compile_settings(_SESSION_SETTINGS)
    if changed:
        pytest.fail(f"the test left JAX settings changed (now restored): {', '.join(changed)}")


@pytest.fixture(autouse=True, scope="module")
def _frees_compiled_programs_after_each_module():
    """Drops every compiled program once a test file is done.

    A worker of ``-n 2`` lives through dozens of files and thousands of XLA:CPU compilations;
    each executable keeps memory mappings, and a process that nears the kernel's map limit
    (``vm.max_map_count``, 65530 here) can crash inside the next compilation (a segfault in
    ``backend_compile_and_load`` was seen late in a full run). Files do not share programs
    under ``--dist loadfile``, so clearing between them costs no recompilation within a file.
    """
    yield
    jax.clear_caches()
