"""``python -m codec.cli``: the ``codec`` command line (what ``accelerate launch -m codec.cli`` runs)."""

import sys

from codec.cli.main import main

sys.exit(main())
