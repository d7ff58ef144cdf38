"""Rate-distortion evaluation of a codec against JPEG and WebP (images) or Opus and Vorbis (audio).

    pip install -e ".[eval]"
    python tools/eval_rd.py --model image --data data/images/heldout --out bench_results/rd_image
    python tools/eval_rd.py --model audio --data data/audio/heldout --out bench_results/rd_audio

The modality is the model's. The same as ``codec eval`` with the same arguments.

Images
------

For every image and every bitrate of our model (each residual level count, ``--quantizers`` to choose): the bpp of
the real ``.vqc`` file (``codec.compress``, header included), PSNR and MS-SSIM (torchmetrics) of its decoding.
Then, for JPEG and WebP, the quality setting (1..100) whose file size comes closest to that bpp on that image
(bisection over quality, file size grows with it), and the PSNR and MS-SSIM at that setting. So each curve point
compares codecs at matched bpp, image by image. Then fidelity (``codec.eval.fidelity``): per level, the worst
per-channel error on a card of flat saturated patches and ramps, the same over 176 flat colours on the RGB cube's
edges (the share within 8/255, median, worst), and each outermost row's and column's error over the interior's
(JSON ``colour``, ``colour_sweep`` and ``edges``).

Audio
-----
Every file is first brought to the evaluation signal: the codec's sample rate (24 kHz), mixed down to the codec's
channel count (mono for the bundled model), so every codec codes the same samples. For each bitrate of our model
(``--quantizers``, default the levels of 1.5, 3 and 6 kbps): kbps of the real ``.vqc`` file (header included).
Opus: Debian's ``opusenc --hard-cbr --bitrate B --padding 0 --discard-comments`` at ``--opus-kbps`` (libopus codes
no less than 6 kbps), decoded by ``opusdec`` at 24 kHz; Vorbis: ``oggenc -q -1``, its lowest setting, decoded by
libsndfile. The peers' kbps are measured from their Ogg files, like ours from ours: every format's fixed overhead
counts (about 0.25 KB for a ``.vqc`` header, 0.1 KB of Opus headers plus Ogg pages, 3-4 KB of Vorbis setup headers,
which dominate a clip of a few seconds). Metrics against the evaluation signal: SI-SNR (dB), multi-resolution
log-mel L1 distance (``codec.core.spectral.mel_distance``), and on speech (a file with a folder named ``speech`` in its
path, or every file with ``--speech``) wideband PESQ (``pesq``, at 16 kHz) and STOI (``pystoi``) where those
packages import.

A file that cannot be read is reported and skipped (listed under ``skipped`` in the JSON); the run stops early with
a one-line message if the ``eval`` extra or the peers' tools are missing.

Writes ``OUT.json`` (every measurement, plus per-bitrate means; a lossless PSNR is written as null) and
``OUT.png`` (one panel per metric against the rate, one curve per codec); prints a table.
"""

import argparse
import importlib.util
import json
import math
import shutil
from pathlib import Path

from codec.core.checkpoint import load
from codec.core.refine import check_refine
from codec.eval.audio import AUDIO_METRICS, default_audio_levels, evaluate_audio
from codec.eval.fidelity import TOLERANCE, colour_errors, colour_sweep
from codec.eval.image import IMAGE_METRICS, evaluate
from codec.eval.options import add_arguments
from codec.media import is_audio_file, is_image_file
from codec.store.files import atomic_write_text

LABELS = {"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM", "si_snr": "SI-SNR (dB)", "mel": "mel distance (lower is better)",
          "pesq": "PESQ (wideband, speech)", "stoi": "STOI (speech)"}  # fmt: skip


PSNR_CAP = 60.0  # dB: an image that comes back identical after 8-bit rounding counts as this in the means


def summarize(rows: list[dict], metrics=IMAGE_METRICS) -> list[dict]:
    """Mean of each metric per (codec, level); a metric missing from some rows (PESQ on music) is averaged over
    the rows that have it, and ``None`` where none has it. PSNR is capped at ``PSNR_CAP`` before averaging (a
    lossless result is infinite), and ``lossless`` counts those rows."""
    keys = sorted({(r["codec"], r["level"]) for r in rows}, key=lambda k: (k[1], k[0]))
    out = []
    for name, level in keys:
        sel = [r for r in rows if r["codec"] == name and r["level"] == level]
        mean = {}
        for m in metrics:
            vals = [min(r[m], PSNR_CAP) if m == "psnr" else r[m] for r in sel if r.get(m) is not None]
            mean[m] = sum(vals) / len(vals) if vals else None
        if "psnr" in metrics:
            mean["lossless"] = sum(r["psnr"] == float("inf") for r in sel)
        out.append({"codec": name, "level": level, "items": len(sel), **mean})
    return out


