"""Command-line entry points; each module holds one command's run function."""
