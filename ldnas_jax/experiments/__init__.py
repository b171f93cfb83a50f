"""Experiments around the method: the transfer check and the paper's protocol.

* Transfer as ground truth for "closest": :func:`fine_tune`, :func:`train_from_scratch`
  (``_fine_tune``), :func:`transfer_check`, :func:`summarize_transfer` (``_transfer``),
  with :func:`spearman` (``_ranks``) and :func:`replace_head` (``_heads``).
* The paper's protocol: :func:`distance_tables` over seeds, :func:`build_task_zoo` from their
  networks, :func:`search_comparison` (Tables 1–2), :func:`train_hand_designed` and
  :func:`device_info` (``_reproduce``).
* The premise, "the closest task's space gives the better network": :func:`space_check`,
  its statistics :func:`space_summary`, :func:`distance_verdicts` and
  :func:`distance_contrasts` (each distance against the default, paired), and the controls
  :func:`control_spaces` and :func:`control_contrasts` (the pick minus each control, paired),
  the report of a run so far :func:`space_check_so_far`, the check over recorded spaces
  without a zoo :func:`space_check_of_spaces` (``_space_check``); test scores
  :func:`scores_on_test` and :func:`balanced_accuracy` (``_scores``).
"""

from ldnas_jax.experiments._fine_tune import (
    FineTuneBudget,
    FineTuneResult,
    fine_tune,
    train_from_scratch,
)
from ldnas_jax.experiments._heads import head_paths, replace_head
from ldnas_jax.experiments._ranks import average_ranks, spearman, transfer_ranking
from ldnas_jax.experiments._reproduce import (
    DEFAULT_DISTANCES,
    HAND_DESIGNED,
    DistanceTables,
    EpsilonOptions,
    build_task_zoo,
    device_info,
    distance_tables,
    paper_targets,
    search_comparison,
    train_epsilon_network,
    train_hand_designed,
)
from ldnas_jax.experiments._scores import balanced_accuracy, scores_on_test
from ldnas_jax.experiments._space_check import (
    SPACE_CHECK_DISTANCES,
    control_contrasts,
    control_spaces,
    distance_contrasts,
    distance_verdicts,
    fuse_then_train,
    space_check,
    space_check_of_spaces,
    space_check_report,
    space_check_so_far,
    space_summary,
)
from ldnas_jax.experiments._transfer import (
    SIGN_CONVENTION,
    TargetTransfer,
    full_log_det_table,
    summarize_transfer,
    transfer_check,
    transfer_distances,
    transfer_from_json,
    transfer_statistics,
    transfer_targets,
)

__all__ = [
    "DEFAULT_DISTANCES",
    "HAND_DESIGNED",
    "SIGN_CONVENTION",
    "SPACE_CHECK_DISTANCES",
    "DistanceTables",
    "EpsilonOptions",
    "FineTuneBudget",
    "FineTuneResult",
    "TargetTransfer",
    "average_ranks",
    "balanced_accuracy",
    "build_task_zoo",
    "control_contrasts",
    "control_spaces",
    "device_info",
    "distance_tables",
    "distance_contrasts",
    "distance_verdicts",
    "fine_tune",
    "full_log_det_table",
    "fuse_then_train",
    "head_paths",
    "paper_targets",
    "replace_head",
    "scores_on_test",
    "search_comparison",
    "space_check",
    "space_check_of_spaces",
    "space_check_report",
    "space_check_so_far",
    "space_summary",
    "spearman",
    "summarize_transfer",
    "train_epsilon_network",
    "train_from_scratch",
    "train_hand_designed",
    "transfer_check",
    "transfer_distances",
    "transfer_from_json",
    "transfer_ranking",
    "transfer_statistics",
    "transfer_targets",
]
