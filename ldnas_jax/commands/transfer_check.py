"""Placeholder while ``transfer_check`` is being written this session."""


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("transfer_check: not implemented yet")
