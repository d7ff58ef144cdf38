"""Lloyd's k-means on a batch of vectors, searching codebooks through kernels.nearest_code."""

import torch

from kernels import nearest_code


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster ``x`` into ``k`` centroids.

    Centroids start at distinct random samples (with replacement when M < k); a cluster that empties is
    re-seeded with a random sample, so few codes start dead.

    Args:
        x: (M, D) float32, M >= 1.
        k: number of centroids.
        iters: Lloyd iterations.

    Returns:
        centroids: (k, D) float32.
        counts: (k,) float32, the size of each cluster under the final centroids.
    """
    m, d = x.shape
    start = torch.randperm(m, device=x.device)[:k] if m >= k else torch.randint(0, m, (k,), device=x.device)
    centroids = x[start].clone()
    counts = torch.zeros(k, device=x.device)
    for _ in range(iters):
        idx, _ = nearest_code(x, centroids)
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros(k, d, device=x.device).index_add_(0, idx, x)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1.0)[:, None])
        n_empty = int(empty.sum())
        if n_empty:
            centroids[empty] = x[torch.randint(0, m, (n_empty,), device=x.device)]
    idx, _ = nearest_code(x, centroids)
    counts = torch.bincount(idx, minlength=k).float()
    return centroids, counts
