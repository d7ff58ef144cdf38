"""The ``eval`` subcommand of the ``codec`` CLI: rate-distortion evaluation against the peers (``codec.eval``)."""

import argparse

from codec.cli.common import PROG, fatal
from codec.eval.options import add_arguments  # argparse only


def register(subparsers) -> None:
    """Register ``eval``."""
    p = subparsers.add_parser(
        "eval",
        help="rate-distortion evaluation against JPEG/WebP or Opus/Vorbis",
        description="Compress a folder of held-out images or audio at each bitrate of a codec and compare with "
        "JPEG and WebP (images, matched bpp) or Opus and Vorbis (audio): PSNR / MS-SSIM, or SI-SNR, mel distance, "
        "PESQ and STOI. Writes OUT.json and OUT.png and prints a table.",
        epilog=f"examples:\n  {PROG} eval --model image --data photos/ --out results/rd_image\n"
        f"  {PROG} eval --model audio --data speech/ --speech --out results/rd_audio",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)

    def cmd_eval(args):
        from codec.eval.rd import run

        try:
            return run(args)
        except SystemExit as e:  # the tool's own one-line errors
            if isinstance(e.code, str):
                fatal(e.code)
            raise

    p.set_defaults(func=cmd_eval)
