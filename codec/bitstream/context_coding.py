"""Range coding of token chunks with the integer context model: the ``context-1`` coder of ``.vqc`` version 5.

A chunk is a window [start, stop) of an item's raster sequence (``prior.layout``), coded on its own: the grid rows
it spans, with every token outside the window unknown. Its tokens are coded pass by pass (``ContextConfig.passes``:
level by level, and a few groups of positions within each level), each pass's tokens in raster order, all with one
constriction ``RangeEncoder``. Every token of a pass gets its frequencies from one evaluation of the integer
network (``prior.context_integer``), so coding takes a few dozen network passes per chunk instead of one step per
token, and the frequencies are exact integers: the same on every machine.
"""

import constriction
import numpy as np
import torch

from codec.bitstream.range_coding import one_thread
from codec.store.rundir import model_hash
from prior.context import ContextPrior
from prior.context_integer import VERSION, IntegerContext, IntegerContextNet, PassRunner, frequencies

CODER = f"context-{VERSION}"
_FAMILY = constriction.stream.model.Categorical(perfect=False)
PASS_BLOCK = 128  # targets whose frequencies are computed and coded at once: cache-sized blocks run ~3x faster


def context_net(model: ContextPrior) -> IntegerContextNet:
    """The CPU ``IntegerContextNet`` of a float context model, derived once per model object and set of weights."""
    return _derived(model)[0]


def context_hash(model: ContextPrior) -> str:
    """``IntegerContext.hash`` of the integer network derived from ``model``: what a file names."""
    return _derived(model)[1]


def _derived(model: ContextPrior) -> tuple[IntegerContextNet, str]:
    key = model_hash(model)
    cached = getattr(model, "_integer", None)
    if cached is None or cached[0] != key:
        icontext = IntegerContext.from_float(model)
        cached = (key, IntegerContextNet(icontext, "cpu"), icontext.hash())
        model._integer = cached
    return cached[1:]


class _Window:
    """The part of the grid a chunk spans (its rows; within a single row, its columns): absolute coordinates, the
    chunk's tokens in place, and which tokens are inside it."""

    def __init__(self, layout, start: int, length: int):
        L, _, W = (int(v) for v in layout)
        a, b = start // L, (start + length - 1) // L  # first and last grid position of the chunk
        first, last = a // W, b // W
        self.rows = torch.arange(first, last + 1)[:, None]
        # within one row (always for audio) only the columns it spans: work and memory follow the chunk, not the row
        self.cols = torch.arange(a % W, b % W + 1)[None] if first == last else torch.arange(W)[None]
        flat = ((self.rows * W + self.cols)[None] * L + torch.arange(L)[:, None, None]) - start  # (L, h, w)
        self.inside = (flat >= 0) & (flat < length)
        self.flat = flat
        self.tokens = torch.zeros(self.inside.shape, dtype=torch.int64)

    def put(self, chunk: np.ndarray) -> None:
        self.tokens[self.inside] = torch.from_numpy(np.asarray(chunk, dtype=np.int64))[self.flat[self.inside]]

    def chunk(self) -> np.ndarray:
        out = np.zeros(int(self.inside.sum()), dtype=np.int64)
        out[self.flat[self.inside].numpy()] = self.tokens[self.inside].numpy()
        return out


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    return frequencies(logits).numpy()  # float64 integers summing to 2^20 per row


def _code_chunk(net: IntegerContextNet, layout, start: int, length: int, coder, chunk=None) -> _Window:
    """Run the passes of one chunk; ``coder(symbols or None, probabilities) -> symbols`` codes each block."""
    w = _Window(layout, start, length)
    if chunk is not None:
        w.put(chunk)
    runner = PassRunner(net, w.tokens, w.inside, w.rows, w.cols)  # decoded tokens go into runner.tokens
    for level, group in net.config.passes(w.inside.shape[0]):
        logits, targets = runner.run(level, group)  # (n, K) in raster order of the targets
        if not len(logits):
            continue  # an empty pass codes nothing
        where = targets.nonzero(as_tuple=True)
        known = runner.tokens[level][where] if chunk is not None else None
        out = []
        for a in range(0, len(logits), PASS_BLOCK):
            sl = slice(a, a + PASS_BLOCK)
            out.append(coder(None if known is None else known[sl], _probabilities(logits[sl])))
        if chunk is None:
            runner.tokens[level][where] = torch.from_numpy(np.concatenate(out).astype(np.int64))
    w.tokens = runner.tokens[: w.tokens.shape[0]]
    return w


def encode_chunks(net: IntegerContextNet, layout, starts: list[int], chunks: list[np.ndarray]) -> list[bytes]:
    """Range-code chunks (each (n_i,) int64 at flat positions starts[i] ..) -> one payload of 32-bit words each."""
    payloads = []
    with one_thread():
        for start, chunk in zip(starts, chunks):
            enc = constriction.stream.queue.RangeEncoder()

            def code(symbols, probs, enc=enc):
                enc.encode(symbols.numpy().astype(np.int32), _FAMILY, probs)
                return symbols.numpy()

            _code_chunk(net, layout, start, len(chunk), code, chunk)
            payloads.append(enc.get_compressed().astype("<u4").tobytes())
    return payloads


def decode_chunks(net: IntegerContextNet, layout, starts: list[int], lengths: list[int], payloads: list[bytes]):
    """The inverse of ``encode_chunks``: (n_i,) int64 tokens per chunk.

    Raises:
        ValueError: a payload that is not whole 32-bit words, or that the range decoder rejects (any error of
            constriction's is reported so, never passed on).
    """
    out = []
    with one_thread():
        for start, n, data in zip(starts, lengths, payloads):
            if len(data) % 4:
                raise ValueError(f"range-coded payload of {len(data)} bytes is not whole 32-bit words")
            words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
            dec = _foreign(constriction.stream.queue.RangeDecoder, words)

            def code(_, probs, dec=dec):
                return _foreign(dec.decode, _FAMILY, probs)

            out.append(_code_chunk(net, layout, start, n, code).chunk())
    return out


def _foreign(call, *args):
    """A constriction call; whatever it raises on inconsistent data (assertions too) becomes ValueError."""
    try:
        return call(*args)
    except Exception as e:
        raise ValueError(f"the range decoder rejected the data ({type(e).__name__}: {e})") from None
