"""How each F_{b,t} is estimated and how d[b, t] is computed from it, as typed options.

* :class:`FisherOptions`: the estimator, the label route for unequal heads, the examples
  and chunk size of each Fisher, and the engine. These decide every F_{b,t}.
* :class:`DistanceOptions`: the same Fisher fields, flat, plus eq. 2's σ and normalisation.
  Flat so that a user writes ``DistanceOptions(estimator="sampled", sigma=1e-2)``;
  :attr:`DistanceOptions.fisher` gives the :class:`FisherOptions` part.

Both are checked by :func:`check_fisher_options` and :func:`check_distance_options` before
anything is trained or computed, so a typo costs nothing.
"""

from typing import NamedTuple

from ldnas_jax._checks import check_int, check_positive
from ldnas_jax.distances import DEFAULT_NORMALIZE, DEFAULT_SIGMA, NORMALIZATIONS
from ldnas_jax.fisher import ESTIMATORS, METHODS

LABEL_MODES = ("pad", "predicted")
# N_b's own predicted labels: on E0–E7 (3 seeds) they put a same-domain task closest for 6.0 of
# 8 targets at the default normalisation, zero-padding for 1.7; the planners' outside check of
# the paper's eq. 2 used them too (docs/distance_validation.json, benchmarks.distance_validation).
DEFAULT_LABEL_MODE = "predicted"
DEFAULT_ESTIMATOR = "empirical"
# Examples per Fisher and per chunk of the per-example gradients.
DEFAULT_MAX_EXAMPLES = 512
DEFAULT_CHUNK_SIZE = 64


class FisherOptions(NamedTuple):
    """How F_{b,t}, network N_b's diagonal Fisher on target t's data, is estimated.

    Attributes:
      estimator: ``"empirical"`` (target labels, paper eq. 1), ``"sampled"`` or
        ``"exact"`` (N_b's own predictive distribution; no labels), see
        :func:`ldnas_jax.fisher_diagonal`.
      label_mode: the empirical estimator's route when N_b's head is smaller than
        the target's labels: ``"pad"`` (zero logits, the authors') or
        ``"predicted"`` (N_b's predicted labels).
      max_examples: the first n target examples (None: all).
      chunk_size: examples per chunk of per-example gradients (bounds memory).
      method: the engine, ``"auto"``, ``"vmap"`` or ``"layerwise"``; all give one number.

    Example:
      >>> FisherOptions(estimator="sampled").label_mode
      'predicted'
    """

    estimator: str = DEFAULT_ESTIMATOR
    label_mode: str = DEFAULT_LABEL_MODE
    max_examples: int | None = DEFAULT_MAX_EXAMPLES
    chunk_size: int | None = DEFAULT_CHUNK_SIZE
    method: str = "auto"


class DistanceOptions(NamedTuple):
    """How d[b, t] is computed: the Fisher fields of :class:`FisherOptions` and eq. 2's.

    Attributes:
      estimator, label_mode, max_examples, chunk_size, method: see :class:`FisherOptions`.
      sigma: σ of eq. 2 (> 0); see :func:`ldnas_jax.log_det_distance`.
      normalize: None, or ``"sum"`` to divide each Fisher by its total first.

    Example:
      >>> options = DistanceOptions(estimator="sampled", sigma=1e-2)
      >>> options.fisher.estimator, options.sigma
      ('sampled', 0.01)
    """

    estimator: str = DEFAULT_ESTIMATOR
    label_mode: str = DEFAULT_LABEL_MODE
    sigma: float = DEFAULT_SIGMA
    normalize: str | None = DEFAULT_NORMALIZE
    max_examples: int | None = DEFAULT_MAX_EXAMPLES
    chunk_size: int | None = DEFAULT_CHUNK_SIZE
    method: str = "auto"

    @property
    def fisher(self) -> FisherOptions:
        """The fields that decide each F_{b,t}."""
        return FisherOptions(
            self.estimator, self.label_mode, self.max_examples, self.chunk_size, self.method
        )


def check_fisher_options(options: FisherOptions | DistanceOptions) -> FisherOptions:
    """The Fisher fields of ``options``, checked; raises naming the bad field.

    Example:
      >>> check_fisher_options(DistanceOptions(max_examples=16)).max_examples
      16
    """
    if not isinstance(options, (FisherOptions, DistanceOptions)):
        raise TypeError(
            f"options must be a FisherOptions or DistanceOptions, got {type(options).__name__}"
        )
    fisher = options.fisher if isinstance(options, DistanceOptions) else options
    if fisher.estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {fisher.estimator!r}; choose one of {ESTIMATORS}")
    if fisher.label_mode not in LABEL_MODES:
        raise ValueError(f"unknown label_mode {fisher.label_mode!r}; choose one of {LABEL_MODES}")
    if fisher.method not in METHODS:
        raise ValueError(f"unknown method {fisher.method!r}; choose one of {METHODS}")
    for name in ("max_examples", "chunk_size"):
        if getattr(fisher, name) is not None:
            check_int(getattr(fisher, name), name=name)
    return fisher


def check_distance_options(options: DistanceOptions) -> DistanceOptions:
    """Returns ``options`` with σ as a float, or raises naming the bad field.

    Checked before any training, so a typo does not cost the ε-networks' epochs.

    Example:
      >>> check_distance_options(DistanceOptions(sigma=1)).sigma
      1.0
    """
    if not isinstance(options, DistanceOptions):
        raise TypeError(f"distance must be a DistanceOptions, got {type(options).__name__}")
    check_fisher_options(options)
    if options.normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize={options.normalize!r}; choose one of {NORMALIZATIONS}")
    return options._replace(sigma=check_positive(options.sigma, name="sigma"))


def fisher_options(
    options: FisherOptions | DistanceOptions | None = None, **fields
) -> FisherOptions:
    """The Fisher fields of ``options`` (default :class:`FisherOptions`), ``fields`` replaced.

    Checked as :func:`check_fisher_options`.

    Raises:
      TypeError: a field that :class:`FisherOptions` does not have.

    Example:
      >>> fisher_options(DistanceOptions(sigma=0.5), estimator="exact").estimator
      'exact'
    """
    _check_fields(FisherOptions, fields)
    options = FisherOptions() if options is None else options
    if not isinstance(options, FisherOptions):
        options = check_fisher_options(options)  # a DistanceOptions' Fisher part; else TypeError
    return check_fisher_options(options._replace(**fields))


def distance_options(options: DistanceOptions | None = None, **fields) -> DistanceOptions:
    """``options`` (default :class:`DistanceOptions`) with ``fields`` replaced, checked.

    Lets a function take typed options and keyword overrides alike.

    Raises:
      TypeError: a field that :class:`DistanceOptions` does not have.

    Example:
      >>> distance_options(DistanceOptions(sigma=0.5), label_mode="pad")[:3]
      ('empirical', 'pad', 0.5)
    """
    _check_fields(DistanceOptions, fields)
    options = DistanceOptions() if options is None else options
    if not isinstance(options, DistanceOptions):
        raise TypeError(f"options must be a DistanceOptions, got {type(options).__name__}")
    return check_distance_options(options._replace(**fields))


def _check_fields(kind: type, fields: dict) -> None:
    unknown = sorted(set(fields) - set(kind._fields))
    if unknown:
        raise TypeError(
            f"unknown {kind.__name__} field(s) {unknown}; the fields are {list(kind._fields)}"
        )
