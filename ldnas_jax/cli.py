"""The ``python -m ldnas_jax`` command line: one subcommand per job."""

import argparse
import importlib
import sys

# subcommand -> (module under ldnas_jax.commands, one-line help)
COMMANDS = {
    "demo": (
        "demo",
        "Algorithm 1 end to end on the embedded default: zoo, distances, search, final training",
    ),
    "distances": (
        "distances",
        "train one ε-network per task and write the K×K log-det distance table",
    ),
    "reproduce": (
        "reproduce",
        "the paper's protocol: distance tables over seeds, then Tables 1-2 for T3 and T6",
    ),
    "transfer-check": (
        "transfer_check",
        "rank baselines by fine-tuning transfer and correlate with each task distance",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ldnas_jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = importlib.import_module(f"ldnas_jax.commands.{module}")
        command.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"ldnas_jax.commands.{COMMANDS[args.command][0]}")
    module.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
