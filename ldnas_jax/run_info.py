"""What every results.json records: versions, config and seeds, so a run can be reproduced."""

import platform
import sys
import time
from importlib import metadata


def package_version() -> str:
    """ldnas_jax's version as installed: pyproject.toml's, read back from the package metadata.

    The one source of ``ldnas_jax.__version__``, ``--version`` and results.json's record; a
    source tree that was never installed (``pip install -e .``) reports "0+unknown".

    Example:
      >>> import ldnas_jax
      >>> package_version() == ldnas_jax.__version__
      True
    """
    try:
        return metadata.version("ldnas_jax")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def versions() -> dict[str, str]:
    """Versions of Python, ldnas_jax and the numeric stack.

    Example:
      >>> "jax" in versions()
      True
    """
    found = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ldnas_jax": package_version(),
    }
    for package in ("jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def run_record(config: dict, seeds) -> dict:
    """The provenance block written at the top of every results file."""
    import jax

    return {
        "config": config,
        "seeds": list(seeds),
        "versions": versions(),
        "devices": [str(d) for d in jax.devices()],
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
