"""Synthetic training images of saturated colours: flat regions, sharp edges between them, and smooth gradients.

    python tools/make_colour_corpus.py --out data/images/colour --count 300

Photographs and wallpapers rarely hold flat, fully saturated colours (pure green, magenta, deep blue), so a codec
trained on them alone maps those to the nearest colour it has seen (pure green came back near-black from the first
bundled model). Mixed into the training folder (a tenth of the crops or so), these teach the corners of the RGB
cube. Each image is ``--size`` pixels square: a background, then rectangles and discs of colours drawn from the
cube's corners, its edges (one channel free) and random fully saturated hues, and linear gradients between two such
colours, in random layouts (``--seed``). Written as PNG; made here, so no licence applies.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CORNERS = [(r, g, b) for r in (0, 255) for g in (0, 255) for b in (0, 255)]


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A cube corner, a point on a cube edge (two channels at 0 or 255), or a random saturated hue."""
    kind = rng.integers(3)
    if kind == 0:
        return CORNERS[rng.integers(len(CORNERS))]
    c = [int(v) for v in rng.choice([0, 255], size=3)]
    c[int(rng.integers(3))] = int(rng.integers(256))
    if kind == 1:
        return tuple(c)
    hue = rng.random() * 6  # HSV with S = 1, V in [0.5, 1]
    v = 255 * (0.5 + 0.5 * rng.random())
    x = v * (1 - abs(hue % 2 - 1))
    rgb = [(v, x, 0), (x, v, 0), (0, v, x), (0, x, v), (x, 0, v), (v, 0, x)][int(hue)]
    return tuple(int(round(t)) for t in rgb)


def gradient(size: int, a, b, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) uint8: a linear ramp from colour a to colour b along a random direction."""
    angle = rng.random() * 2 * np.pi
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())
    ramp = np.asarray(a, np.float64) * (1 - t[..., None]) + np.asarray(b, np.float64) * t[..., None]
    return ramp.round().astype(np.uint8)


def make_image(size: int, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.3:
        img = Image.fromarray(gradient(size, random_colour(rng), random_colour(rng), rng))
    else:
        img = Image.new("RGB", (size, size), random_colour(rng))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 9))):
        x0, y0 = (int(v) for v in rng.integers(-size // 4, size, 2))
        w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
        box = (x0, y0, x0 + w, y0 + h)
        if rng.random() < 0.25:  # a gradient patch
            patch = Image.fromarray(gradient(max(w, h), random_colour(rng), random_colour(rng), rng))
            img.paste(patch.crop((0, 0, w, h)), (x0, y0))
        elif rng.random() < 0.5:
            draw.rectangle(box, fill=random_colour(rng))
        else:
            draw.ellipse(box, fill=random_colour(rng))
    return img


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--count", type=int, default=300, help="images (default 300)")
    ap.add_argument("--size", type=int, default=256, help="side in pixels (default 256)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.count):
        make_image(args.size, rng).save(out / f"colour_{i:04d}.png")
    print(f"{args.count} images -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
