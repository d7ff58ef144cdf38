"""Fixed-width bit packing of tokens: the "packed" coding mode. numpy only (``codec info`` stays fast)."""

import math

import numpy as np


def bits_per_token(codebook_size: int) -> int:
    """ceil(log2 K): the width of a packed token."""
    return max(1, math.ceil(math.log2(codebook_size)))


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """(n,) non-negative integers < 2**bits -> ceil(n * bits / 8) bytes, least significant bit first."""
    v = np.asarray(values, dtype=np.uint32)
    planes = ((v[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def packed_size(n: int, bits: int) -> int:
    return -(-n * bits // 8)


def unpack_bits(data: bytes, n: int, bits: int) -> np.ndarray:
    """The inverse of ``pack_bits``: (n,) int64. ``data`` must be ``packed_size(n, bits)`` bytes long."""
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n * bits, bitorder="little")
    weights = (1 << np.arange(bits, dtype=np.int64))[None]
    return (planes.reshape(n, bits).astype(np.int64) * weights).sum(axis=1)
