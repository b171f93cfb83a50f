"""Command-line entry points; each module holds one command's run function."""

from ldnas_jax.commands._compile_cache import enable_compilation_cache
from ldnas_jax.commands._errors import RUN_ERRORS, USER_ERRORS, UsageError
from ldnas_jax.commands._options import states_default
from ldnas_jax.commands._text import show

__all__ = [
    "RUN_ERRORS",
    "USER_ERRORS",
    "UsageError",
    "enable_compilation_cache",
    "show",
    "states_default",
]
