"""The registry of data sources.

A source is a callable `loader(split) -> (images, labels)` with split "train" or "test";
images are uint8 in [0, 255] or float in [0, 1], shaped (N, H, W, C) (or (N, H, W)), labels
are integers (N,). Built-in sources are created on first use: "mnist" and "cifar10" read
TFDS at 32x32x3 (downloaded once; without a network and not yet prepared they raise a
DataSourceError at once), "embedded_digits" and "embedded_objects" are generated and need
nothing. `register_source(name, ..., overwrite=True)` points a built-in name at local files.
"""

from collections.abc import Callable

from ldnas_jax.data.digits import embedded_digits
from ldnas_jax.data.objects import embedded_objects
from ldnas_jax.data.splits import Loader
from ldnas_jax.data.tfds_loader import tfds_source

__all__ = ["register_source", "get_source", "list_sources"]

_SOURCES: dict[str, Loader] = {}
# Built-ins are made on first use so that importing the package reads nothing.
_BUILTINS: dict[str, Callable[[], Loader]] = {
    "mnist": lambda: tfds_source("mnist"),
    "cifar10": lambda: tfds_source("cifar10"),
    "embedded_digits": lambda: embedded_digits,
    "embedded_objects": lambda: embedded_objects,
}


def register_source(name: str, loader: Loader, *, overwrite: bool = False) -> None:
    """Registers `loader` as the data source called `name`.

    Args:
      name: source name, referred to by `Task.source`.
      loader: callable `loader(split) -> (images, labels)` for split "train" and "test".
      overwrite: replace an existing source (built-ins included) instead of raising.

    Example:
      >>> import numpy as np
      >>> def tiny(split):
      ...   return np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1])
      >>> register_source("tiny_zeros", tiny, overwrite=True)
      >>> get_source("tiny_zeros") is tiny
      True
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"source name must be a non-empty str; got {name!r}")
    if not callable(loader):
        raise TypeError(f"loader for source {name!r} must be callable; got {type(loader).__name__}")
    if name in list_sources() and not overwrite:
        raise ValueError(
            f"source {name!r} is already registered; pass overwrite=True to replace it"
        )
    _SOURCES[name] = loader


def get_source(name: str) -> Loader:
    """Returns the loader of the data source called `name`.

    Example:
      >>> x, y = get_source("embedded_digits")("test")
      >>> x.shape
      (1000, 32, 32, 3)
    """
    if not isinstance(name, str):
        raise TypeError(f"source name must be a str; got {type(name).__name__}")
    if name not in _SOURCES:
        if name not in _BUILTINS:
            raise ValueError(f"unknown source {name!r}; known: {', '.join(list_sources())}")
        _SOURCES[name] = _BUILTINS[name]()
    return _SOURCES[name]


def list_sources() -> list[str]:
    """Names of all data sources, built-ins included, sorted.

    Example:
      >>> "embedded_objects" in list_sources()
      True
    """
    return sorted(set(_SOURCES) | set(_BUILTINS))
