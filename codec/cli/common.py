"""What every subcommand module of the CLI shares: the program name, ``fatal`` and argument types."""

import argparse
import sys
from typing import NoReturn

PROG = "codec"


def fatal(msg: str) -> NoReturn:
    """Print ``codec: error: msg`` on one line to stderr and exit with status 2."""
    print(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    sys.exit(2)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``codec: warning: ...`` line, written around the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"{PROG}: warning: {message}", file=sys.stderr)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
