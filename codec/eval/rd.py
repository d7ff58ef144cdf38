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
compares codecs at matched bpp, image by image.

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
log-mel L1 distance (``codec.losses.mel_distance``), and on speech (a file with a folder named ``speech`` in its
path, or every file with ``--speech``) wideband PESQ (``pesq``, at 16 kHz) and STOI (``pystoi``) where those
packages import.

A file that cannot be read is reported and skipped (listed under ``skipped`` in the JSON); the run stops early with
a one-line message if the ``eval`` extra or the peers' tools are missing.

Writes ``OUT.json`` (every measurement, plus per-bitrate means; a lossless PSNR is written as null) and
``OUT.png`` (one panel per metric against the rate, one curve per codec); prints a table.
"""

import argparse
import importlib.util
import io
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

import codec
from codec.audio_io import is_audio_file, read_audio, resample, write_audio
from codec.errors import VQCodecError
from codec.fileio import atomic_write_text
from codec.image_io import is_image_file, read_image


def _skip(path: Path, err: Exception, skipped: list | None) -> None:
    tqdm.write(f"skipped {path}: {err}")
    if skipped is not None:
        skipped.append((str(path), str(err)))


PEERS = {"JPEG": dict(format="JPEG"), "WebP": dict(format="WEBP", method=6)}


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] after 8-bit rounding of both (what a file holds)."""
    x, y = (x.clamp(0, 1) * 255).round(), (y.clamp(0, 1) * 255).round()
    mse = float(((x.double() - y.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def ms_ssim_params(side: int) -> tuple[int, int] | None:
    """(scales, kernel size) for MS-SSIM of an image whose short side is ``side``: the standard 5 scales and
    11-tap window when it fits, else the largest window, then the most scales, that torchmetrics accepts (side at
    least 2**scales and side // (scales - 1)**2 above the window) and whose window fits the coarsest scale. None
    below 3 pixels."""
    for k in (11, 9, 7, 5, 3):
        for scales in range(5, 0, -1):
            if side >= 2**scales and side // max(1, scales - 1) ** 2 > k - 1 and side >> (scales - 1) >= k:
                return scales, k
    return None


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """MS-SSIM (torchmetrics) of (C, H, W) images in [0, 1]: 5 scales for images of 176 px and more, fewer (their
    weights renormalised to sum to 1), then a smaller window, below (``ms_ssim_params``); NaN under 3 px."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim

    params = ms_ssim_params(min(x.shape[-2:]))
    if params is None:
        return float("nan")
    scales, k = params
    weights = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    if scales < 5:  # the first weights renormalised: one scale is plain SSIM (not SSIM ** 0.0448)
        weights = tuple(w / sum(weights[:scales]) for w in weights[:scales])
    # torchmetrics sizes its Gaussian window from sigma (2 int(3.5 sigma + 0.5) + 1 taps), kernel_size only
    # validates: the standard sigma 1.5 for 11 taps, a sigma giving exactly k taps below
    sigma = 1.5 if k == 11 else (k - 1) / 7
    return float(msssim(y[None].clamp(0, 1), x[None], data_range=1.0, kernel_size=k, sigma=sigma, betas=weights))


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """x in [0, 1] rounded to the 256 levels an image file holds (what the user of a decoded file sees)."""
    return (x.clamp(0, 1) * 255).round() / 255


def to_pil(x: torch.Tensor) -> Image.Image:
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(arr[0].numpy(), "L") if arr.shape[0] == 1 else Image.fromarray(arr.permute(1, 2, 0).numpy())


def peer_encode(x: torch.Tensor, peer: str, quality: int) -> tuple[int, torch.Tensor]:
    """(bytes, decoded (C, H, W)) of x through a Pillow codec at a quality."""
    buf = io.BytesIO()
    to_pil(x).save(buf, quality=quality, **PEERS[peer])
    size = buf.tell()
    buf.seek(0)
    with Image.open(buf) as im:
        im = im.convert("L" if x.shape[0] == 1 else "RGB")
        t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).float() / 255
    c = x.shape[0]
    return size, t.view(x.shape[1], x.shape[2], c).permute(2, 0, 1).contiguous()


def match_bpp(x: torch.Tensor, peer: str, target_bytes: float) -> tuple[int, int, torch.Tensor]:
    """(quality, bytes, decoded) of the peer's setting whose size is closest to target_bytes."""
    lo, hi = 1, 100
    tried = {}
    while lo <= hi:
        q = (lo + hi) // 2
        tried[q] = peer_encode(x, peer, q)
        if tried[q][0] < target_bytes:
            lo = q + 1
        else:
            hi = q - 1
    for q in (lo - 1, lo):
        if 1 <= q <= 100 and q not in tried:
            tried[q] = peer_encode(x, peer, q)
    q = min(tried, key=lambda k: (abs(tried[k][0] - target_bytes), k))
    return q, tried[q][0], tried[q][1]


# ---------------------------------------------------------------------------------------------- images
def evaluate(model, files: list[Path], levels: list[int | None], prior="auto", skipped=None) -> list[dict]:
    """Rows of measurements (see the module docstring); a file that cannot be read is reported, added to
    ``skipped`` as (path, reason), and left out."""
    rows = []
    for path in tqdm(files, desc="eval", unit="image"):
        try:
            x = read_image(path).pixels
        except (VQCodecError, OSError) as e:
            _skip(path, e, skipped)
            continue
        pixels = x.shape[1] * x.shape[2]
        for n in levels:
            data = codec.compress(path, model, prior=prior, num_quantizers=n)
            y = to_8bit(codec.decompress(data, model).data)
            level = n or model.num_quantizers
            row = {"file": path.name, "codec": "vqcodec", "level": level, "bytes": len(data)}
            row.update(bpp=len(data) * 8 / pixels, psnr=psnr(x, y), ms_ssim=ms_ssim(x, y))
            rows.append(row)
            for peer in PEERS:
                q, size, z = match_bpp(x, peer, len(data))
                rows.append(
                    dict(
                        file=path.name,
                        codec=peer,
                        level=level,
                        quality=q,
                        bytes=size,
                        bpp=size * 8 / pixels,
                        psnr=psnr(x, z),
                        ms_ssim=ms_ssim(x, z),
                    )
                )
    return rows


IMAGE_METRICS = ("bpp", "psnr", "ms_ssim")
AUDIO_METRICS = ("kbps", "si_snr", "mel", "pesq", "stoi")
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


# ----------------------------------------------------------------------------------------------- audio
def optional_speech_metrics():
    """(pesq_fn, stoi_fn) for the packages that import, else None in their place."""
    try:
        from pesq import pesq as pesq_fn
    except ImportError:
        pesq_fn = None
    try:
        from pystoi import stoi as stoi_fn
    except ImportError:
        stoi_fn = None
    return pesq_fn, stoi_fn


def audio_metrics(ref: torch.Tensor, est: torch.Tensor, rate: int, speech: bool) -> dict:
    """SI-SNR, mel distance and (speech only, where installed) PESQ-WB and STOI of (C, T) signals."""
    from codec.losses import mel_distance
    from codec.metrics import si_snr

    n = min(ref.shape[-1], est.shape[-1])
    ref, est = ref[..., :n].float(), est[..., :n].float()
    out = {
        "si_snr": float(si_snr(est[None], ref[None])[0]),
        "mel": float(mel_distance(est[None], ref[None], rate)[0]),
        "pesq": None,
        "stoi": None,
    }
    if speech:
        pesq_fn, stoi_fn = optional_speech_metrics()
        r, e = ref.mean(0).double(), est.mean(0).double()
        if pesq_fn is not None:
            r16, e16 = resample(r[None].float(), rate, 16000)[0], resample(e[None].float(), rate, 16000)[0]
            try:
                out["pesq"] = float(pesq_fn(16000, r16.numpy(), e16.numpy(), "wb"))
            except Exception as err:  # pesq raises its own errors on silent or too short signals
                print(f"PESQ skipped: {err}")
        if stoi_fn is not None:
            out["stoi"] = float(stoi_fn(r.numpy(), e.numpy(), rate, extended=False))
    return out


def run_tool(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except FileNotFoundError:
        raise SystemExit(f"{cmd[0]} is not installed (apt-get install opus-tools vorbis-tools)") from None
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"{' '.join(cmd)} failed: {e.stderr.decode(errors='replace').strip()}") from None


def opus_roundtrip(wav: Path, kbps: float, tmp: Path, rate: int) -> tuple[int, torch.Tensor]:
    """(bytes, decoded (C, T) at ``rate``) of an Opus file at a hard CBR bitrate."""
    ogg, out = tmp / "peer.opus", tmp / "peer_dec.wav"
    # no comment padding and no tags: the Ogg file holds little beyond the codec's own headers and pages
    cmd = ["opusenc", "--quiet", "--hard-cbr", "--bitrate", f"{kbps:g}", "--padding", "0", "--discard-comments"]
    run_tool([*cmd, str(wav), str(ogg)])
    run_tool(["opusdec", "--quiet", "--rate", str(rate), str(ogg), str(out)])
    return ogg.stat().st_size, read_audio(out, sample_rate=rate).samples


def vorbis_roundtrip(wav: Path, tmp: Path, rate: int) -> tuple[int, torch.Tensor]:
    """(bytes, decoded) of Vorbis at its lowest quality setting (-q -1)."""
    ogg = tmp / "peer.ogg"
    run_tool(["oggenc", "-Q", "-q", "-1", "-o", str(ogg), str(wav)])
    return ogg.stat().st_size, read_audio(ogg, sample_rate=rate).samples


def is_speech(path: Path, root: Path | None = None) -> bool:
    """Whether a folder named ``speech`` holds ``path``: ``root`` (the evaluated folder) itself or one below it,
    when ``root`` is given; the folders above ``root`` do not count."""
    parts = path.relative_to(root.parent).parts if root is not None else path.parts
    return "speech" in parts[:-1]


def evaluate_audio(
    model, files, levels, prior="auto", opus_kbps=(6.0, 9.0, 12.0), all_speech=False, root=None, skipped=None
) -> list[dict]:
    """Rows of measurements (see the module docstring). A file is speech if ``all_speech`` or a folder named
    ``speech`` holds it below ``root``; a file that cannot be read is reported, added to ``skipped``, left out."""
    from codec.data import to_audio_channels

    rate = model.sample_rate
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for path in tqdm(files, desc="eval", unit="file"):
            try:
                ref = to_audio_channels(read_audio(path, sample_rate=rate).samples, model.channels)
            except (VQCodecError, OSError) as e:
                _skip(path, e, skipped)
                continue
            seconds = ref.shape[-1] / rate
            speech = all_speech or is_speech(path, root)
            wav = tmp / "ref.wav"
            write_audio(wav, ref, rate, subtype="FLOAT")
            base = {"file": str(path.name), "speech": speech, "seconds": seconds}
            results = []  # (codec, level, bytes, decoded, extra fields)
            for n in levels:
                data = codec.compress(wav, model, prior=prior, num_quantizers=n)
                results.append(("vqcodec", n, len(data), codec.decompress(data, model).data, {}))
            for k, kbps in enumerate(opus_kbps):
                results.append(("Opus", k, *opus_roundtrip(wav, kbps, tmp, rate), {"nominal_kbps": kbps}))
            results.append(("Vorbis", 0, *vorbis_roundtrip(wav, tmp, rate), {}))
            for name, level, size, est, extra in results:
                row = {**base, "codec": name, "level": level, "bytes": size, "kbps": size * 8 / seconds / 1000}
                rows.append({**row, **extra, **audio_metrics(ref, est, rate, speech)})
    return rows


def default_audio_levels(model) -> list[int]:
    """The residual levels of 1.5, 3 and 6 kbps (what the bundled model is made for), within the model's range."""
    per_level = math.ceil(math.log2(model.codebook_size)) * model.sample_rate / model.downsample / 1000
    want = [max(1, round(k / per_level)) for k in (1.5, 3.0, 6.0)]
    return sorted({min(n, model.num_quantizers) for n in want})


def build_parser(ap: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    ap = ap or argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="codec run directory or bundled name ('image', 'audio')")
    ap.add_argument("--prior", default="auto", help="prior directory, 'auto' (MODEL/prior) or 'none' (packed)")
    ap.add_argument("--data", required=True, help="folder of held-out images or audio, scanned recursively")
    ap.add_argument("--quantizers", type=int, nargs="+", help="residual levels to evaluate (default: see above)")
    ap.add_argument("--limit", type=int, help="at most this many files")
    ap.add_argument("--opus-kbps", type=float, nargs="+", default=[6.0, 9.0, 12.0], help="Opus bitrates (audio)")
    ap.add_argument("--speech", action="store_true", help="audio: every file is speech (PESQ and STOI on all)")
    ap.add_argument("--out", default="bench_results/rd", help="output path without extension")
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


def json_safe(value):
    """``value`` with infinite and NaN floats (a lossless PSNR, an MS-SSIM too small to measure) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    model = codec.load(args.model, device="cpu")
    audio = model.modality == "audio"
    wanted = is_audio_file if audio else is_image_file
    files = sorted(p for p in Path(args.data).rglob("*") if p.is_file() and wanted(p))[: args.limit]
    if not files:
        raise SystemExit(f"no {model.modality} files under {args.data}")
    check_eval_dependencies(audio)
    prior = None if args.prior == "none" else args.prior
    skipped = []
    if audio:
        levels = args.quantizers or default_audio_levels(model)
        rows = evaluate_audio(model, files, levels, prior, args.opus_kbps, args.speech, Path(args.data), skipped)
        metrics = AUDIO_METRICS
    else:
        levels = args.quantizers or (list(range(1, model.num_quantizers + 1)) if model.residual else [None])
        rows = evaluate(model, files, levels, prior=prior, skipped=skipped)
        metrics = IMAGE_METRICS
    if not rows:
        raise SystemExit(f"none of the {len(files)} files under {args.data} could be read")
    summary = summarize(rows, metrics)
    print(f"{'codec':8s} {'level':>5s} {'items':>5s} " + " ".join(f"{m:>8s}" for m in metrics))
    for s in summary:
        vals = " ".join(f"{s[m]:8.4f}" if s[m] is not None else f"{'-':>8s}" for m in metrics)
        print(f"{s['codec']:8s} {s['level']:5d} {s['items']:5d} {vals}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = json_safe({"summary": summary, "rows": rows, "skipped": skipped})
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2, allow_nan=False) + "\n")
    plot(summary, out.with_suffix(".png"), metrics)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    if skipped:
        print(f"{len(skipped)} of {len(files)} files skipped (unreadable); see 'skipped' in the JSON")
    return 0


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
