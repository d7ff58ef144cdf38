"""Public entry point of the nearest-codebook search: validation and backend dispatch."""

import os

import torch

from kernels.errors import BackendUnavailableError
from kernels.nearest_torch import nearest_code_torch


def _triton():
    """``kernels.nearest_triton``, imported on first use: importing Triton costs about 0.2 s, a tenth of a CPU-only
    CLI call that never runs it."""
    from kernels import nearest_triton

    return nearest_triton


SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BACKENDS = ("auto", "triton", "torch")
# "torch" here makes backend="auto" use the PyTorch path everywhere (a fallback where Triton misbehaves)
AUTO_ENV = "VQCODEC_NEAREST_BACKEND"


def triton_available(device: torch.device | str = "cuda") -> bool:
    """Whether ``backend="triton"`` can run on tensors of ``device`` in this process."""
    return _triton().triton_usable(torch.device(device))


def _validate(x: torch.Tensor, codebook: torch.Tensor, backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, t in (("x", x), ("codebook", codebook)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{name} must have shape ({'N' if name == 'x' else 'K'}, D), got {tuple(t.shape)}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{name} dtype must be float32, float16 or bfloat16, got {t.dtype}")
    if x.dtype != codebook.dtype:
        raise ValueError(f"x and codebook dtypes differ: {x.dtype} vs {codebook.dtype}")
    if x.device != codebook.device:
        raise ValueError(f"x and codebook are on different devices: {x.device} vs {codebook.device}")
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(f"dimension mismatch: x has D={x.shape[1]}, codebook has D={codebook.shape[1]}")
    if codebook.shape[0] == 0 or codebook.shape[1] == 0:
        raise ValueError(f"codebook must have K >= 1 codes of D >= 1, got {tuple(codebook.shape)}")
    if not torch.isfinite(codebook).all():
        raise ValueError("codebook contains non-finite values (nan or inf)")
    if x.numel():
        lo, hi = torch.aminmax(x)  # one pass, O(1) extra memory; nan and inf propagate
        if not (torch.isfinite(lo) and torch.isfinite(hi)):
            raise ValueError("x contains non-finite values (nan or inf)")


def _check_out(out, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if out is None:
        return (
            torch.empty(n, dtype=torch.int64, device=device),
            torch.empty(n, dtype=torch.float32, device=device),
        )
    indices, sqdist = out
    if indices.shape != (n,) or indices.dtype != torch.int64 or indices.device != device:
        raise ValueError(f"out[0] must be an int64 tensor of shape ({n},) on {device}")
    if sqdist.shape != (n,) or sqdist.dtype != torch.float32 or sqdist.device != device:
        raise ValueError(f"out[1] must be a float32 tensor of shape ({n},) on {device}")
    if not (indices.is_contiguous() and sqdist.is_contiguous()):
        raise ValueError("out tensors must be contiguous")
    return indices, sqdist


@torch.no_grad()
def nearest_code(
    x: torch.Tensor,
    codebook: torch.Tensor,
    *,
    backend: str = "auto",
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codebook entry (squared L2) for every row of ``x``.

    Args:
        x: (N, D) float32, float16 or bfloat16. N may be 0.
        codebook: (K, D), same dtype and device as ``x``; K >= 1.
        backend: ``"auto"`` (Triton on CUDA tensors, PyTorch otherwise), ``"triton"`` (CUDA, or CPU with
            ``TRITON_INTERPRET=1`` set before triton is imported) or ``"torch"``. ``"auto"`` takes the PyTorch
            path everywhere when the environment variable ``VQCODEC_NEAREST_BACKEND`` is ``torch``.
        out: optional preallocated ``(indices, sqdist)`` to write into.

    Returns:
        indices: (N,) int64 in [0, K), the chosen code of each row (any one of exact ties).
        sqdist: (N,) float32, ``||x[i] - codebook[indices[i]]||^2`` computed in fp32.

    Raises:
        ValueError: wrong shapes, dtypes or devices, or non-finite values in ``x`` or ``codebook``.
        BackendUnavailableError: ``backend="triton"`` where Triton cannot run.

    No gradients flow through the search. Temporary memory is O(N + K) for Triton and bounded by a few
    MiB per tile for PyTorch, never O(N x K).
    """
    _validate(x, codebook, backend)
    n = x.shape[0]
    indices, sqdist = _check_out(out, n, x.device)
    auto_triton = x.device.type == "cuda" and os.environ.get(AUTO_ENV, "auto") != "torch" and _triton().HAS_TRITON
    use_triton = backend == "triton" or (backend == "auto" and auto_triton)
    if use_triton:
        nearest_triton = _triton()
        if not nearest_triton.triton_usable(x.device):
            why = (
                "triton is not installed"
                if not nearest_triton.HAS_TRITON
                else f"tensors on {x.device.type} need CUDA, or TRITON_INTERPRET=1 set before importing triton"
                f" (interpreter {'on' if nearest_triton.INTERPRET else 'off'})"
            )
            raise BackendUnavailableError(f"backend='triton' cannot run: {why}")
        nearest_triton.nearest_code_triton(x, codebook, indices, sqdist)
    else:
        nearest_code_torch(x, codebook, indices, sqdist)
    if n and not torch.isfinite(sqdist).all():
        raise ValueError("x or codebook values are too large: squared distances overflow float32")
    return indices, sqdist
