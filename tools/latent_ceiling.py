"""What a codec's decoder can render, and where its quality is lost: quantizer, encoder or decoder.

    python tools/latent_ceiling.py --model audio --data data/audio/eval_recorded --quantizers 8
    python tools/latent_ceiling.py --model image --data data/images/heldout_photos --quantizers 6 --out ceiling.json

For each file, the quality of four decodings of the same decoder:
  - plain: the encoder's tokens at ``--quantizers`` levels (what ``codec encode`` writes);
  - search: the same levels after ``--refine`` steps of the encoder-side search (``codec encode --refine``);
  - latent: the encoder's latent before the quantizer (no rate limit: the autoencoder alone);
  - optimised: that latent after ``--steps`` Adam steps on the search's objective with no quantizer at all
    (``codec.core.refine.objective_by_cell``: squared pixel error; audio log-mel L1 plus a quarter of the compressed
    STFT error), the best step kept: a lower bound on what this decoder can render from any latent.
plain -> latent is what the quantizer costs the encoder's choice; latent -> optimised is what the encoder leaves
unused in the decoder; search sits between plain and what the quantizer's levels allow. Images report PSNR (8-bit
output), audio the log-mel distance and, where ``pesq`` / ``pystoi`` import, PESQ-WB and STOI. Each file runs as one
window (no tiles or chunks), so keep files to a few seconds or a few hundred pixels a side.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

# Adam's step as a fraction of the first codebook's rms component, per modality. On the bundled models: audio (as the
# search) 0.05; images 0.017 (4x the search's: no quantizer to jump across), 60 steps on 3 held-out photographs.
LATENT_STEP = {"image": 0.017, "audio": 0.05}


def _padded(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x padded by replication to whole latent cells, mask: 1 on x's samples) for (1, C, *samples)."""
    f = model.downsample
    pads = []
    for s in reversed(x.shape[2:]):
        pads += [0, -s % f]
    mask = F.pad(torch.ones(1, 1, *x.shape[2:]), pads)
    return F.pad(x, pads, mode="replicate"), mask


def optimise_latent(model, x: torch.Tensor, steps: int, step: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's latent of ``x`` and that latent after ``steps`` Adam steps on the decoder's error, unquantized.

    Args:
        model: a ``Codec``.
        x: (1, C, H, W) image in [0, 1] or (1, C, T) audio in [-1, 1], the model's channels.
        steps: Adam steps; 0 returns the encoder's latent twice.
        step: Adam's step as a fraction of the first codebook's rms component (default ``LATENT_STEP``).

    Returns:
        (latent, optimised), each (1, D, *grid): the optimised one is the step whose objective was lowest (step 0
        included, so it never measures worse than the encoder's latent on the objective).
    """
    from codec.core.refine import code_rms, objective_by_cell

    xp, mask = _padded(model, x)
    rate = None if model.modality == "image" else model.sample_rate
    lr = (step if step is not None else LATENT_STEP[model.modality]) * code_rms(model.quantizer)
    with torch.no_grad():
        z = model.encoder(xp)
    v = z.clone().requires_grad_(True)
    opt = torch.optim.Adam([v], lr=lr)
    best, best_v = math.inf, z
    with torch.enable_grad():
        for i in range(steps + 1):
            loss = objective_by_cell(model.decoder(v), xp, mask, model.downsample, rate).sum()
            if loss.item() < best:
                best, best_v = loss.item(), v.detach().clone()
            if i == steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    return z, best_v


def render(model, latent: torch.Tensor, shape) -> torch.Tensor:
    """The decoder's output of a (1, D, *grid) latent, clamped as ``decode`` clamps, cropped to ``shape``."""
    with torch.no_grad():
        y = model.decoder(latent).clamp(0.0 if model.modality == "image" else -1.0, 1.0)
    return y[(..., *[slice(0, s) for s in shape])]


def measure(model, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Images {"psnr"} on 8-bit output; audio ``codec.eval.audio.audio_metrics`` as speech (mel, PESQ-WB, STOI, ...)."""
    if model.modality == "image":
        from codec.eval.image import psnr

        return {"psnr": psnr(x[0], y[0])}
    from codec.eval.audio import audio_metrics

    return {k: v for k, v in audio_metrics(x[0], y[0], model.sample_rate, True).items() if v is not None}


def ceiling(model, x: torch.Tensor, levels: int | None, steps: int, refine: int) -> dict[str, dict]:
    """{"plain", "search" (with ``refine`` > 0), "latent", "optimised"}: ``measure`` of each decoding of (1, C, ...)."""
    shape = x.shape[2:]
    out = {"plain": measure(model, x, model.decode(model.encode(x, levels), shape=x.shape[1:]))}
    if refine:
        out["search"] = measure(model, x, model.decode(model.encode(x, levels, refine=refine), shape=x.shape[1:]))
    z, best = optimise_latent(model, x, steps)
    out["latent"] = measure(model, x, render(model, z, shape))
    out["optimised"] = measure(model, x, render(model, best, shape))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="codec run directory or bundled name (image, audio)")
    ap.add_argument("--data", required=True, help="folder of images or audio (scanned recursively)")
    ap.add_argument("--quantizers", type=int, help="residual levels of the plain and searched tokens (default: all)")
    ap.add_argument("--steps", type=int, default=40, help="Adam steps on the unquantized latent (default 40)")
    ap.add_argument("--refine", type=int, default=0, help="also measure the search at this many steps (default 0: not)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many files (sorted by path; 0 = all)")
    ap.add_argument("--out", help="write the per-file and mean figures to this JSON file")
    args = ap.parse_args(argv)

    import codec
    from codec.errors import VQCodecError
    from codec.media import read_audio, read_image, resample, to_audio_channels, to_image_channels
    from codec.media.files import find_files

    try:
        model = codec.load(args.model)
        files = find_files(args.data, model.modality)
    except (FileNotFoundError, ValueError, VQCodecError) as err:
        print(f"latent_ceiling: {err}", file=sys.stderr)
        return 2
    files = files[: args.limit] if args.limit else files
    rows = []
    for name in files:
        path = Path(args.data) / name
        try:
            if model.modality == "image":
                x = to_image_channels(read_image(path).pixels, model.channels)
            else:
                audio = read_audio(path)
                x = to_audio_channels(
                    resample(audio.samples.float(), audio.sample_rate, model.sample_rate), model.channels
                )
        except VQCodecError as err:
            print(f"latent_ceiling: skipped {err}", file=sys.stderr)
            continue
        got = ceiling(model, x[None].float(), args.quantizers, args.steps, args.refine)
        rows.append({"file": name, **got})
        print(name, "  ".join(f"{k} " + " ".join(f"{m} {v:.3f}" for m, v in r.items()) for k, r in got.items()))
    if not rows:
        print("latent_ceiling: no file could be read", file=sys.stderr)
        return 2
    kinds = [k for k in rows[0] if k != "file"]
    mean = {k: {m: sum(r[k][m] for r in rows) / len(rows) for m in rows[0][k]} for k in kinds}
    print(f"mean over {len(rows)} files ({args.model}, {args.quantizers or model.num_quantizers} levels, "
          f"{args.steps} steps):")  # fmt: skip
    for k in kinds:
        print(f"  {k:<10} " + "  ".join(f"{m} {v:.3f}" for m, v in mean[k].items()))
    if args.out:
        meta = {"model": args.model, "levels": args.quantizers, "steps": args.steps, "refine": args.refine}
        Path(args.out).write_text(json.dumps({**meta, "mean": mean, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
