"""Fused nearest-codebook search: the only place in vqcodec that searches a codebook.

    >>> indices, sqdist = kernels.nearest_code(x, codebook)

Backends: a Triton kernel (CUDA, or the CPU through ``TRITON_INTERPRET=1``) and a chunked PyTorch path
whose temporary memory is bounded whatever N is. ``kernels.naive`` holds the float64 reference.
"""

from kernels.errors import BackendUnavailableError
from kernels.naive import nearest_code_naive
from kernels.nearest import nearest_code, triton_available

__all__ = ["BackendUnavailableError", "nearest_code", "nearest_code_naive", "triton_available"]
