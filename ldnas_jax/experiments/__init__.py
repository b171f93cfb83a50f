"""Experiments around the method: the transfer check and the paper's protocol.

* Transfer as ground truth for "closest": :func:`fine_tune`, :func:`train_from_scratch`,
  :func:`transfer_check`, :func:`spearman`, :func:`summarize_transfer`.
* The paper's protocol: :func:`distance_tables` over seeds, :func:`search_comparison`
  (Tables 1–2) and :func:`train_hand_designed`.
"""

from ldnas_jax.experiments._reproduce import (
    DEFAULT_DISTANCES,
    HAND_DESIGNED,
    DistanceTables,
    EpsilonOptions,
    distance_tables,
    search_comparison,
    train_hand_designed,
)
from ldnas_jax.experiments._transfer import (
    FineTuneBudget,
    FineTuneResult,
    TargetTransfer,
    fine_tune,
    spearman,
    summarize_transfer,
    train_from_scratch,
    transfer_check,
)

__all__ = [
    "DEFAULT_DISTANCES",
    "HAND_DESIGNED",
    "DistanceTables",
    "EpsilonOptions",
    "FineTuneBudget",
    "FineTuneResult",
    "TargetTransfer",
    "distance_tables",
    "fine_tune",
    "search_comparison",
    "spearman",
    "summarize_transfer",
    "train_from_scratch",
    "train_hand_designed",
    "transfer_check",
]
