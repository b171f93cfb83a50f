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
        _unregister(listener)


def _unregister(listener) -> None:
    # JAX before 0.8 has no public unregister; its private registry holds the same list.
    unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
    if unregister is not None:
        unregister(listener)
    else:
        from jax._src import monitoring

        monitoring._event_duration_secs_listeners.remove(listener)
