"""What every results.json records: versions, config and seeds, so a run can be reproduced."""

import platform
import sys
import time
from importlib import metadata


def versions() -> dict[str, str]:
    """Versions of Python and the numeric stack.

    Example:
      >>> "jax" in versions()
      True
    """
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("ldnas_jax", "jax", "jaxlib", "flax", "optax", "numpy"):
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
