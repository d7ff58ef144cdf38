"""Colour and edge fidelity of an image codec, measured through real ``.vqc`` files.

- Colour card: flat patches of saturated colours (the RGB cube's corners and a few named colours) and horizontal
  ramps between saturated colours, 64 px each. Reported per level: the worst per-channel error (0-255, after 8-bit
  rounding) over the patches' interiors (8 px in from every patch edge, so edges between patches do not count),
  the patch that has it, and the worst error along the ramps' interiors.
- Colour sweep: the same measure over flat patches of every colour on the RGB cube's edges (each of the 12 edges in
  steps of 17: 176 colours, the 8 corners included), a grid of 64 px patches, so a codec cannot pass by knowing the
  card's twelve colours. Reported per level: the fraction of colours within 8/255 (the issue's tolerance), the
  median, and the worst colour.
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
SWEEP_STEP = 17  # 0, 17, ..., 255: 16 values along each cube edge
SWEEP_PER_ROW = 16
TOLERANCE = 8  # per channel, of 255


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


def sweep_colours() -> list[tuple[int, int, int]]:
    """The 176 colours on the RGB cube's edges in steps of SWEEP_STEP (two channels at 0 or 255), sorted."""
    values = range(0, 256, SWEEP_STEP)
    colours = set()
    for a in (0, 255):
        for b in (0, 255):
            for v in values:
                colours |= {(v, a, b), (a, v, b), (a, b, v)}
    return sorted(colours)


def sweep_card() -> tuple[torch.Tensor, list[tuple[tuple[int, int, int], slice, slice]]]:
    """The sweep's grid (3, 64 * rows, 64 * SWEEP_PER_ROW) in [0, 1] (black where the last row has no colour), and
    (colour, row slice, column slice) of each patch."""
    colours = sweep_colours()
    rows = -(-len(colours) // SWEEP_PER_ROW)
    card = torch.zeros(3, rows * PATCH, SWEEP_PER_ROW * PATCH)
    cells = []
    for i, rgb in enumerate(colours):
        r, c = divmod(i, SWEEP_PER_ROW)
        ys, xs = slice(r * PATCH, (r + 1) * PATCH), slice(c * PATCH, (c + 1) * PATCH)
        card[:, ys, xs] = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255
        cells.append((rgb, ys, xs))
    return card, cells


def _inner(cols: slice) -> slice:
    return slice(cols.start + MARGIN, cols.stop - MARGIN)


def _coded_errors(image: torch.Tensor, model, n: int | None, prior, refine: int) -> torch.Tensor:
    """(3, H, W) per-channel absolute errors, 0-255 after 8-bit rounding, of `image` through a real .vqc file."""
    data = compress(image, model, prior=prior, num_quantizers=n, refine=refine)
    got = (decompress(data, model).data.clamp(0, 1) * 255).round()
    return (got - (image * 255).round()).abs()


def colour_sweep(model, levels: list[int | None], prior="auto", refine: int = 0) -> list[dict]:
    """One row per level over the sweep's 176 flat colours: the fraction within TOLERANCE, the median and the worst
    per-channel error (0-255) of the patches' interiors, and the worst colour."""
    card, cells = sweep_card()
    rows = []
    for n in levels:
        err = _coded_errors(card, model, n, prior, refine)
        worst = torch.tensor([float(err[:, _inner(ys), _inner(xs)].amax()) for _, ys, xs in cells])
        i = int(worst.argmax())
        rows.append(
            dict(
                level=n or model.num_quantizers,
                colours=len(cells),
                within_tolerance=int((worst <= TOLERANCE).sum()) / len(cells),
                median_error=float(worst.median()),
                max_error=float(worst[i]),
                worst_colour=list(cells[i][0]),
            )
        )
    return rows


def colour_errors(model, levels: list[int | None], prior="auto", refine: int = 0) -> list[dict]:
    """One row per level: the card's worst per-channel errors (0-255) on flat patches and on ramps."""
    card, patches, ramps = colour_card()
    rows = []
    for n in levels:
        err = _coded_errors(card, model, n, prior, refine)  # (3, H, W)
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
