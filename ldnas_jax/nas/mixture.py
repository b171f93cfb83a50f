"""The FUSE relaxation: a softmax(alpha)-weighted mixture of candidate networks."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldnas_jax.nas.cell import Skeleton
from ldnas_jax.nas.genotype import Genotype

__all__ = [
    "ALPHA_COLLECTION",
    "CandidateMixture",
    "candidate_params",
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


def candidate_params(params, index: int):
    """The ``Skeleton`` parameters of candidate ``index`` inside mixture ``params``.

    Example:
      >>> # skeleton.apply({"params": candidate_params(params, 0)}, x)
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
