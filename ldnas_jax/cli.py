"""The command line: ``ldnas COMMAND`` or ``python -m ldnas_jax COMMAND``, one subcommand per job.

Each command module has ``add_arguments(parser)``, ``check(args) -> plan`` (validates every
argument and reads its inputs, writes nothing) and ``execute(plan)``. :func:`main` runs the
two in turn; a user error (a bad argument, an unknown task or model, a run directory that
does not fit) ends in one line on stderr, ``error: ...``, and exit status 2.
"""

import argparse
import importlib
import sys
from pathlib import Path

from ldnas_jax.commands import (
    RUN_ERRORS,
    USER_ERRORS,
    UsageError,
    enable_compilation_cache,
    show,
    states_default,
)
from ldnas_jax.run_info import package_version

DESCRIPTION = (
    "Neural architecture search guided by log-determinant Fisher task distances (LD-NAS). "
    "Each command writes JSON and pictures to its --out directory; "
    "'COMMAND --help' describes its flags."
)

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
    "zoo": (
        "zoo",
        "build a zoo of baseline tasks: ε-networks and searched architectures with a quality gate",
    ),
    "space-check": (
        "space_check",
        "search every baseline's space for a target: does the closest task's space win?",
    ),
    "transfer-check": (
        "transfer_check",
        "rank baselines by fine-tuning transfer and correlate with each task distance",
    ),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints the usage and exits; here it is one line
        raise UsageError(f"{message} (see {self.prog} --help)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default after its help, unless it is off, unset, empty or already shown."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not states_default(action.default) or not action.option_strings:
            return text
        return f"{text} (default: {show(action.default)})"


def program_name() -> str:
    """``python -m ldnas_jax`` when run as a module, else ``ldnas`` (the installed script)."""
    return "python -m ldnas_jax" if Path(sys.argv[0]).name == "__main__.py" else "ldnas"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand.

    Example:
      >>> build_parser("ldnas").parse_args(["distances", "--tasks", "E0", "E1"]).tasks
      ['E0', 'E1']
    """
    parser = _Parser(prog=prog or program_name(), description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for name, (module, help_text) in COMMANDS.items():
        command = importlib.import_module(f"ldnas_jax.commands.{module}")
        doc = command.__doc__.split("\n\n", 1)[1] if "\n\n" in command.__doc__ else ""
        command.add_arguments(
            sub.add_parser(
                name,
                help=help_text,
                description=f"{help_text}.\n\n{_plain(doc)}".rstrip(),
                formatter_class=HelpFormatter,
            )
        )
    return parser


def _plain(text: str) -> str:
    """A module docstring as terminal text: RST's double backquotes and roles dropped."""
    for role in (":func:", ":class:", ":data:", ":mod:"):
        text = text.replace(role, "")
    return text.replace("``", "'").replace("`", "").replace("::\n", ":\n")


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv``, checks the command's arguments, runs it; returns the exit status.

    Example:
      >>> main(["distances", "--tasks", "E0", "E9"])  # stderr: error: unknown task 'E9'; ...
      2
    """
    try:
        args = build_parser().parse_args(argv)
        command = importlib.import_module(f"ldnas_jax.commands.{COMMANDS[args.command][0]}")
        plan = command.check(args)
    except USER_ERRORS as err:
        return _refuse(err)
    enable_compilation_cache()  # after the checks: a refused command leaves no trace
    try:
        command.execute(plan)
    except RUN_ERRORS as err:  # found while running: a saved run that does not fit
        return _refuse(err)
    return 0


def _refuse(err: Exception) -> int:
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
