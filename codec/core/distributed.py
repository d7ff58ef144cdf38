"""Thin wrappers over torch.distributed that are no-ops in a single process.

Every collective here must be called the same number of times, in the same order, on every rank; callers
only branch on values that are already identical across ranks (all-reduced or broadcast).
"""

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from codec.store.device import resolve_device

# Collectives of jobs where processes wait for one another's share of the work (tokenizing a data set) may wait
# for hours; a process that dies makes torchrun / accelerate launch stop the others.
LONG_WAIT = timedelta(hours=48)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def launched_world_size() -> int:
    """Processes that ``torchrun`` / ``accelerate launch`` started (WORLD_SIZE in the environment), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_launched_group(timeout: timedelta = LONG_WAIT) -> bool:
    """Join the process group ``torchrun`` / ``accelerate launch`` describe in the environment, over gloo (the
    few collectives of coordination need no GPU backend); True when this call created it. A no-op (False) in a
    plain process or when a group exists already."""
    if launched_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    dist.init_process_group("gloo", timeout=timeout)
    return True


def process_device(device: str | torch.device | None = None) -> torch.device:
    """``resolve_device(device)``, except that "cuda" (or None on a CUDA machine) under a launcher means this
    process's own GPU, ``cuda:LOCAL_RANK`` (modulo the GPUs visible)."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and launched_world_size() > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device("cuda", local % torch.cuda.device_count())
    return dev


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_agree(ok: bool) -> bool:
    """Whether ``ok`` holds on every rank (a collective: every rank must call it)."""
    if not is_distributed():
        return ok
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([0 if ok else 1], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.SUM)
    return int(flag) == 0


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
