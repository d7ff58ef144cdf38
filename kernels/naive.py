"""Float64 reference for the nearest-codebook search. Slow and O(N x K) output memory: tests only."""

import torch


def nearest_code_naive(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest code in float64, from explicit differences (no norm expansion).

    Args:
        x: (N, D) any float dtype.
        codebook: (K, D) any float dtype.

    Returns:
        indices: (N,) int64, the first index of the minimum.
        sqdist: (N, K) float64, every squared distance (so callers can check ties and tolerances).
    """
    x64, c64 = x.double().cpu(), codebook.double().cpu()
    n, k = x64.shape[0], c64.shape[0]
    sqdist = torch.empty(n, k, dtype=torch.float64)
    rows = max(1, (32 << 20) // (8 * max(1, k * c64.shape[1])))  # (rows, K, D) temporary <= 32 MiB
    for r0 in range(0, n, rows):
        diff = x64[r0 : r0 + rows, None, :] - c64[None, :, :]
        sqdist[r0 : r0 + rows] = diff.pow_(2).sum(-1)
    return sqdist.argmin(dim=1), sqdist
