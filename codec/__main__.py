"""``python -m codec``: the ``codec`` command line."""

import sys

from codec.cli import main

sys.exit(main())
