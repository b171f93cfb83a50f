"""Test speed only: settings under which a command's tiny run compiles less, undone after.

On CPU a tiny run is mostly XLA compilation. RBG keys compile far faster than threefry, and
the commands' persistent compilation cache (``LDNAS_JAX_CACHE_DIR``, turned on by
``cli.main``) lets a later process, or a new jit of the same program in this one, load a
program instead of compiling it again. A loaded program is the compiled one: results are
unchanged.
"""

import contextlib
from pathlib import Path

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

_CONFIG = (
    "jax_default_prng_impl",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
)


@contextlib.contextmanager
def fast_compiles(cache_dir: Path):
    """RBG keys and the commands' cache in ``cache_dir``, here and in subprocesses started inside."""
    previous = {name: getattr(jax.config, name) for name in _CONFIG}
    with pytest.MonkeyPatch.context() as patch:
        try:
            patch.setenv("LDNAS_JAX_CACHE_DIR", str(cache_dir))
            patch.setenv("JAX_DEFAULT_PRNG_IMPL", "rbg")
            jax.config.update("jax_default_prng_impl", "rbg")
            yield cache_dir
        finally:
            # cli.main turned the cache on for good (a command's process ends with it): after
            # the block, this process compiles as before and writes nothing to cache_dir.
            for name, value in previous.items():
                jax.config.update(name, value)
            compilation_cache.reset_cache()  # the next compile reads the restored settings
