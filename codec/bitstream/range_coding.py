"""Range coding of token chunks with a TokenPrior's float probabilities: the "prior" mode of ``.vqc`` versions 1-4.

New files use the integer prior (``codec.bitstream.integer_coding``, version 5); this float coder stays to decode
older files, which decode only where torch computes the float logits bit for bit as the encoder's machine did.

Tokens are coded in the one raster order (``prior.layout``): flat position p = (row * W + col) * L + level. A chunk
is a run of consecutive flat positions, one window of the item's raster sequence that starts from the prior's
start token (no earlier context), so chunks are independent; up to ``group`` chunks are run through
``prior.incremental.StepDecoder`` in lockstep for speed. Coding is range coding (constriction's ``RangeEncoder``,
32-bit words). Logits are turned into integer frequencies by ``integer_frequencies`` (every symbol at least one
unit, sum exactly ``FREQ_TOTAL``), the same function on both sides; the decoder sees bit-identical logits
because it runs the same operations on the same shapes (same group, same chunk lengths) on the prior's CPU copy,
on one thread (``one_thread``: with more, torch may split reductions differently and change the last bits).
"""

import contextlib

import constriction
import numpy as np
import torch

from prior.incremental import StepDecoder

FREQ_BITS = 20
FREQ_TOTAL = 1 << FREQ_BITS  # integer frequencies of one token's distribution sum to this
_FAMILY = constriction.stream.model.Categorical(perfect=False)  # rescales exactly: FREQ_TOTAL is a power of 2


def integer_frequencies(logits: torch.Tensor) -> np.ndarray:
    """(B, K) logits -> (B, K) float64 holding integers >= 1 that sum to FREQ_TOTAL in every row.

    Computed in float64 with numpy (single-threaded, fixed summation order), so equal logits give equal
    frequencies whatever torch's thread count. Each symbol gets floor(p * (FREQ_TOTAL - K)) + 1 units; the
    units left over go to the most probable symbol (the first one on ties).
    """
    z = logits.detach().to("cpu", torch.float64).numpy()
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    K = z.shape[1]
    freq = np.floor(p * (FREQ_TOTAL - K)) + 1.0
    rows = np.arange(len(freq))
    freq[rows, p.argmax(axis=1)] += FREQ_TOTAL - freq.sum(axis=1)
    return freq


@contextlib.contextmanager
def one_thread():
    """Run torch on one CPU thread: its kernels may split reductions differently with more threads, and the
    decoder must reproduce the encoder's logits bit for bit whatever thread count either side was set to."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_group(prior, layout, starts: list[int], lengths: list[int], choose) -> None:
    """Step a group of chunks through the prior; ``choose(s, freqs)`` returns the (B,) tokens at step s."""
    K = prior.config.codebook_size
    with one_thread():
        dec = StepDecoder(prior, layout, torch.tensor(starts), device="cpu")
        inputs = torch.full((len(starts),), K, dtype=torch.int64)  # the start token
        for s in range(max(lengths)):
            freqs = integer_frequencies(dec.step(inputs))
            inputs = torch.from_numpy(choose(s, freqs))


def prior_encode(prior, layout, starts: list[int], chunks: list[np.ndarray]) -> list[bytes]:
    """Range-code a group of chunks (each (n_i,) int64, flat positions starts[i] ..) -> one payload each."""
    lengths = [len(c) for c in chunks]
    encoders = [constriction.stream.queue.RangeEncoder() for _ in chunks]
    padded = np.zeros((len(chunks), max(lengths)), dtype=np.int64)  # finished chunks feed zeros
    for i, c in enumerate(chunks):
        padded[i, : len(c)] = c

    def choose(s, freqs):
        for i, enc in enumerate(encoders):
            if s < lengths[i]:
                enc.encode(padded[i, s : s + 1].astype(np.int32), _FAMILY, freqs[i : i + 1])
        return padded[:, s]

    _run_group(prior, layout, starts, lengths, choose)
    return [enc.get_compressed().astype("<u4").tobytes() for enc in encoders]


def prior_decode(prior, layout, starts: list[int], lengths: list[int], payloads: list[bytes]) -> list[np.ndarray]:
    """The inverse of ``prior_encode``: (n_i,) int64 tokens per chunk.

    Raises:
        ValueError: a payload that is not whole 32-bit words, or that the range decoder rejects.
    """
    decoders = []
    for data in payloads:
        if len(data) % 4:
            raise ValueError(f"range-coded payload of {len(data)} bytes is not whole 32-bit words")
        decoders.append(constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32)))
    out = np.zeros((len(payloads), max(lengths)), dtype=np.int64)

    def choose(s, freqs):
        for i, dec in enumerate(decoders):
            if s < lengths[i]:
                out[i, s] = dec.decode(_FAMILY, freqs[i : i + 1])[0]
        return out[:, s]

    try:
        _run_group(prior, layout, starts, lengths, choose)
    except (ValueError, RuntimeError, OverflowError, AssertionError, IndexError) as e:  # constriction's, on bad data
        raise ValueError(f"range decoder failed: {type(e).__name__}: {e}") from None
    return [out[i, :n].copy() for i, n in enumerate(lengths)]
