"""The prior's subcommands of the ``codec`` CLI: ``tokenize``, ``train-prior`` and ``sample``.

``codec.cli`` registers them with ``prior.cli.add_subcommands(subparsers)``; each parser's ``func`` is the
``cmd_*`` function that runs it. User mistakes raise ``VQCodecError`` subclasses or ``ValueError`` with a
one-line message, which the CLI's top level prints as ``codec: error: ...`` (exit status 2).

Run them standalone (before that wiring exists) with ``python -m prior.cli SUBCOMMAND ...``.
"""

import argparse
import math
import secrets
import sys
from pathlib import Path

import torch

TOKENIZE_EXAMPLES = """examples:
  codec tokenize --codec runs/image --data data/images --out tokens/images
  codec tokenize --codec runs/audio --data data/speech --out tokens/speech   # rerun to resume
"""

TRAIN_EXAMPLES = """examples:
  codec train-prior --tokens tokens/images --out priors/images
  codec train-prior --tokens tokens/images --out priors/images --steps 50000 --resume
  codec train-prior --tokens tokens/speech --out priors/speech --config prior.json

--config FILE is JSON: {"prior": {"dim": 384, "depth": 8, "context": 2048}, "train": {"batch_size": 32}}
(PriorConfig and TrainPriorConfig fields; the token layout always comes from --tokens).
"""

