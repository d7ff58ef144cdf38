"""Build an image corpus from the photographs that Debian's wallpaper packages install.

    apt-get install gnome-backgrounds mate-backgrounds plasma-workspace-wallpapers ukui-wallpapers
    python tools/make_image_corpus.py --out data/images

Every raster image (JPEG, PNG, WebP) under the packages' folders is a file of some photograph; SVG drawings and
Plasma's ``screenshot.*`` previews are skipped. Files of one photograph (the sizes and light/dark variants of a
Plasma wallpaper folder, ``Name_3840x2160.jpg`` beside ``Name.jpg``, GNOME's ``name-l``/``name-d``) form one
source. Sources are split into train and held-out by a hash of their key (``--heldout-fraction``), so no crop of
a held-out photograph, at any size, is ever trained on. For each source:

- train/: ``--crops`` random crops of ``--crop`` pixels, each from a random file of the source downscaled so its
  short side is one of ``--scales`` (random crops at several scales; a scale above the file's own short side is
  not used, so nothing is upscaled), as PNG;
- heldout/: one centre crop of ``--heldout-size`` pixels from its largest file downscaled to that short side.

The crops are deterministic (``--seed``). Licences: each package's /usr/share/doc/PKG/copyright (GPL-2+,
CC-BY-SA and similar open licences). ``sources.json`` lists every source with its files, package, split, that
copyright file, and for Plasma wallpapers the licence and authors of their own ``metadata.json``.
"""

import argparse
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from codec.train.data import unit_hash

DEFAULT_ROOTS = ("/usr/share/backgrounds", "/usr/share/wallpapers")
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}


def package_of(path: Path) -> str | None:
    try:
        out = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    return out.split(":", 1)[0] if out else None


def licence_of(path: Path, package: str | None) -> dict:
    """What is known of a file's licence: a Plasma wallpaper's own metadata.json (licence, authors), and the
    package's Debian copyright file, which lists the licence of every file it ships."""
    info = {"copyright_file": f"/usr/share/doc/{package}/copyright" if package else None}
    parts = path.parts
    if "contents" in parts:
        meta = Path(*parts[: parts.index("contents")]) / "metadata.json"
        try:
            plugin = json.loads(meta.read_text(encoding="utf-8")).get("KPlugin", {})
        except (OSError, ValueError):
            plugin = {}
        if plugin.get("License"):
            info["license"] = plugin["License"]
        authors = [a.get("Name") for a in plugin.get("Authors", []) if isinstance(a, dict) and a.get("Name")]
        if authors:
            info["authors"] = authors
    return info


def photo_key(path: Path) -> str:
    """The photograph a file shows: a Plasma wallpaper's folder, else the stem without size or light/dark tags."""
    parts = path.parts
    if "contents" in parts:  # /usr/share/wallpapers/NAME/contents/images*/WxH.ext
        return parts[parts.index("contents") - 1]
    stem = re.sub(r"[_-]?\d{3,5}x\d{3,5}$", "", path.stem)
    return re.sub(r"-[ld]$", "", stem)


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

    files = sorted(
        p
        for root in args.roots
        if Path(root).is_dir()
        for p in Path(root).rglob("*")
        if p.suffix.lower() in EXTENSIONS and p.stem != "screenshot"
    )
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in files:
        groups[photo_key(p)].append(p)
    out = Path(args.out)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    record = []
    for i, key in enumerate(sorted(groups)):
        images = {}
        for src in groups[key]:
            try:
                with Image.open(src) as im:
                    images[src] = im.convert("RGB")
            except OSError as e:
                print(f"skip {src}: {e}")
        if not images:
            continue
        held = unit_hash(key) < args.heldout_fraction
        name = f"{i:04d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', key)[:40]}"
        paths = sorted(images)
        if held:
            img = max(images.values(), key=lambda im: im.size[0] * im.size[1])
            if min(img.size) < args.heldout_size:  # never upscale a test image
                print(f"skip {key}: {img.size[0]}x{img.size[1]} is smaller than the held-out crop", flush=True)
                continue
            small = resize_short(img, args.heldout_size)
            w, h = small.size
            x0, y0 = (w - args.heldout_size) // 2, (h - args.heldout_size) // 2
            small.crop((x0, y0, x0 + args.heldout_size, y0 + args.heldout_size)).save(out / "heldout" / f"{name}.png")
        else:
            usable = [p for p in paths if min(images[p].size) >= args.crop]
            if not usable:
                print(f"skip {key}: every file is smaller than a crop", flush=True)
                continue
            for c in range(args.crops):
                img = images[usable[int(rng.integers(len(usable)))]]
                # never upscale: the scales the file can give, else its own size
                scales = [t for t in args.scales if t <= min(img.size)] or [min(img.size)]
                small = resize_short(img, int(rng.choice(scales)))
                w, h = small.size
                x0, y0 = int(rng.integers(0, w - args.crop + 1)), int(rng.integers(0, h - args.crop + 1))
                small.crop((x0, y0, x0 + args.crop, y0 + args.crop)).save(out / "train" / f"{name}_{c:02d}.png")
        split = "heldout" if held else "train"
        package = package_of(paths[0])
        entry = {"photo": key, "files": [str(p) for p in paths], "package": package, "split": split}
        record.append({**entry, **licence_of(paths[0], package)})
        print(f"[{i + 1}/{len(groups)}] {split:7s} {key} ({len(paths)} files)", flush=True)
    (out / "sources.json").write_text(json.dumps(record, indent=1) + "\n")
    n_held = sum(r["split"] == "heldout" for r in record)
    print(f"{len(record)} sources: {len(record) - n_held} train, {n_held} held out -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
