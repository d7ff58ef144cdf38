"""Rate-distortion evaluation of an image codec against JPEG and WebP (Pillow) on a folder of images.

    pip install -e ".[eval]"
    python tools/eval_rd.py --model runs/img --data data/images/heldout --out bench_results/rd_image

For every image and every bitrate of our model (each residual level count, ``--quantizers`` to choose): the bpp of
the real ``.vqc`` file (``codec.compress``, header included), PSNR and MS-SSIM (torchmetrics) of its decoding.
Then, for JPEG and WebP, the quality setting (1..100) whose file size comes closest to that bpp on that image
(bisection over quality, file size grows with it), and the PSNR and MS-SSIM at that setting. So each curve point
compares codecs at matched bpp, image by image.

Writes ``OUT.json`` (every measurement, plus per-bitrate means) and ``OUT.png`` (PSNR and MS-SSIM against bpp,
one curve per codec); prints a table.
"""

import argparse
import io
import json
import math
from pathlib import Path

import torch
from PIL import Image

import codec
from codec.image_io import is_image_file, read_image

PEERS = {"JPEG": dict(format="JPEG"), "WebP": dict(format="WEBP", method=6)}


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] after 8-bit rounding of both (what a file holds)."""
    x, y = (x.clamp(0, 1) * 255).round(), (y.clamp(0, 1) * 255).round()
    mse = float(((x.double() - y.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """MS-SSIM (torchmetrics, 5 scales) of (C, H, W) images in [0, 1]; fewer scales for small images."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim

    side = min(x.shape[-2:])
    scales = max(1, min(5, int(math.log2(side / 11)) + 1 if side >= 11 else 1))
    weights = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)[:scales]
    k = 11 if side >= 11 * 2 ** (scales - 1) else max(3, (side >> (scales - 1)) | 1)
    return float(msssim(y[None].clamp(0, 1), x[None], data_range=1.0, kernel_size=k, betas=weights))


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


def evaluate(model, files: list[Path], levels: list[int | None], prior="auto") -> list[dict]:
    rows = []
    for path in files:
        x = read_image(path).pixels
        pixels = x.shape[1] * x.shape[2]
        for n in levels:
            data = codec.compress(path, model, prior=prior, num_quantizers=n)
            y = codec.decompress(data, model).data
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


def summarize(rows: list[dict]) -> list[dict]:
    """Mean bpp, PSNR and MS-SSIM per (codec, level)."""
    keys = sorted({(r["codec"], r["level"]) for r in rows}, key=lambda k: (k[1], k[0]))
    out = []
    for name, level in keys:
        sel = [r for r in rows if r["codec"] == name and r["level"] == level]
        mean = {m: sum(r[m] for r in sel) / len(sel) for m in ("bpp", "psnr", "ms_ssim")}
        out.append({"codec": name, "level": level, "images": len(sel), **mean})
    return out


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in sorted({s["codec"] for s in summary}):
        pts = sorted((s["bpp"], s["psnr"], s["ms_ssim"]) for s in summary if s["codec"] == name)
        for ax, i in zip(axes, (1, 2)):
            ax.plot([p[0] for p in pts], [p[i] for p in pts], marker="o", label=name)
    for ax, label in zip(axes, ("PSNR (dB)", "MS-SSIM")):
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="image codec run directory or bundled name")
    ap.add_argument("--prior", default="auto", help="prior directory, 'auto' (MODEL/prior) or 'none' (packed)")
    ap.add_argument("--data", required=True, help="folder of held-out images")
    ap.add_argument("--quantizers", type=int, nargs="+", help="residual levels to evaluate (default: every level)")
    ap.add_argument("--limit", type=int, help="at most this many images")
    ap.add_argument("--out", default="bench_results/rd_image", help="output path without extension")
    args = ap.parse_args(argv)

    model = codec.load(args.model, device="cpu")
    if model.modality != "image":
        ap.error("this evaluation is for image codecs")
    levels = args.quantizers or (list(range(1, model.num_quantizers + 1)) if model.residual else [None])
    files = sorted(p for p in Path(args.data).rglob("*") if p.is_file() and is_image_file(p))[: args.limit]
    if not files:
        ap.error(f"no images under {args.data}")
    prior = None if args.prior == "none" else args.prior
    rows = evaluate(model, files, levels, prior=prior)
    summary = summarize(rows)
    print(f"{'codec':8s} {'level':>5s} {'images':>6s} {'bpp':>7s} {'PSNR dB':>8s} {'MS-SSIM':>8s}")
    for s in summary:
        print(f"{s['codec']:8s} {s['level']:5d} {s['images']:6d} {s['bpp']:7.4f} {s['psnr']:8.3f} {s['ms_ssim']:8.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    plot(summary, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
