"""Placeholder while ``reproduce`` is being written this session."""


def add_arguments(parser):
    pass


def run(args):
    raise SystemExit("reproduce: not implemented yet")
