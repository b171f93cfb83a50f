"""JAX's persistent compilation cache for the command line: a second run skips XLA compiles.

On CPU most of a short run's first minutes are XLA compilations (FUSE rounds, Fisher programs,
training steps). The commands keep compiled programs on disk, so that running a command again
(or another command with the same models and shapes) loads them instead of compiling.

Where: ``$LDNAS_JAX_CACHE_DIR`` when set (``off`` turns the cache off), else JAX's own
``$JAX_COMPILATION_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/ldnas_jax/jax`` (by default
``~/.cache/ldnas_jax/jax``). Deleting the folder is always safe. Library calls never touch
this setting: only :func:`ldnas_jax.cli.main` turns it on.
"""

import os
from pathlib import Path

import jax

ENVIRONMENT_VARIABLE = "LDNAS_JAX_CACHE_DIR"
# Programs that compile faster than this are not worth a disk entry (JAX's default is 1 s,
# which leaves out most of the many mid-sized programs a search compiles on CPU).
MIN_COMPILE_SECONDS = 0.2


def compilation_cache_directory(environ=os.environ) -> Path | None:
    """Where the commands keep compiled programs, or None when the cache is off.

    Example:
      >>> compilation_cache_directory({"LDNAS_JAX_CACHE_DIR": "/tmp/jax-cache"})
      PosixPath('/tmp/jax-cache')
      >>> compilation_cache_directory({"LDNAS_JAX_CACHE_DIR": "off"}) is None
      True
      >>> compilation_cache_directory({"XDG_CACHE_HOME": "/scratch"})
      PosixPath('/scratch/ldnas_jax/jax')
    """
    chosen = environ.get(ENVIRONMENT_VARIABLE) or environ.get("JAX_COMPILATION_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in ("off", "0", "none") else Path(chosen)
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ldnas_jax" / "jax"


def enable_compilation_cache(
    environ=os.environ, min_compile_seconds: float = MIN_COMPILE_SECONDS
) -> Path | None:
    """Turns JAX's persistent compilation cache on in :func:`compilation_cache_directory`.

    Programs that compile in under ``min_compile_seconds`` are not stored. Returns the
    directory, or None when the cache is off. A directory that cannot be created leaves the
    cache off (compiling again is slower, never wrong).
    """
    directory = compilation_cache_directory(environ)
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return directory
