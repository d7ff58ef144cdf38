"""The one token order, shared by the prior and the bitstream: grids as (L, H, W), flattened in raster order with
the residual level innermost.

    image (h, w)         -> (1, h, w)
    image (n_q, h, w)    -> (n_q, h, w)
    audio (n_q, t)       -> (n_q, 1, t)       a one-row image whose columns are frames

Flat position p = (row * W + col) * L + level: the residual levels of one position (one audio frame) come in
order, coarse to fine, before the next position. A token shape with a level axis (``residual``) has it first.
"""

import torch


def grid_layout(shape, modality: str, residual: bool) -> tuple[int, int, int]:
    """(L, H, W) of one item's token shape (no batch axis): (h, w), (n_q, h, w) or (n_q, t)."""
    shape = tuple(int(s) for s in shape)
    if modality == "audio":
        return (shape[0], 1, shape[1])
    return shape if residual else (1, *shape)


def flatten(tokens: torch.Tensor, residual: bool) -> torch.Tensor:
    """(B, *shape) -> (B, N) in raster order (level innermost)."""
    if residual:  # (B, L, ...) -> (B, ..., L)
        tokens = tokens.movedim(1, -1)
    return tokens.reshape(tokens.shape[0], -1)


def unflatten(flat: torch.Tensor, shape, residual: bool) -> torch.Tensor:
    """(B, N, *rest) -> (B, *shape, *rest): the inverse of ``flatten``."""
    shape, rest = tuple(int(s) for s in shape), flat.shape[2:]
    if not residual:
        return flat.reshape(flat.shape[0], *shape, *rest)
    return flat.reshape(flat.shape[0], *shape[1:], shape[0], *rest).movedim(len(shape), 1)


def raster(tokens: torch.Tensor, residual: bool) -> torch.Tensor:
    """One item's tokens (h, w), (n_q, h, w) or (n_q, t) -> (N,) in raster order."""
    return flatten(tokens[None], residual)[0]


def unraster(flat: torch.Tensor, shape, residual: bool) -> torch.Tensor:
    """The inverse of ``raster``: (N,) -> ``shape``."""
    return unflatten(flat[None], shape, residual)[0]


def positions(layout: tuple[int, int, int], start: int, stop: int, device=None) -> torch.Tensor:
    """Position features of flat positions start..stop-1 of a grid: (n, 5) int64 (row, col, level, down, right).

    ``down`` and ``right`` count the rows below and the columns to the right of the position.
    """
    return flat_positions(layout, torch.arange(start, stop, device=device))


def flat_positions(layout: tuple[int, int, int], flat: torch.Tensor) -> torch.Tensor:
    """Position features (..., 5) int64 (row, col, level, down, right) of flat raster positions ``flat`` (...)."""
    levels, height, width = layout
    level, cell = flat % levels, flat // levels
    row, col = cell // width, cell % width
    return torch.stack([row, col, level, height - 1 - row, width - 1 - col], dim=-1)
