"""Child Python processes of the tests: a command, a notebook kernel or a README block.

Each imports this checkout, not whatever ``ldnas_jax`` the environment has installed.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_m(*args: str, cwd: Path) -> dict:
    """``subprocess.run``'s arguments for ``python -m ldnas_jax *args``, run in ``cwd``.

    The test calls ``subprocess.run`` itself: tests/test_markers.py finds the tests that start
    a process by that name in their body.
    """
    output = {"capture_output": True, "text": True, "timeout": 300}
    command = [sys.executable, "-m", "ldnas_jax", *args]
    return {"args": command, "cwd": cwd, "env": {**os.environ, "PYTHONPATH": str(ROOT)}, **output}


def fast_compiling_env(cache_dir: Path) -> dict[str, str]:
    """This environment with the checkout first on the path, CPU only, compiling fast.

    Test speed only, compilation dominating on CPU: RBG keys compile far faster than threefry,
    LLVM's optimisation passes are skipped (about a third of a notebook kernel's CPU time), and
    the compilation cache in ``cache_dir`` lets programs of one shape share their compilation.
    """
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        JAX_PLATFORMS="cpu",
        JAX_DEFAULT_PRNG_IMPL="rbg",
        XLA_FLAGS=f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip(),
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    return env
