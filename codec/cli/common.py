"""What every subcommand module of the CLI shares: the program name, one-line errors, output and argument types."""

import argparse
import importlib
import sys
from typing import NoReturn

PROG = "codec"


def fatal(msg: str) -> NoReturn:
    """Print ``codec: error: msg`` on one line to stderr and exit with status 2."""
    print(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``codec: error: ...`` line too (status 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        fatal(f"{message} (see '{self.prog} --help')")


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``codec: warning: ...`` line, written around the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars and no report lines: errors and warnings only"
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal (a script capturing stderr gets just the error lines), never with --quiet."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def report(args: argparse.Namespace, line: str) -> None:
    """An informational line on stdout (around a progress bar), unless --quiet."""
    if not getattr(args, "quiet", False):
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)


def plural(n: int, noun: str) -> str:
    """ "1 level", "3 levels"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _checked_int(module: str, check: str, name: str, parser_name: str):
    """An argparse type: an int that ``module.check`` accepts (its ValueError, less the leading ``name``, as the
    message). The module is imported when an argument is parsed, so ``codec --help`` loads no torch.
    ``parser_name`` is what argparse calls it in "invalid ... value" when the text is not a number."""

    def parse(text: str) -> int:
        value = int(text)
        try:
            return getattr(importlib.import_module(module), check)(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{name} ")) from None

    parse.__name__ = parser_name
    return parse


# --refine: steps of encoder-side search, 0 to codec.core.refine.MAX_REFINE_STEPS
refine_steps = _checked_int("codec.core.refine", "check_refine", "refine", "refine_steps")
# --margin: pixels of replicated edge, 0 to codec.core.windows.MAX_MARGIN
margin_pixels = _checked_int("codec.core.windows", "check_margin", "margin", "margin_pixels")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def bitrate(text: str) -> float:
    """--bitrate: bits per second from "3kbps", "3k", "3000" (``codec.bitstream.rate.parse_bitrate``)."""
    from codec.bitstream.rate import parse_bitrate  # numpy, not at `codec --help`

    try:
        return parse_bitrate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