SAMPLE_EXAMPLES = """examples:
  codec sample --codec runs/image --prior priors/images -n 16 -o samples/
  codec sample --codec runs/image --prior priors/images -n 4 --size 256x384 --top-p 0.9 --seed 1 -o samples/
  codec sample --codec runs/audio --prior priors/speech -n 4 --seconds 5 --temperature 0.9 -o samples/
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_subcommands(subparsers) -> None:
    """Register ``tokenize``, ``train-prior`` and ``sample`` on an argparse subparsers object."""
    raw = argparse.RawDescriptionHelpFormatter

    p = subparsers.add_parser(
        "tokenize",
        help="encode a folder of images or audio into token shards for prior training",
        description="Encode every image or audio file under --data (whole files) with a frozen codec into "
        "sharded safetensors token files. Resumable: rerun the same command to finish an interrupted run.",
        epilog=TOKENIZE_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--codec", required=True, metavar="RUN_DIR", help="codec run directory")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of images or audio (scanned recursively)")
    p.add_argument("--out", required=True, metavar="TOKENS_DIR", help="output tokens directory")
    p.add_argument("--shard-size", type=_positive_int, default=256, help="files per shard (default 256)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=cmd_tokenize)

    p = subparsers.add_parser(
        "train-prior",
        help="train a Transformer prior on token shards",
        description="Train a TokenPrior with accelerate on a tokens directory made by `codec tokenize`: AdamW "
        "with warmup and cosine decay, gradient clipping, mixed precision on GPU, periodic held-out bits/token "
        "and atomic checkpoints. Launch with `accelerate launch` for several GPUs.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--tokens", required=True, metavar="TOKENS_DIR", help="tokens directory from `codec tokenize`")
    p.add_argument("--out", required=True, metavar="PRIOR_DIR", help="run directory for the prior")
    p.add_argument("--config", metavar="FILE", help='JSON overrides: {"prior": {...}, "train": {...}}')
    p.add_argument("--steps", type=_positive_int, help="total optimisation steps (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument(
        "--max-minutes", type=float, metavar="M", help="stop after about M minutes of this call (checkpointed)"
    )
    p.set_defaults(func=cmd_train_prior)

    p = subparsers.add_parser(
        "sample",
        help="generate new images or audio with a prior and its codec",
        description="Sample token grids from a prior (key/value cache, batched) and decode them with the codec: "
        "images as PNG files plus one PNG grid, audio as WAV files.",
        epilog=SAMPLE_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--codec", required=True, metavar="RUN_DIR", help="codec run directory")
    p.add_argument("--prior", required=True, metavar="PRIOR_DIR", help="prior run directory")
    p.add_argument("-n", "--num", type=_positive_int, default=16, help="how many samples (default 16)")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--size", metavar="HxW", help="image size in pixels (default: the prior's commonest training size)")
    p.add_argument("--seconds", type=float, default=5.0, help="audio length in seconds (default 5)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy (default 1)")
    p.add_argument("--top-k", type=_positive_int, help="sample among the k most probable tokens")
    p.add_argument("--top-p", type=float, help="sample among the most probable tokens holding this much probability")
    p.add_argument("--seed", type=int, help="random seed (same seed, same samples)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="samples generated at once (default 16)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=cmd_sample)


# -------------------------------------------------------------------------------------------- commands
def cmd_tokenize(args) -> dict:
    import codec
    from prior.data import tokenize_dataset

    model = codec.load(args.codec, device=args.device)
    summary = tokenize_dataset(model, args.data, args.out, shard_size=args.shard_size, progress=True)
    print(
        f"tokenized {summary['items']} files into {summary['shards']} shards in {args.out} "
        f"({summary['tokens']} tokens, {summary['skipped']} unreadable files skipped, "
        f"{summary['resumed_shards']} shards already done)"
    )
    return summary


def cmd_train_prior(args) -> dict:
    from prior.config import load_config_file
    from prior.train import train_prior

    overrides = load_config_file(args.config) if args.config else {}
    train = dict(overrides.get("train", {}))
    if args.steps is not None:
        train["steps"] = args.steps
    if args.max_minutes is not None:
        train["max_minutes"] = args.max_minutes
    summary = train_prior(args.tokens, args.out, overrides.get("prior", {}), train, resume=args.resume)
    print(
        f"prior in {summary['out']} at step {summary['step']}: held-out {summary['val_bits']:.4f} bits/token "
        f"(log2 K = {summary['log2_K']:g})"
    )
    return summary


def _sample_shape(prior, codec_model, args) -> tuple[int, ...]:
    """The token shape to sample, from --size / --seconds or the prior's default."""
    cfg, f = prior.config, codec_model.downsample
    if codec_model.modality == "audio":
        if not args.seconds > 0:
            raise ValueError(f"--seconds must be > 0, got {args.seconds}")
        return (cfg.levels, math.ceil(args.seconds * codec_model.sample_rate / f))
    if args.size:
        try:
            h, w = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ValueError(f"--size must look like 256x256 (height x width in pixels), got {args.size!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"--size must be positive, got {args.size!r}")
        grid = (math.ceil(h / f), math.ceil(w / f))
    elif cfg.sample_shape is not None:
        return cfg.sample_shape
    else:
        grid = (32, 32)
    return (cfg.levels, *grid) if cfg.residual else grid


def image_grid(images: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, H', W') image, ceil(sqrt(N)) per row, with white gaps."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = img
    return grid


def cmd_sample(args) -> list[str]:
    import codec
    from codec.audio_io import write_audio
    from codec.image_io import write_image
    from prior.checkpoint import load_prior

    model = codec.load(args.codec, device=args.device)
    prior = load_prior(args.prior, codec=model, device=model.device)
    shape = _sample_shape(prior, model, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written, decoded = [], []
    seed = args.seed if args.seed is not None else secrets.randbits(62)
    for a in range(0, args.num, args.batch_size):
        batch = min(args.batch_size, args.num - a)
        tokens = prior.sample(
            batch, shape, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=seed, first_index=a
        )
        decoded.append(model.decode(tokens).cpu())
    decoded = torch.cat(decoded)
    for i, y in enumerate(decoded):
        if model.modality == "image":
            path = out / f"sample_{i:03d}.png"
            write_image(path, y)
        else:
            path = out / f"sample_{i:03d}.wav"
            write_audio(path, y, model.sample_rate)
        written.append(str(path))
    if model.modality == "image":
        write_image(out / "grid.png", image_grid(decoded))
        written.append(str(out / "grid.png"))
    print(f"wrote {len(written)} files to {out} (token shape {tuple(shape)}, seed {seed})")
    return written


def main(argv=None) -> int:
    """Standalone entry point: ``python -m prior.cli SUBCOMMAND ...`` (until codec.cli registers these)."""
    from codec.errors import VQCodecError

    parser = argparse.ArgumentParser(prog="codec", description="vqcodec prior commands")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (VQCodecError, ValueError, FileNotFoundError) as e:
        print(f"codec: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
