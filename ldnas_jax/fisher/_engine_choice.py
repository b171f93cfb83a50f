"""``method="auto"`` on a GPU or TPU: both engines timed once per program, the faster kept.

On XLA:CPU the layer-wise engine was the faster one on every model ``benchmarks.fisher_speed``
measured (small CNN, VGG-16, plain functions, NNX), so there ``"auto"`` keeps the plan's
rule (layer-wise wherever the plan places a parameter) and times nothing. The one GPU run
(an H200) found the layer-wise engine at 1.39× PyTorch on VGG-16 but 0.40× on the small CNN,
where per-example ``vmap(grad)`` did as well: the winner there depends on the model. So on
the backends of :data:`TIMED_BACKENDS`, the first eager call of a program runs one chunk
step of each engine on its own first chunk, keeps the faster for the rest of the process,
and later calls with the same program, estimator and chunk read that choice. Under ``jit``
nothing can be timed, and a choice not made yet falls back to the plan's rule.
"""

import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax

__all__ = [
    "TIMED_BACKENDS",
    "EngineTiming",
    "clear_engine_timings",
    "engine_timings",
    "faster_engine",
    "times_engines",
]

# Backends where "auto" times the two engines; XLA:CPU is left out (module docstring).
TIMED_BACKENDS = frozenset({"gpu", "cuda", "rocm", "tpu"})


class EngineTiming(NamedTuple):
    """Seconds of one chunk step per engine (the best of its runs after the first)."""

    vmap_seconds: float
    layerwise_seconds: float

    @property
    def method(self) -> str:
        """The faster engine; the layer-wise one on a tie (it holds less memory)."""
        return "layerwise" if self.layerwise_seconds <= self.vmap_seconds else "vmap"


_TIMINGS: dict[tuple, EngineTiming] = {}


def times_engines(backend: str | None = None) -> bool:
    """Whether ``"auto"`` times the engines on ``backend`` (default: JAX's default backend).

    Example:
      >>> times_engines("cpu"), times_engines("cuda")
      (False, True)
    """
    return (backend or jax.default_backend()) in TIMED_BACKENDS


def _best_seconds(step: Callable, args: tuple, repeats: int) -> float:
    jax.block_until_ready(step(*args))  # compiles (or loads) and warms up: not counted
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(step(*args))
        best = min(best, time.perf_counter() - started)
    return best


def faster_engine(key: tuple, steps: Mapping[str, Callable], args: tuple, repeats: int = 2) -> str:
    """``"vmap"`` or ``"layerwise"``: whichever of ``steps`` runs ``args`` faster, timed once.

    Args:
      key: what the choice is cached under (backend, program, estimator, chunk).
      steps: ``{"vmap": step, "layerwise": step}``, compiled chunk steps of one program.
      args: one concrete chunk's arguments, the same for both.
      repeats: timed runs per engine after a first, untimed one.

    Example:
      >>> import time
      >>> slow = lambda x: (time.sleep(0.01), x)[1]
      >>> faster_engine(("doc",), {"vmap": slow, "layerwise": lambda x: x}, (1,))
      'layerwise'
      >>> engine_timings()[("doc",)].vmap_seconds >= 0.01
      True
      >>> clear_engine_timings()
    """
    if key not in _TIMINGS:
        seconds = {
            name: _best_seconds(steps[name], args, repeats) for name in ("vmap", "layerwise")
        }
        _TIMINGS[key] = EngineTiming(seconds["vmap"], seconds["layerwise"])
    return _TIMINGS[key].method


def engine_timings() -> dict[tuple, EngineTiming]:
    """A copy of this process's timings: ``(backend, program, estimator, ...) -> EngineTiming``."""
    return dict(_TIMINGS)


def clear_engine_timings() -> None:
    """Forgets every choice, so that the next eager call times its engines again."""
    _TIMINGS.clear()