def plot(summary: list[dict], path: Path, metrics=IMAGE_METRICS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate, shown = metrics[0], [m for m in metrics[1:] if any(s.get(m) is not None for s in summary)]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4), squeeze=False)
    for ax, m in zip(axes[0], shown):
        for name in sorted({s["codec"] for s in summary}):
            pts = sorted((s[rate], s[m]) for s in summary if s["codec"] == name and s.get(m) is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xlabel("bits per pixel" if rate == "bpp" else "kbit/s")
        ax.set_ylabel(LABELS[m])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser(ap: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    ap = ap or argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return ap


def check_eval_dependencies(audio: bool) -> None:
    """Fail early, before any coding, when the ``eval`` extra or the audio peers' tools are missing."""
    needed = ["matplotlib"] + ([] if audio else ["torchmetrics"])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"codec eval needs {', '.join(missing)}: pip install 'vqcodec[eval]'")
    if audio:
        tools = [t for t in ("opusenc", "opusdec", "oggenc") if shutil.which(t) is None]
        if tools:
            raise SystemExit(f"{', '.join(tools)} not found: apt-get install opus-tools vorbis-tools")


def image_fidelity(model, levels, prior, rows: list[dict], refine: int = 0) -> dict:
    """Print and return the colour card's errors and the edge-to-interior error ratios (``codec.eval.fidelity``)."""
    colour = colour_errors(model, levels, prior=prior, refine=refine)
    print("colour card (worst per-channel error of 255, flat patch interiors / ramps):")
    for c in colour:
        flat, ramps = f"{c['flat_max_error']:.0f} ({c['flat_worst_patch']})", f"{c['ramp_max_error']:.0f}"
        print(f"  level {c['level']}: flat {flat}, ramps {ramps}")
    sweep = colour_sweep(model, levels, prior=prior, refine=refine)
    print(f"colour sweep ({sweep[0]['colours']} flat colours on the RGB cube's edges; per-channel error of 255):")
    for c in sweep:
        worst = f"{c['max_error']:.0f} at {tuple(c['worst_colour'])}"
        share = f"{c['within_tolerance']:.0%} within {TOLERANCE}"
        print(f"  level {c['level']}: {share}, median {c['median_error']:.0f}, worst {worst}")
    sides = ("left", "right", "top", "bottom")
    edges = []
    for level in sorted({r["level"] for r in rows if r["codec"] == "vqcodec" and "edge_left" in r}):
        sel = [r for r in rows if r["codec"] == "vqcodec" and r["level"] == level and "edge_left" in r]
        mean = {s: sum(r[f"edge_{s}"] for r in sel) / len(sel) for s in sides}
        worst = max(r[f"edge_{s}"] for r in sel for s in sides)
        edges.append({"level": level, "items": len(sel), **{f"mean_{s}": v for s, v in mean.items()}, "max": worst})
    if edges:
        print("edge lines' MSE / interior MSE (mean left, right, top, bottom; worst of any image and side):")
        for e in edges:
            means = " ".join(f"{e[f'mean_{s}']:.2f}" for s in sides)
            print(f"  level {e['level']}: {means}; worst {e['max']:.2f}")
    return {"colour": colour, "colour_sweep": sweep, "edges": edges}


def json_safe(value):
    """``value`` with infinite and NaN floats (a lossless PSNR, an MS-SSIM too small to measure) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def output_paths(out: Path) -> tuple[Path, Path]:
    """(OUT.json, OUT.png) of ``--out OUT``: a name that already ends in .json or .png loses it; any other dot stays
    part of the name (``results/rd_v1.5`` -> ``results/rd_v1.5.json``, not ``results/rd_v1.json``)."""
    base = out.with_suffix("") if out.suffix.lower() in (".json", ".png") else out
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".png")


def run(args: argparse.Namespace) -> int:
    model = load(args.model, device="cpu")
    audio = model.modality == "audio"
    wanted = is_audio_file if audio else is_image_file
    files = sorted(p for p in Path(args.data).rglob("*") if p.is_file() and wanted(p))[: args.limit]
    if not files:
        raise SystemExit(f"no {model.modality} files under {args.data}")
    check_eval_dependencies(audio)
    try:
        check_refine(args.refine)
    except ValueError as e:
        raise SystemExit(f"--{e}") from None
    prior = None if args.prior == "none" else args.prior
    skipped = []
    if audio:
        levels = args.quantizers or default_audio_levels(model)
        rows = evaluate_audio(
            model, files, levels, prior, args.opus_kbps, args.speech, Path(args.data), skipped, args.refine
        )
        metrics = AUDIO_METRICS
    else:
        levels = args.quantizers or (list(range(1, model.num_quantizers + 1)) if model.residual else [None])
        rows = evaluate(model, files, levels, prior=prior, skipped=skipped, refine=args.refine)
        metrics = IMAGE_METRICS
    if not rows:
        raise SystemExit(f"none of the {len(files)} files under {args.data} could be read")
    summary = summarize(rows, metrics)
    print(f"{'codec':8s} {'level':>5s} {'items':>5s} " + " ".join(f"{m:>8s}" for m in metrics))
    for s in summary:
        vals = " ".join(f"{s[m]:8.4f}" if s[m] is not None else f"{'-':>8s}" for m in metrics)
        print(f"{s['codec']:8s} {s['level']:5d} {s['items']:5d} {vals}")
    extra = {} if audio else image_fidelity(model, levels, prior, rows, args.refine)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = json_safe({"refine": args.refine, "summary": summary, **extra, "rows": rows, "skipped": skipped})
    json_path, png_path = output_paths(out)
    atomic_write_text(json_path, json.dumps(result, indent=2, allow_nan=False) + "\n")
    plot(summary, png_path, metrics)
    print(f"wrote {json_path} and {png_path}")
    if skipped:
        print(f"{len(skipped)} of {len(files)} files skipped (unreadable); see 'skipped' in the JSON")
    return 0


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
