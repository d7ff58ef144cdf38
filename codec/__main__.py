"""``python -m codec``: the ``codec`` command line."""

from codec.cli import run

run()
