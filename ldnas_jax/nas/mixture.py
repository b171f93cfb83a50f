"""The FUSE relaxation: a softmax(alpha)-weighted mixture of candidate networks.

:class:`CandidateMixture` describes a mixture as a linen module of one
``Skeleton`` per candidate. FUSE trains the same mixture in its switch layout
(:func:`mixture_layout`): ``slots`` copies of the search space's
:class:`~ldnas_jax.nas.SwitchSkeleton`, each told its candidate by an integer
array, so that one compiled program serves every candidate set of a space.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ldnas_jax.nas.cell import Skeleton
from ldnas_jax.nas.genotype import Genotype
from ldnas_jax.nas.operations import check_operation_names, registered_operations
from ldnas_jax.nas.switch import SwitchSkeleton, genotype_choices, switch_network

__all__ = [
    "ALPHA_COLLECTION",
    "CandidateMixture",
    "candidate_params",
    "mixture_layout",
    "mixture_logits",
    "mixture_variables",
    "split_mixture_variables",
]

# alpha lives in its own collection so FUSE can differentiate and optimise it
# separately from the network weights in "params".
ALPHA_COLLECTION = "alpha"
_ALPHA_NAME = "alpha"


class CandidateMixture(nn.Module):
    """c̄(x) = Σ_c softmax(α)_c · logits_c(x), the relaxed output of paper eq. 4.

    Holds one ``Skeleton`` per candidate (parameters under ``candidates_<i>``) and
    α of shape (C,) in the ``'alpha'`` collection, initialised to zeros so every
    candidate starts with weight 1 / C. The logits of the candidates are mixed.

    Attributes:
      genotypes: the candidates, at least one.
      num_classes: size of the logits.
      channels, num_cells, reduction_positions: passed to every ``Skeleton``.
      operations: the operations every edge holds in FUSE's switch layout
        (:func:`mixture_layout`); default: those the candidates use. Give the
        search space's, so that every candidate set of the space shares one
        compiled program.
      slots: candidate places in the switch layout, at least ``len(genotypes)``;
        unused places carry no weight. Default: ``len(genotypes)``.

    Example:
      >>> g = Genotype(("identity", "sep_conv_3x3", "max_pool_3x3"), num_nodes=3)
      >>> h = Genotype(("zero", "zero", "zero"), num_nodes=3)
      >>> mix = CandidateMixture((g, h), num_classes=2, channels=4, num_cells=1)
      >>> variables = mix.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
      >>> variables["alpha"]["alpha"]
      Array([0., 0.], dtype=float32)
    """

    genotypes: tuple[Genotype, ...]
    num_classes: int
    channels: int = 16
    num_cells: int = 3
    reduction_positions: Sequence[int] | None = None
    operations: tuple[str, ...] | None = None
    slots: int | None = None

    def setup(self):
        if len(self.genotypes) == 0:
            raise ValueError("CandidateMixture needs at least one candidate genotype")
        for g in self.genotypes:
            if not isinstance(g, Genotype):
                raise TypeError(f"candidates must be Genotype instances, got {type(g).__name__}")
        self.candidates = [
            Skeleton(g, self.num_classes, self.channels, self.num_cells, self.reduction_positions)
            for g in self.genotypes
        ]
        self.alpha = self.variable(
            ALPHA_COLLECTION, _ALPHA_NAME, jnp.zeros, (len(self.genotypes),), jnp.float32
        )

    def candidate_logits(self, x, train: bool = False):
        """Logits of every candidate, stacked to (C, B, num_classes)."""
        return jnp.stack([candidate(x, train=train) for candidate in self.candidates])

    def __call__(self, x, train: bool = False):
        weights = jax.nn.softmax(self.alpha.value)
        return jnp.einsum("c,cbk->bk", weights, self.candidate_logits(x, train=train))


def mixture_layout(mixture: CandidateMixture) -> tuple[SwitchSkeleton, np.ndarray, np.ndarray]:
    """FUSE's switch layout of a mixture: ``(network, choices, active)``.

    ``network`` is the :class:`~ldnas_jax.nas.SwitchSkeleton` of the mixture's
    operations; ``choices`` (slots, 2, num_edges) holds each candidate's
    genotype as operation indices (:func:`~ldnas_jax.nas.genotype_choices`),
    and ``active`` (slots,) marks the places that hold a candidate.

    Example:
      >>> g = Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
      >>> mix = CandidateMixture((g,), num_classes=2, slots=2)
      >>> network, choices, active = mixture_layout(mix)
      >>> network.operations, choices.shape, active.tolist()
      (('identity', 'max_pool_3x3'), (2, 2, 3), [True, False])
    """
    genotypes = tuple(mixture.genotypes)
    if not genotypes:
        raise ValueError("CandidateMixture needs at least one candidate genotype")
    for g in genotypes:
        if not isinstance(g, Genotype):
            raise TypeError(f"candidates must be Genotype instances, got {type(g).__name__}")
    if len({g.num_nodes for g in genotypes}) != 1:
        raise ValueError("the candidates of one mixture must have the same number of nodes")
    if mixture.operations is None:
        used = {op for g in genotypes for op in g.operations}
        operations = tuple(op for op in registered_operations() if op in used)
    else:
        operations = check_operation_names(mixture.operations)
    slots = len(genotypes) if mixture.slots is None else mixture.slots
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < len(genotypes):
        raise ValueError(f"slots must be an int >= the {len(genotypes)} candidates, got {slots!r}")
    network = switch_network(
        operations,
        mixture.num_classes,
        num_nodes=genotypes[0].num_nodes,
        channels=mixture.channels,
        num_cells=mixture.num_cells,
        reduction_positions=mixture.reduction_positions,
    )
    choices = np.zeros(
        (slots, 2, genotypes[0].num_nodes * (genotypes[0].num_nodes - 1) // 2), np.int32
    )
    for c, g in enumerate(genotypes):
        choices[c] = genotype_choices(g, operations)
    active = np.arange(slots) < len(genotypes)
    return network, choices, active


def mixture_logits(network: SwitchSkeleton, params, choices, active, alpha, x) -> jax.Array:
    """c̄(x) = Σ_c softmax(α)_c · logits_c(x) over the active places of a switch layout.

    ``params`` are the places' switch weights stacked on a leading axis. Places
    run one after another in a ``lax.scan`` (one copy of the network in the
    program, whatever the number of places); inactive ones are skipped and
    weigh nothing.

    Example:
      >>> g = Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
      >>> net, choices, active = mixture_layout(
      ...     CandidateMixture((g,), num_classes=2, channels=4, num_cells=1, slots=2))
      >>> from ldnas_jax.nas.switch import switch_init
      >>> x = jnp.ones((3, 8, 8, 3))
      >>> params = switch_init(net, jax.random.key(0), x, slots=2)
      >>> mixture_logits(net, params, choices, active, jnp.zeros(2), x).shape
      (3, 2)
    """
    blank = jnp.zeros((x.shape[0], network.num_classes), x.dtype)

    def place(carry, slot):
        weights, choice, on = slot
        logits = jax.lax.cond(
            on, lambda: network.apply({"params": weights}, x, choice), lambda: blank
        )
        return carry, logits

    _, logits = jax.lax.scan(place, None, (params, choices, active))
    mix = jax.nn.softmax(jnp.where(active, alpha, -jnp.inf))
    return jnp.einsum("c,cbk->bk", mix, logits)


def candidate_params(params, index: int):
    """The ``Skeleton`` parameters of candidate ``index`` inside mixture ``params``.

    ``params`` are ``CandidateMixture.init``'s. FUSE's own weights are in the
    switch layout; :func:`~ldnas_jax.nas.genotype_params` selects a candidate's.

    Example:
      >>> g = Genotype(("identity", "max_pool_3x3", "identity"), num_nodes=3)
      >>> mix = CandidateMixture((g, g), num_classes=2, channels=4, num_cells=1)
      >>> x = jnp.ones((1, 8, 8, 3))
      >>> params, _ = split_mixture_variables(mix.init(jax.random.key(0), x))
      >>> net = Skeleton(g, 2, channels=4, num_cells=1)
      >>> net.apply({"params": candidate_params(params, 1)}, x).shape
      (1, 2)
    """
    name = f"candidates_{index}"
    if name not in params:
        count = sum(1 for k in params if str(k).startswith("candidates_"))
        raise ValueError(f"no candidate {index!r}: the mixture has {count} candidates")
    return params[name]


def mixture_variables(params, alpha) -> dict:
    """The variables dict that ``CandidateMixture.apply`` expects.

    Example:
      >>> sorted(mixture_variables({}, jnp.zeros(2)))
      ['alpha', 'params']
    """
    return {"params": params, ALPHA_COLLECTION: {_ALPHA_NAME: alpha}}


def split_mixture_variables(variables):
    """Inverse of ``mixture_variables``: returns ``(params, alpha)``.

    Example:
      >>> split_mixture_variables(mixture_variables({}, jnp.zeros(2)))[1]
      Array([0., 0.], dtype=float32)
    """
    try:
        return variables["params"], variables[ALPHA_COLLECTION][_ALPHA_NAME]
    except (KeyError, TypeError) as error:
        raise ValueError(
            "expected CandidateMixture variables {'params': ..., 'alpha': {'alpha': ...}}, "
            f"missing {error}"
        ) from None
