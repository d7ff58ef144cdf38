"""The arguments of ``codec eval`` / ``tools/eval_rd.py`` (argparse only: ``codec --help`` loads no model code)."""

import argparse


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", required=True, help="codec run directory or bundled name ('image', 'audio')")
    ap.add_argument(
        "--prior",
        default="auto",
        help="entropy model: a prior or context model directory or bundled name, 'auto' (MODEL/context, else "
        "MODEL/prior) or 'none' (packed)",
    )
    ap.add_argument("--data", required=True, help="folder of held-out images or audio, scanned recursively")
    ap.add_argument(
        "--quantizers",
        type=int,
        nargs="+",
        metavar="N",
        help="residual level counts to evaluate (default: images every count from 1 to the model's; audio the "
        "counts closest to 1.5, 3 and 6 kbps bit-packed)",
    )
    ap.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="STEPS",
        help="encode with STEPS steps of encoder-side search (codec encode --refine); default 0",
    )
    ap.add_argument("--limit", type=int, help="at most this many files")
    ap.add_argument("--opus-kbps", type=float, nargs="+", default=[6.0, 9.0, 12.0], help="Opus bitrates (audio)")
    ap.add_argument("--speech", action="store_true", help="audio: every file is speech (PESQ and STOI on all)")
    ap.add_argument("--out", default="bench_results/rd", help="output path without extension")
