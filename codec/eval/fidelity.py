"""Colour and edge fidelity of an image codec, measured through real ``.vqc`` files.

- Colour card: flat patches of saturated colours (the RGB cube's corners and a few named colours) and horizontal
  ramps between saturated colours, 64 px each. Reported per level: the worst per-channel error (0-255, after 8-bit
  rounding) over the patches' interiors (8 px in from every patch edge, so edges between patches do not count),
  the patch that has it, and the worst error along the ramps' interiors.
- Edges: on the evaluated images, the mean squared error of each outermost column and row divided by the mean
  squared error of the interior (8 px in); 1 is an edge coded as well as the interior. Reported per level: the mean
  over images of each of the four ratios, and the worst ratio over images and sides.
"""

import torch

from codec.bitstream.compress import compress
from codec.bitstream.decompress import decompress

PATCH = 64
MARGIN = 8  # pixels left out at every patch edge and image edge
CARD_COLOURS = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "cyan": (0, 255, 255),
    "magenta": (255, 0, 255), "yellow": (255, 255, 0), "white": (255, 255, 255), "black": (0, 0, 0),
    "forest green": (34, 139, 34), "orange": (255, 127, 0), "navy": (0, 0, 128), "gray": (128, 128, 128),
}  # fmt: skip
RAMPS = (("red", "blue"), ("green", "magenta"), ("yellow", "cyan"), ("black", "white"))


def colour_card() -> tuple[torch.Tensor, list[tuple[str, slice]], list[tuple[str, slice]]]:
    """The test card (3, 128, 768) in [0, 1]: a row of flat patches above a row of ramps.

    Returns:
        (image, patches, ramps): ``patches`` and ``ramps`` are (name, column slice) of each cell in its row.
    """
    n = len(CARD_COLOURS)
    card = torch.zeros(3, 2 * PATCH, n * PATCH)
    patches = []
    for i, (name, rgb) in enumerate(CARD_COLOURS.items()):
        cols = slice(i * PATCH, (i + 1) * PATCH)
        card[:, :PATCH, cols] = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255
        patches.append((name, cols))
    ramps = []
    width = n * PATCH // len(RAMPS)
    t = torch.linspace(0, 1, width)
    for i, (a, b) in enumerate(RAMPS):
        ca, cb = (torch.tensor(CARD_COLOURS[c], dtype=torch.float32).view(3, 1) / 255 for c in (a, b))
        cols = slice(i * width, (i + 1) * width)
        card[:, PATCH:, cols] = (ca * (1 - t) + cb * t)[:, None, :]
        ramps.append((f"{a}-{b}", cols))
    return card, patches, ramps


def _inner(cols: slice) -> slice:
    return slice(cols.start + MARGIN, cols.stop - MARGIN)


def colour_errors(model, levels: list[int | None], prior="auto", refine: int = 0) -> list[dict]:
    """One row per level: the card's worst per-channel errors (0-255) on flat patches and on ramps."""
    card, patches, ramps = colour_card()
    want = (card * 255).round()
    rows = []
    for n in levels:
        data = compress(card, model, prior=prior, num_quantizers=n, refine=refine)
        got = (decompress(data, model).data.clamp(0, 1) * 255).round()
        err = (got - want).abs()  # (3, H, W)
        flat = {name: float(err[:, MARGIN : PATCH - MARGIN, _inner(c)].amax()) for name, c in patches}
        ramp = {name: float(err[:, PATCH + MARGIN : 2 * PATCH - MARGIN, _inner(c)].amax()) for name, c in ramps}
        worst = max(flat, key=flat.get)
        rows.append(
            dict(
                level=n or model.num_quantizers,
                flat_max_error=flat[worst],
                flat_worst_patch=worst,
                ramp_max_error=max(ramp.values()),
                flat_errors=flat,
            )
        )
    return rows


def edge_ratios(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """MSE of the left, right, top and bottom outermost lines of (C, H, W) images over the interior MSE."""
    se = (y - x).square().mean(dim=0)  # (H, W)
    interior = float(se[MARGIN:-MARGIN, MARGIN:-MARGIN].mean())
    lines = {"left": se[:, 0], "right": se[:, -1], "top": se[0], "bottom": se[-1]}
    return {k: float(v.mean()) / max(interior, 1e-12) for k, v in lines.items()}
