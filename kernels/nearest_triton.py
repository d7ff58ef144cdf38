"""Triton nearest-codebook search: fused distances + running argmin, never the N x K matrix.

Each program owns BLOCK_N rows of x and walks the whole codebook in BLOCK_K tiles. For every tile it
accumulates x.c with ``tl.dot`` in fp32 (over D in BLOCK_D slices), forms the score ``||c||^2 - 2 x.c``
from precomputed code norms (padded codes get +inf) and folds the tile's (min, argmin) into a running
pair, as fused attention keeps its running max. At the end it gathers the chosen codes and writes the
exact fp32 ``||x - c||^2``. Memory: O(N + K).
"""

import os

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - triton is a Linux-only dependency
    HAS_TRITON = False

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_usable(device: torch.device) -> bool:
    """Whether the Triton kernel can run on tensors of ``device``."""
    if not HAS_TRITON:
        return False
    return device.type == "cuda" or (device.type == "cpu" and INTERPRET)


if HAS_TRITON:

    @triton.jit
    def _nearest_code_kernel(
        x_ptr,  # (N, D)
        c_ptr,  # (K, D)
        cnorm_ptr,  # (K,) fp32
        idx_ptr,  # (N,) int64 out
        dist_ptr,  # (N,) fp32 out
        N,
        K,
        D,
        stride_xn,
        stride_cn,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        BLOCK_D: tl.constexpr,
        ONE_D_TILE: tl.constexpr,  # D <= BLOCK_D: keep the x tile in registers for the whole codebook
        DOT_FP32: tl.constexpr,  # upcast dot operands to fp32 (interpreter: its bf16 dot is wrong)
        PRECISION: tl.constexpr,  # tl.dot input_precision for fp32 operands
    ):
        pid = tl.program_id(0)
        rn = (pid * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)  # (BN,)
        mask_n = rn < N
        rd = tl.arange(0, BLOCK_D)  # (BD,)
        if ONE_D_TILE:
            x_keep = tl.load(
                x_ptr + rn[:, None] * stride_xn + rd[None, :],
                mask=mask_n[:, None] & (rd[None, :] < D),
                other=0.0,
            )  # (BN, BD)
            if DOT_FP32:
                x_keep = x_keep.to(tl.float32)
        best = tl.full((BLOCK_N,), float("inf"), tl.float32)
        best_idx = tl.zeros((BLOCK_N,), tl.int64)
        for k0 in range(0, K, BLOCK_K):
            rk = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)  # (BK,)
            mask_k = rk < K
            acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
            for d0 in range(0, D, BLOCK_D):
                dd = d0 + rd
                mask_d = dd < D
                if ONE_D_TILE:
                    xt = x_keep
                else:
                    xt = tl.load(
                        x_ptr + rn[:, None] * stride_xn + dd[None, :],
                        mask=mask_n[:, None] & mask_d[None, :],
                        other=0.0,
                    )
                ct = tl.load(
                    c_ptr + rk[:, None] * stride_cn + dd[None, :],
                    mask=mask_k[:, None] & mask_d[None, :],
                    other=0.0,
                )  # (BK, BD)
                if DOT_FP32:
                    xt = xt.to(tl.float32)
                    ct = ct.to(tl.float32)
                acc = tl.dot(xt, tl.trans(ct), acc, input_precision=PRECISION)  # (BN, BK)
            cn = tl.load(cnorm_ptr + rk, mask=mask_k, other=float("inf"))  # (BK,)
            score = cn[None, :] - 2.0 * acc
            tile_min, tile_arg = tl.min(score, axis=1, return_indices=True)
            better = tile_min < best
            best = tl.where(better, tile_min, best)
            best_idx = tl.where(better, tile_arg.to(tl.int64) + k0, best_idx)
        # Exact squared distance to the chosen code (gather its row).
        dist = tl.zeros((BLOCK_N,), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + rd
            m2 = mask_n[:, None] & (dd[None, :] < D)
            xt = tl.load(x_ptr + rn[:, None] * stride_xn + dd[None, :], mask=m2, other=0.0).to(tl.float32)
            ct = tl.load(c_ptr + best_idx[:, None] * stride_cn + dd[None, :], mask=m2, other=0.0).to(tl.float32)
            diff = xt - ct
            dist += tl.sum(diff * diff, axis=1)
        tl.store(idx_ptr + rn, best_idx, mask=mask_n)
        tl.store(dist_ptr + rn, dist, mask=mask_n)

    def _prune(configs, named_args, **kwargs):
        """Drop tiles far larger than the problem; keep at least one config."""
        n, k = named_args["N"], named_args["K"]
        kept = [
            c
            for c in configs
            if c.kwargs["BLOCK_K"] <= max(16, triton.next_power_of_2(k))
            and c.kwargs["BLOCK_N"] <= max(16, triton.next_power_of_2(n))
        ]
        return kept or configs[:1]

    _CONFIGS = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bk, w, s in [
            (64, 64, 4, 3),
            (128, 64, 4, 3),
            (128, 128, 8, 3),
            (64, 128, 4, 4),
            (128, 256, 8, 3),
            (256, 128, 8, 3),
            (32, 64, 4, 2),
            (16, 64, 4, 2),
        ]
    ]
    _nearest_code_autotuned = triton.autotune(
        configs=_CONFIGS, key=["K", "D"], prune_configs_by={"early_config_prune": _prune}
    )(_nearest_code_kernel)

# One fixed, large-ish tile for the interpreter: fewer Python-level iterations, same code paths.
_INTERPRET_BLOCKS = {"BLOCK_N": 64, "BLOCK_K": 64}


def _block_d(d: int) -> int:
    return max(16, min(128, triton.next_power_of_2(d)))


def nearest_code_triton(x: torch.Tensor, codebook: torch.Tensor, indices: torch.Tensor, sqdist: torch.Tensor) -> None:
    """Launch the fused search. Inputs already validated: x (N, D), codebook (K, D), same dtype/device.

    fp32 operands use ``tf32x3`` on GPUs (three TF32 products, about fp32 accuracy at tensor-core speed);
    fp16 / bf16 operands use tensor cores with fp32 accumulation.
    """
    n, d = x.shape
    k = codebook.shape[0]
    if n == 0:
        return
    x = x.contiguous()
    codebook = codebook.contiguous()
    cnorm = codebook.float().pow(2).sum(dim=1)  # (K,)
    block_d = _block_d(d)
    common = dict(
        BLOCK_D=block_d,
        ONE_D_TILE=d <= block_d,
        DOT_FP32=INTERPRET and x.dtype == torch.bfloat16,
        PRECISION="ieee" if INTERPRET else "tf32x3",
    )
    args = (x, codebook, cnorm, indices, sqdist, n, k, d, x.stride(0), codebook.stride(0))
    if INTERPRET:
        grid = (triton.cdiv(n, _INTERPRET_BLOCKS["BLOCK_N"]),)
        _nearest_code_kernel[grid](*args, **_INTERPRET_BLOCKS, **common)
    else:
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)
        _nearest_code_autotuned[grid](*args, **common)
