"""Budgets and stand-ins that keep a zoo build or an Algorithm 1 run to seconds on CPU."""

import jax

from ldnas_jax import nas
from ldnas_jax import zoo as zoo_module
from ldnas_jax.pipeline import FinalTraining, SearchBudget

# Compilation dominates on CPU: the fewest channels and cells, and small batches.
TINY_NETWORK = {"batch_size": 8, "channels": 4, "num_cells": 1}
# One round of each kind of every FUSE run.
ONE_ROUND_EACH = nas.FuseConfig(max_rounds=1, warmup_rounds=1, **TINY_NETWORK)


def tiny_budget(*, steps_per_round: int, final_batch_size: int) -> SearchBudget:
    """A budget of one candidate, one iteration, one round of each kind on the smallest network,
    and one epoch of final training."""
    return SearchBudget(
        fuse=ONE_ROUND_EACH._replace(steps_per_round=steps_per_round),
        num_candidates=1,
        max_iterations=1,
        final=FinalTraining(epochs=1, batch_size=final_batch_size),
    )


def tiny_architecture_search(**fields) -> nas.RandomSearchConfig:
    """The zoo's random search (``ArchitectureOptions.search``) on the smallest network."""
    return nas.RandomSearchConfig(**{**TINY_NETWORK, **fields})


def stand_in_for_the_architecture_search(monkeypatch) -> None:
    """Makes the zoo skip its architecture search: one fixed genotype stands in for it.

    For tests of what the zoo does after the search; the search would dominate their runtime.
    """
    space = nas.SearchSpace(("identity", "sep_conv_3x3"), num_nodes=2, shared_cells=True)
    genotype = space.sample(jax.random.key(0), 1)[0]
    induced = nas.search_space_from_genotype(genotype)
    monkeypatch.setattr(
        zoo_module,
        "find_task_architecture",
        lambda *a, **kw: zoo_module.TaskArchitecture(genotype, induced, 0.5, {}),
    )
