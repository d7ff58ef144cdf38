"""Build an image corpus from the photographs that Debian's wallpaper packages install.

    apt-get install gnome-backgrounds mate-backgrounds plasma-workspace-wallpapers ukui-wallpapers
    python tools/make_image_corpus.py --out data/images

Every raster image (JPEG, PNG, WebP) under the packages' folders is a source; SVG drawings are skipped. Sources
are split into train and held-out by a hash of their path (``--heldout-fraction``), so no crop of a held-out
photograph is ever trained on. For each source:

- train/: ``--crops`` random crops of ``--crop`` pixels, each from the image downscaled so its short side is one
  of ``--scales`` (random crops at several scales), as PNG;
- heldout/: one centre crop of ``--heldout-size`` pixels from the image downscaled to that short side, as PNG.

The crops are deterministic (``--seed``). Licences: see each package's /usr/share/doc/PKG/copyright (GPL-2+,
CC-BY-SA and similar open licences); the corpus builder writes the list of sources and packages to
``sources.json``.
"""

import argparse
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_ROOTS = ("/usr/share/backgrounds", "/usr/share/wallpapers")
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}


def package_of(path: Path) -> str | None:
    try:
        out = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    return out.split(":", 1)[0] if out else None


def is_heldout(path: Path, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(str(path).encode()).digest()[:8], "little")
    return h / 2**64 < fraction


def resize_short(img: Image.Image, short: int) -> Image.Image:
    w, h = img.size
    s = short / min(w, h)
    return img.resize((max(short, round(w * s)), max(short, round(h * s))), Image.Resampling.LANCZOS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roots", nargs="+", default=list(DEFAULT_ROOTS), help="folders to scan for photographs")
    ap.add_argument("--out", required=True, help="output folder (train/, heldout/, sources.json)")
    ap.add_argument("--crop", type=int, default=256, help="train crop side in pixels (default 256)")
    ap.add_argument("--crops", type=int, default=24, help="train crops per source (default 24)")
    ap.add_argument("--scales", type=int, nargs="+", default=[384, 640, 1080], help="short sides to crop from")
    ap.add_argument("--heldout-size", type=int, default=512, help="held-out centre crop side (default 512)")
    ap.add_argument("--heldout-fraction", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    sources = sorted(
        p for root in args.roots if Path(root).is_dir() for p in Path(root).rglob("*") if p.suffix.lower() in EXTENSIONS
    )
    out = Path(args.out)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    record = []
    for i, src in enumerate(sources):
        try:
            with Image.open(src) as im:
                img = im.convert("RGB")
        except OSError as e:
            print(f"skip {src}: {e}")
            continue
        held = is_heldout(src, args.heldout_fraction)
        name = f"{i:04d}_{src.stem[:40]}"
        if held:
            small = resize_short(img, args.heldout_size)
            w, h = small.size
            x0, y0 = (w - args.heldout_size) // 2, (h - args.heldout_size) // 2
            small.crop((x0, y0, x0 + args.heldout_size, y0 + args.heldout_size)).save(out / "heldout" / f"{name}.png")
        else:
            for c in range(args.crops):
                small = resize_short(img, int(rng.choice(args.scales)))
                w, h = small.size
                x0, y0 = int(rng.integers(0, w - args.crop + 1)), int(rng.integers(0, h - args.crop + 1))
                small.crop((x0, y0, x0 + args.crop, y0 + args.crop)).save(out / "train" / f"{name}_{c:02d}.png")
        record.append({"source": str(src), "package": package_of(src), "split": "heldout" if held else "train"})
        print(f"[{i + 1}/{len(sources)}] {'heldout' if held else 'train  '} {src}", flush=True)
    (out / "sources.json").write_text(json.dumps(record, indent=1) + "\n")
    n_held = sum(r["split"] == "heldout" for r in record)
    print(f"{len(record)} sources: {len(record) - n_held} train, {n_held} held out -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
