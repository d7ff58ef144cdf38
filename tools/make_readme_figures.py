"""The README's pictures: a side-by-side crop of ours / JPEG / WebP at the same file size, and the colour card.

    python tools/make_readme_figures.py --image data/images/heldout/0014_Dragonfly_by_Bolly.png --out docs/images

For the photo: the whole image is coded with the bundled image model at ``--levels`` residual levels (a real
``.vqc`` file), then JPEG and WebP at the Pillow quality whose size is closest to it (``codec.eval.image``); a
``--crop`` px square at ``--at`` of the original and of each decoding is shown 2x enlarged (nearest neighbour),
each labelled with its codec, bpp of the whole image and PSNR of the whole image. The colour card
(``codec.eval.fidelity``) is shown above its decoding at the same levels.
"""

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import codec
from codec.eval.fidelity import colour_card
from codec.eval.image import match_bpp, psnr, to_pil
from codec.media import read_image


def labelled(img: Image.Image, text: str, scale: int = 2) -> Image.Image:
    big = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    out = Image.new("RGB", (big.width, big.height + 18), "white")
    out.paste(big, (0, 18))
    ImageDraw.Draw(out).text((4, 3), text, fill="black")
    return out


def row(images: list[Image.Image], gap: int = 6) -> Image.Image:
    out = Image.new(
        "RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)), "white"
    )
    x = 0
    for i in images:
        out.paste(i, (x, 0))
        x += i.width + gap
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True, help="a held-out photograph")
    ap.add_argument("--model", default="image", help="image codec (default: the bundled one)")
    ap.add_argument("--levels", type=int, default=2, help="residual levels (default 2)")
    ap.add_argument("--crop", type=int, default=160, help="crop side in pixels (default 160)")
    ap.add_argument("--at", type=int, nargs=2, default=(176, 176), metavar=("X", "Y"), help="crop corner")
    ap.add_argument("--out", default="docs/images", help="output folder")
    args = ap.parse_args(argv)
    model = codec.load(args.model, device="cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    x = read_image(args.image).pixels
    pixels = x.shape[1] * x.shape[2]
    data = codec.compress(args.image, model, num_quantizers=args.levels)
    ours = codec.decompress(data, model).data.clamp(0, 1)
    x0, y0 = args.at
    box = (..., slice(y0, y0 + args.crop), slice(x0, x0 + args.crop))
    tiles = [labelled(to_pil(x[box]), "original")]
    tiles.append(labelled(to_pil(ours[box]), f"vqcodec {len(data) * 8 / pixels:.3f} bpp {psnr(x, ours):.1f} dB"))
    for peer in ("JPEG", "WebP"):
        _, size, z = match_bpp(x, peer, len(data))
        tiles.append(labelled(to_pil(z[box]), f"{peer} {size * 8 / pixels:.3f} bpp {psnr(x, z):.1f} dB"))
    row(tiles).save(out / "compare.png")

    card, _, _ = colour_card()
    got = codec.decompress(codec.compress(card, model, num_quantizers=args.levels), model).data.clamp(0, 1)
    both = torch.cat([card, torch.ones(3, 4, card.shape[2]), got], dim=1)
    labelled(to_pil(both), f"colour card: original above, vqcodec at {args.levels} levels below", scale=1).save(
        out / "colour_card.png"
    )
    print(f"wrote {out / 'compare.png'} and {out / 'colour_card.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
