"""Counting XLA compilations through ``jax.monitoring``."""

import contextlib

import jax

# JAX records this event once per program handed to the XLA compiler (cache hits excluded):
# "/jax/core/compile/backend_compile_duration" in JAX 0.10 (the prefix moved between versions).
BACKEND_COMPILE_SUFFIX = "/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    """Yields a list that collects one entry per XLA compilation inside the block."""
    compiled = []

    def listener(event, duration, **kwargs):
        if event.endswith(BACKEND_COMPILE_SUFFIX):
            compiled.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
