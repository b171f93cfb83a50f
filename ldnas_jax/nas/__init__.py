"""Architecture search: operations, genotypes, search spaces, cells, FUSE and search loops."""

from ldnas_jax._checks import check_image_data as check_classification_data
from ldnas_jax._checks import check_train_val
from ldnas_jax.nas.batching import draw_batch_indices, draw_batches
from ldnas_jax.nas.cell import Cell, Skeleton, count_params, default_reduction_positions
from ldnas_jax.nas.convolution import Conv2D, DepthwiseConv2D, conv2d, depthwise_conv2d, max_pool
from ldnas_jax.nas.fuse import (
    FuseConfig,
    FuseResult,
    FuseState,
    default_alpha_optimizer,
    default_weight_optimizer,
    init_fuse_state,
    make_alpha_phase,
    make_fuse_round,
    make_weight_phase,
    mixture_loss,
    resolve_fuse_config,
    run_fuse,
)
from ldnas_jax.nas.genotype import Genotype, cell_edges, num_cell_edges, num_nodes_for_edges
from ldnas_jax.nas.mixture import (
    ALPHA_COLLECTION,
    CandidateMixture,
    candidate_params,
    mixture_layout,
    mixture_logits,
    mixture_variables,
    split_mixture_variables,
)
from ldnas_jax.nas.operations import (
    ALL_OPERATIONS,
    PAPER_RELATED_OPERATIONS,
    check_operation_names,
    make_operation,
    register_operation,
    registered_operations,
    unregister_operation,
)
from ldnas_jax.nas.search import (
    RandomSearchConfig,
    SearchResult,
    best_sample,
    fuse_search,
    random_search,
)
from ldnas_jax.nas.search_space import (
    SEARCHABLE_OPERATIONS,
    SearchSpace,
    search_space_from_genotype,
)
from ldnas_jax.nas.switch import (
    SwitchCell,
    SwitchEdge,
    SwitchSkeleton,
    genotype_choices,
    genotype_params,
    switch_init,
    switch_network,
)
from ldnas_jax.nas.training import make_train_and_evaluate
from ldnas_jax.train import cross_entropy


def __getattr__(name: str):
    # The pictures live in ldnas_jax.plots; matplotlib loads on first use, not on import.
    if name in ("plot_alpha_history", "plot_cell"):
        from ldnas_jax import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALL_OPERATIONS",
    "ALPHA_COLLECTION",
    "CandidateMixture",
    "Cell",
    "Conv2D",
    "DepthwiseConv2D",
    "FuseConfig",
    "FuseResult",
    "FuseState",
    "Genotype",
    "PAPER_RELATED_OPERATIONS",
    "SEARCHABLE_OPERATIONS",
    "RandomSearchConfig",
    "SearchResult",
    "SearchSpace",
    "Skeleton",
    "SwitchCell",
    "SwitchEdge",
    "SwitchSkeleton",
    "best_sample",
    "candidate_params",
    "cell_edges",
    "check_classification_data",
    "check_operation_names",
    "check_train_val",
    "conv2d",
    "count_params",
    "cross_entropy",
    "default_alpha_optimizer",
    "default_reduction_positions",
    "default_weight_optimizer",
    "depthwise_conv2d",
    "draw_batch_indices",
    "draw_batches",
    "fuse_search",
    "genotype_choices",
    "genotype_params",
    "init_fuse_state",
    "make_alpha_phase",
    "make_fuse_round",
    "make_operation",
    "make_train_and_evaluate",
    "make_weight_phase",
    "max_pool",
    "mixture_layout",
    "mixture_logits",
    "mixture_loss",
    "mixture_variables",
    "num_cell_edges",
    "num_nodes_for_edges",
    "plot_alpha_history",
    "plot_cell",
    "random_search",
    "register_operation",
    "registered_operations",
    "resolve_fuse_config",
    "run_fuse",
    "search_space_from_genotype",
    "split_mixture_variables",
    "switch_init",
    "switch_network",
    "unregister_operation",
]
