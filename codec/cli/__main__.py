"""``python -m codec.cli``: the ``codec`` command line (what ``accelerate launch -m codec.cli`` runs)."""

from codec.cli.main import run

run()
