"""The ``codec`` command line: ``main`` (returns the exit status) and ``run`` (the console script), one module per
group of subcommands. The top layer: it may import every other one, and nothing imports it."""

from codec.cli.main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
