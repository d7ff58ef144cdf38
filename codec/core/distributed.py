"""Thin wrappers over torch.distributed that are no-ops in a single process.

Every collective here must be called the same number of times, in the same order, on every rank; callers
only branch on values that are already identical across ranks (all-reduced or broadcast).
"""

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In-place copy of rank ``src``'s tensor to every rank."""
    if is_distributed():
        dist.broadcast(t, src=src)
    return t


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate (M_r, D) tensors from every rank in rank order; M_r may differ (and be 0).

    Returns:
        (sum_r M_r, D) tensor, identical on every rank.
    """
    if not is_distributed():
        return x
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    if longest == 0:  # decided from gathered sizes, so every rank skips the second collective together
        return x
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)], dim=0)
