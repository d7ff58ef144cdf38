"""Float64 reference for the nearest-codebook search. Slow and O(N x K) memory: tests only."""

import torch


def nearest_code_naive(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest code in float64.

    Args:
        x: (N, D) any float dtype.
        codebook: (K, D) any float dtype.

    Returns:
        indices: (N,) int64, the first index of the minimum.
        sqdist: (N, K) float64, every squared distance (so callers can check ties and tolerances).
    """
    x64, c64 = x.double(), codebook.double()
    sqdist = ((x64[:, None, :] - c64[None, :, :]) ** 2).sum(-1)  # (N, K)
    return sqdist.argmin(dim=1), sqdist
