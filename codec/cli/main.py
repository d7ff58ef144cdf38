"""The ``codec`` command line (also ``python -m codec``, ``python -m codec.cli``).

One registry: ``GROUPS`` lists the modules of subcommands, one per group, in the order ``codec --help`` shows
them; each has ``register(subparsers)``, which declares its subcommands with ``set_defaults(func=cmd_...)``. A
command returns an exit status, or anything else for 0. ``main`` turns the errors a user can cause (bad files, bad
settings, missing or unwritable paths) into one line on stderr and exit status 2, never a traceback.

A new command goes into the module of its group (or a new module added to ``GROUPS``). Modules here import only
argparse and light helpers at the top; a command imports what it runs inside its function, so ``codec --help``
and ``codec info`` start without loading torch.
"""

import argparse
import os
import sys
import warnings
from typing import NoReturn

from codec.cli import evaluation, files, info, sampling, training
from codec.cli.common import PROG, Parser, fatal, show_warning
from codec.errors import VQCodecError

GROUPS = (files, info, training, sampling, evaluation)  # the subcommand registry, in help order

# Commands after which the console script ends the process at once (``os._exit``) instead of tearing the
# interpreter down: their outputs are written atomically and closed when ``main`` returns, and the teardown of
# torch's operator libraries alone takes 0.3-0.5 s, a sixth of encoding a 512 px photo. Training and
# tokenizing (possibly under ``accelerate launch``) keep the normal exit and its atexit handlers.
QUICK_EXIT = frozenset({"encode", "decode", "info"})

MAIN_EPILOG = f"""\
examples:
  {PROG} encode photo.png -o photo.vqc && {PROG} decode photo.vqc -o restored.png
  {PROG} info photo.vqc
  {PROG} train --modality image --data photos/ --out runs/img
  {PROG} tokenize --codec runs/img --data photos/ --out tokens/img
  {PROG} train-prior --tokens tokens/img --out runs/img/prior    # stored with the codec: used by default
  {PROG} sample --codec runs/img --prior runs/img/prior -n 8 -o samples/

Run '{PROG} COMMAND --help' for a command's options and more examples.
Errors print one line and exit with status 2.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="vqcodec: VQ-VAE neural codecs for images and audio.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``codec`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restored afterwards, for callers of main() in Python
        warnings.showwarning = show_warning
        try:
            status = args.func(args)
        except BrokenPipeError:  # the reader of our output left (``codec info f | head -1``): not an error to report
            return _reader_gone()
        except (VQCodecError, ValueError, OSError) as e:  # OSError: missing or unwritable paths
            fatal(str(e))
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
    return status if isinstance(status, int) else 0  # a command may return its result instead of a status


def _reader_gone() -> int:
    """Exit status 141 (128 + SIGPIPE, as a shell reports a command its pipe stopped) after pointing stdout at
    /dev/null, so that the interpreter's final flush does not raise (and print) the broken pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def run() -> NoReturn:
    """The ``codec`` console script (and ``python -m codec``): ``main`` on ``sys.argv``, then exit with its status;
    quickly for the commands of ``QUICK_EXIT``, after flushing stdout and stderr."""
    argv = sys.argv[1:]
    status = main(argv)  # errors raise SystemExit(2) through here: the normal exit
    try:
        sys.stdout.flush()  # what is still buffered: a reader that left shows here
    except BrokenPipeError:
        status = _reader_gone()
    if argv and argv[0] in QUICK_EXIT:
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
