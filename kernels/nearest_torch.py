"""Chunked PyTorch nearest-codebook search: addmm + min over tiles, bounded temporary memory."""

import torch

# Scores tile budget: rows x codes x 4 bytes. 8 MiB was fastest at N=65536, D=64, K=1024 on 2 threads
# (tools/bench_kernels.py; 1 MiB tiles were 1.45x slower) and keeps the peak extra memory of a search at
# N = 1M, K = 8192 far below 64 MiB.
DEFAULT_TILE_BYTES = 8 << 20


def nearest_code_torch(
    x: torch.Tensor,
    codebook: torch.Tensor,
    indices: torch.Tensor,
    sqdist: torch.Tensor,
    tile_bytes: int = DEFAULT_TILE_BYTES,
) -> None:
    """Write the nearest code of every row of ``x`` into ``indices`` and its squared distance into ``sqdist``.

    Scores ``||c||^2 - 2 x.c`` are computed in fp32 on (rows, codes) tiles sized by ``tile_bytes``; a running
    (min, argmin) is kept across code tiles when K alone exceeds the budget. The returned distance is the
    exact fp32 ``||x - c||^2`` of the chosen code, not the expanded score (no cancellation error).

    Args:
        x: (N, D) float32 / float16 / bfloat16.
        codebook: (K, D), same dtype and device as ``x``.
        indices: (N,) int64 output.
        sqdist: (N,) float32 output.
        tile_bytes: memory budget of one score tile.
    """
    n, k = x.shape[0], codebook.shape[0]
    c = codebook.float()  # (K, D)
    cnorm = (c * c).sum(dim=1)  # (K,)
    k_tile = max(1, min(k, tile_bytes // (4 * 64)))  # at least 64 rows per tile when K is huge
    rows = max(1, min(n, tile_bytes // (4 * k_tile)))
    scores = torch.empty(rows, k_tile, dtype=torch.float32, device=x.device)
    best = torch.empty(rows, dtype=torch.float32, device=x.device)
    best_idx = torch.empty(rows, dtype=torch.int64, device=x.device)
    tile_min = torch.empty(rows, dtype=torch.float32, device=x.device)
    tile_idx = torch.empty(rows, dtype=torch.int64, device=x.device)
    chosen = torch.empty(rows, x.shape[1], dtype=torch.float32, device=x.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        m = r1 - r0
        xc = x[r0:r1].float()  # (m, D)
        for k0 in range(0, k, k_tile):
            k1 = min(k, k0 + k_tile)
            s = scores[:m, : k1 - k0]
            torch.addmm(cnorm[k0:k1], xc, c[k0:k1].T, beta=1, alpha=-2, out=s)  # (m, kt)
            if k1 - k0 == k:  # one tile holds every code: argmin alone, no running minimum
                torch.argmin(s, dim=1, out=best_idx[:m])
            elif k0 == 0:
                torch.min(s, dim=1, out=(best[:m], best_idx[:m]))
            else:
                torch.min(s, dim=1, out=(tile_min[:m], tile_idx[:m]))
                better = tile_min[:m] < best[:m]
                best[:m] = torch.where(better, tile_min[:m], best[:m])
                best_idx[:m] = torch.where(better, tile_idx[:m] + k0, best_idx[:m])
        indices[r0:r1] = best_idx[:m]
        diff = torch.index_select(c, 0, best_idx[:m], out=chosen[:m]).sub_(xc)  # (m, D), exact difference
        torch.linalg.vecdot(diff, diff, out=sqdist[r0:r1])
