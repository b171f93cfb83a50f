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
# The commands' persistent compilation cache stays off: tests must not write to ~/.cache.
os.environ.setdefault("LDNAS_JAX_CACHE_DIR", "off")

import jax
import pytest

# Implicit rank broadcasting and implicit dtype promotion are bugs in this code base.
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    return jax.random.key(0)
