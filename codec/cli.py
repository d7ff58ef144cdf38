"""The ``codec`` command line (also ``python -m codec``).

Each subcommand is an ``add_<name>(subparsers)`` function that declares its arguments and a
``cmd_<name>(args)`` function that runs it (``set_defaults(func=...)``); it returns an exit status, or
anything else for 0. ``build_parser`` registers every subcommand. ``main`` turns the errors a user can
cause (bad files, bad settings, missing or unwritable paths) into one line on stderr and exit status 2,
never a traceback.
"""

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from codec.errors import VQCodecError

PROG = "codec"

TRAIN_EPILOG = """\
examples:
  codec train --modality image --data photos/ --out runs/img
  codec train --modality audio --data speech/ --out runs/speech --config small.json --steps 20000
  codec train --modality image --data photos/ --out runs/img --resume --steps 200000
  codec train --modality image --data photos/ --out runs/img-ft --init image --steps 2000 --lr 1e-4
  accelerate launch --multi_gpu --num_processes 4 -m codec.cli train --modality image --data photos/ --out runs/img
  torchrun --nproc-per-node 2 -m codec.cli train --modality audio --data speech/ --out runs/speech

--config FILE is a JSON object with optional "codec" and "train" sections; each is a partial dict that
overrides the defaults (or, with --resume, the run's saved settings), e.g.
  {"codec": {"base_channels": 32, "quantizer": {"codebook_size": 512}}, "train": {"batch_size": 8}}
Command-line flags override the file. With --resume only steps, eval_every, eval_items, sample_items,
checkpoint_every, log_every, num_workers and mixed_precision may change.
"""


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


def fatal(msg: str) -> NoReturn:
    """Print ``codec: error: msg`` on one line to stderr and exit with status 2."""
    print(f"{PROG}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    sys.exit(2)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``codec: warning: ...`` line, written around the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"{PROG}: warning: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ train
def add_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a codec on a folder of images or audio files",
        description="Train a codec on a folder of images or audio files (CPU, GPU, or many of them through "
        "accelerate launch / torchrun). Writes checkpoints, metrics.jsonl and samples/ into the run directory.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--modality", required=True, choices=("image", "audio"), help="what the data folder holds")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of media files, scanned recursively")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory for checkpoints and logs")
    p.add_argument("--config", metavar="FILE", help='JSON file with optional "codec" and "train" sections')
    p.add_argument("--steps", type=int, metavar="N", help="total optimizer steps (default 100000)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in RUN_DIR")
    p.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop after about M minutes of this call's wall time (evaluated and checkpointed; --resume goes on)",
    )
    p.add_argument(
        "--init",
        metavar="MODEL",
        help="start from a trained codec's weights (run directory or bundled name, e.g. image): fine-tuning "
        "with a fresh optimizer; its config is the base of the codec section",
    )
    p.add_argument("--batch-size", type=int, metavar="N", help="items per process and micro-batch (default 16)")
    p.add_argument("--lr", type=float, metavar="LR", help="peak learning rate (default 3e-4)")
    p.add_argument(
        "--mixed-precision", choices=("no", "fp16", "bf16"), help="autocast precision (default no; fp16 needs CUDA)"
    )
    p.add_argument("--seed", type=int, help="seed of the whole run (default 0)")
    p.add_argument("--num-workers", type=int, metavar="N", help="DataLoader worker processes (default 0)")
    p.add_argument("--val-fraction", type=float, metavar="F", help="share of files held out (default 0.05)")
    p.set_defaults(func=cmd_train)


def read_config_file(path: str | Path) -> dict:
    """The sections of a --config file: {"codec": {...}, "train": {...}}, each optional."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict) or set(data) - {"codec", "train"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f'{path}: expected a JSON object with optional "codec" and "train" sections, got {keys}')
    for name, section in data.items():
        if not isinstance(section, dict):
            raise ValueError(f'{path}: the "{name}" section must be a JSON object')
    return data


def cmd_train(args: argparse.Namespace) -> int:
    from codec.train import resolve_configs, train  # torch and accelerate load only when needed

    sections = read_config_file(args.config) if args.config else {}
    flags = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "mixed_precision": args.mixed_precision,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "val_fraction": args.val_fraction,
        "max_minutes": args.max_minutes,
    }
    train_overrides = {**sections.get("train", {}), **{k: v for k, v in flags.items() if v is not None}}
    init = None
    if args.init:  # loaded once, for its config and then its weights
        from codec import load

        init = load(args.init, device="cpu")
    codec_config, train_config = resolve_configs(
        args.modality,
        args.out,
        resume=args.resume,
        codec_overrides=sections.get("codec"),
        train_overrides=train_overrides,
        init=init,
    )
    metrics = train(args.modality, args.data, args.out, codec_config, train_config, resume=args.resume, init=init)
    if int(os.environ.get("RANK", "0")) == 0:  # one summary line, from the main process
        print(json.dumps(metrics))
    return 0


def add_eval(subparsers) -> None:
    from codec.evaluate import build_parser as build_eval_parser

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
    build_eval_parser(p)

    def cmd_eval(args):
        from codec.evaluate import run

        try:
            return run(args)
        except SystemExit as e:  # the tool's own one-line errors
            if isinstance(e.code, str):
                fatal(e.code)
            raise

    p.set_defaults(func=cmd_eval)


# ------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="vqcodec: VQ-VAE neural codecs for images and audio.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from codec.cli_files import add_subcommands as add_file_subcommands  # encode, decode, info

    add_file_subcommands(subparsers)
    add_train(subparsers)
    from prior.cli import add_subcommands as add_prior_subcommands  # tokenize, train-prior, sample

    add_prior_subcommands(subparsers)
    add_eval(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``codec`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        status = args.func(args)
    except (VQCodecError, ValueError, OSError) as e:  # OSError: missing or unwritable paths
        fatal(str(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0  # a command may return its result instead of a status


if __name__ == "__main__":
    sys.exit(main())
