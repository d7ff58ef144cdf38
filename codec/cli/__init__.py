"""The ``codec`` command line: ``main`` (the console script), one module per group of subcommands. The top layer:
it may import every other one, and nothing imports it."""

from codec.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
