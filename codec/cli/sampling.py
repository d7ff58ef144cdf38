"""The ``sample`` subcommand of the ``codec`` CLI: new images or audio from a prior and its codec."""

import argparse
import math
import secrets
from pathlib import Path

from codec.cli.common import add_quiet, positive_int, report, show_progress

SAMPLE_EXAMPLES = """examples:
  codec sample --codec image -n 16 -o samples/                 # the bundled model and the prior stored with it
  codec sample --codec runs/image --prior priors/images -n 16 -o samples/
  codec sample --codec runs/image --prior priors/images -n 4 --size 256x384 --top-p 0.9 --seed 1 -o samples/
  codec sample --codec runs/audio --prior priors/speech -n 4 --seconds 5 --temperature 0.9 -o samples/
"""


def register(subparsers) -> None:
    """Register ``sample``."""
    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "sample",
        help="generate new images or audio with a prior and its codec",
        description="Sample token grids from a prior (key/value cache, batched) and decode them with the codec: "
        "images as PNG files plus one PNG grid, audio as WAV files.",
        epilog=SAMPLE_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--codec", required=True, metavar="MODEL", help="codec run directory or bundled name (image, audio)")
    p.add_argument(
        "--prior", metavar="PRIOR", help="prior run directory or bundled name (default: the one stored with the codec)"
    )
    p.add_argument("-n", "--num", type=positive_int, default=16, help="how many samples (default 16)")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--size", metavar="HxW", help="image size in pixels (default: the prior's commonest training size)")
    p.add_argument("--seconds", type=float, default=5.0, help="audio length in seconds (default 5)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy (default 1)")
    p.add_argument("--top-k", type=positive_int, help="sample among the k most probable tokens")
    p.add_argument("--top-p", type=float, help="sample among the most probable tokens holding this much probability")
    p.add_argument("--seed", type=int, help="random seed (same seed, same samples)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="samples generated at once (default 16)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    add_quiet(p)
    p.set_defaults(func=cmd_sample)


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


def image_grid(images, pad: int = 2):
    """(N, C, H, W) in [0, 1] -> one (C, H', W') image, ceil(sqrt(N)) per row, with white gaps."""
    import torch

    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = img
    return grid


def cmd_sample(args) -> list[str]:
    import torch
    from tqdm.auto import tqdm

    from codec.core.checkpoint import load
    from codec.media import write_audio, write_image
    from prior.checkpoint import load_prior

    model = load(args.codec, device=args.device)
    prior = load_prior(args.prior or args.codec, codec=model, device=model.device)
    shape = _sample_shape(prior, model, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written, decoded = [], []
    seed = args.seed if args.seed is not None else secrets.randbits(62)
    batches = range(0, args.num, args.batch_size)
    steps = len(batches) * math.prod(prior.layout(shape))  # token positions, one bar for every batch
    with tqdm(total=steps, desc="sample", unit="tok", disable=not show_progress(args)) as bar:
        for a in batches:
            batch = min(args.batch_size, args.num - a)
            tokens = prior.sample(
                batch, shape, args.temperature, args.top_k, args.top_p, seed=seed, first_index=a, progress=bar
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
    report(args, f"wrote {len(written)} files to {out} (token shape {tuple(shape)}, seed {seed})")
    return written
