"""Command-line options shared by the commands that compute task distances."""

import argparse

from ldnas_jax.distances._log_det import DEFAULT_NORMALIZE, DEFAULT_SIGMA
from ldnas_jax.fisher._diagonal import ESTIMATORS
from ldnas_jax.tasks._pairs import DEFAULT_LABEL_MODE, LABEL_MODES


def add_distance_arguments(parser: argparse.ArgumentParser) -> None:
    """``--estimator``, ``--label-mode``, ``--sigma``, ``--normalize`` (see ``DistanceOptions``)."""
    parser.add_argument("--estimator", choices=ESTIMATORS, default="empirical")
    parser.add_argument(
        "--label-mode",
        choices=LABEL_MODES,
        default=DEFAULT_LABEL_MODE,
        help="how the empirical Fisher handles a head smaller than the target's labels",
    )
    parser.add_argument("--sigma", type=float, default=DEFAULT_SIGMA)
    parser.add_argument("--normalize", choices=["none", "sum"], default=DEFAULT_NORMALIZE or "none")


def add_networks_argument(parser: argparse.ArgumentParser) -> None:
    """``--networks DIR``: ε-networks reused across runs and commands, one per seed and task."""
    parser.add_argument(
        "--networks",
        default=None,
        help="directory of ε-networks: each one is loaded from DIR/seed_S/TASK when present, "
        "else trained and saved there (Orbax; default: OUT/checkpoints/networks)",
    )
