"""Overlapping windows over a token grid, and the batches they run in: how ``Codec`` encodes and decodes inputs
of any size in bounded memory.

A window is one tuple per grid axis, ``(core0, core1, ctx0, ctx1)`` with ``ctx0 <= core0 < core1 <= ctx1``: the
network sees tokens ``ctx0..ctx1`` (or the samples under them) and the result keeps ``core0..core1``. The cores
tile the grid; the context on each side covers the networks' receptive field, so windowed results equal
whole-input results (every layer is local).

A job is one window of one item; jobs whose windows have the same shape can run as one batch.

``framing`` places an image in its token grid (with or without a margin of replicated edge around it).
"""

from itertools import product
from math import prod

Window = tuple[tuple[int, int, int, int], ...]

# Grid positions (tokens per level) per forward pass when windows of several items or tiles are stacked:
# 4 tiles of 80 x 80 tokens (640 px at f = 8), about 0.2 GB of activations on the bundled image network.
BATCH_POSITIONS = 4 * 80 * 80

MAX_MARGIN = 64  # pixels
# The margin .vqc files code images in (format version 6; ``codec.compress``, ``codec encode``). Measured on 4
# held-out 512 px photographs with the bundled model, at 2 levels: the worst outermost row or column 1.04x the
# interior's squared error instead of 2.43x, PSNR +0.06 dB, 3% more bytes.
IMAGE_MARGIN = 2


def check_margin(margin) -> int:
    """``margin`` if it is an int in [0, MAX_MARGIN]; else ValueError."""
    if type(margin) is not int or not 0 <= margin <= MAX_MARGIN:
        raise ValueError(f"margin must be an int in [0, {MAX_MARGIN}], got {margin!r}")
    return margin


def framing(size: int, factor: int, margin: int = 0) -> tuple[int, int]:
    """Where an image axis of ``size`` pixels lies in its token grid: (grid, lead).

    margin 0: the image starts at the grid's first pixel and the last token covers its end (``grid = ceil(size /
    factor)``, ``lead = 0``; the rest is mirrored). margin m > 0: at least m pixels of replicated edge on both
    sides, the image centred: ``grid = ceil((size + 2m) / factor)``, ``lead = (grid * factor - size) // 2`` pixels
    before it. Replicated edges are coded as smooth extensions, so the outermost rows and columns are coded about
    as well as the interior (without: up to 2-3x the interior's squared error on photographs; docs/format.md).
    """
    if margin == 0:
        return -(-size // factor), 0
    grid = -(-(size + 2 * margin) // factor)
    return grid, (grid * factor - size) // 2


def plan_windows(grid: tuple[int, ...], size: int, context: int) -> list[Window]:
    """Windows over ``grid``: one covering everything when every axis fits in ``size + 2 * context``, else cores
    of ``size`` tokens with up to ``context`` tokens of context on each side (in row-major order)."""
    if all(n <= size + 2 * context for n in grid):
        return [tuple((0, n, 0, n) for n in grid)]
    per_axis = [
        [(a, min(n, a + size), max(0, a - context), min(n, a + size + context)) for a in range(0, n, size)]
        for n in grid
    ]
    return [tuple(w) for w in product(*per_axis)]


def window_shape(window: Window) -> tuple[int, ...]:
    """Tokens along each axis of the window's context."""
    return tuple(c1 - c0 for _, _, c0, c1 in window)


def core_slices(window: Window, scale: int = 1) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(where the core lies in the whole grid, where it lies in the window's result), times ``scale`` samples
    per token (1 for tokens, f or the hop for samples)."""
    dst = tuple(slice(a * scale, b * scale) for a, b, _, _ in window)
    src = tuple(slice((a - c0) * scale, (b - c0) * scale) for a, b, c0, _ in window)
    return dst, src


def batched(jobs: list, key_of, positions: int = BATCH_POSITIONS) -> list[list]:
    """Jobs grouped by ``key_of(job) = (anything hashable, window shape)`` in order of first appearance, each
    group cut into batches of at most ``positions`` grid positions (at least one job each)."""
    groups: dict = {}
    for job in jobs:
        groups.setdefault(key_of(job), []).append(job)
    out = []
    for (_, shape), members in groups.items():
        per = max(1, positions // prod(shape))
        out += [members[i : i + per] for i in range(0, len(members), per)]
    return out
