"""Range coding of token chunks with the integer prior: the ``integer-1`` coder of ``.vqc`` format version 5.

Each chunk is a window of an item's raster sequence that starts from the prior's start token (no earlier
context), coded with constriction's ``RangeEncoder`` (32-bit words) and the frequencies
``prior.integer.frequencies`` gives for the integer logits. The logits are exact integers, so encoder and decoder
agree on every machine, kernel choice, thread count and device, whatever batching each side uses:

- ``encode_chunks`` runs each chunk's known tokens through the teacher-forced window path at once and codes the
  chunk in one constriction call;
- ``decode_chunks`` steps chunks in lockstep through ``IntegerStepDecoder``, one token per chunk and step, since
  each token must be decoded before the next can be predicted.

Both run torch on one thread (``one_thread``): not for the result, which no thread count changes, but for speed:
the tensors of one step are small, and on a busy machine a second OpenMP thread waiting for a core can make a step
several times slower. The float coder of older files is ``codec.bitstream.range_coding``.
"""

import constriction
import numpy as np
import torch

from codec.bitstream.range_coding import one_thread
from codec.store.rundir import model_hash
from prior.integer import VERSION, IntegerPrior, frequencies
from prior.integer_forward import IntegerNet, IntegerStepDecoder, integer_window_logits
from prior.model import TokenPrior

CODER = f"integer-{VERSION}"  # what a file records (metadata "coder"); another integer design is another coder
CODERS = (CODER,)  # the coders this vqcodec reads
_FAMILY = constriction.stream.model.Categorical(perfect=False)  # rescales 2^20-sum integers exactly to its 2^24
DECODE_BATCH = 32  # chunks decoded in lockstep at most, whatever the file's group (bounds the key/value rings)


def integer_net(prior: TokenPrior) -> IntegerNet:
    """The CPU ``IntegerNet`` of a float prior, derived once per prior object and set of weights."""
    return _derived(prior)[0]


def integer_hash(prior: TokenPrior) -> str:
    """``IntegerPrior.hash`` of the integer prior derived from ``prior``: what a version-5 file names."""
    return _derived(prior)[1]


def _derived(prior: TokenPrior) -> tuple[IntegerNet, str]:
    key = model_hash(prior)
    cached = getattr(prior, "_integer", None)
    if cached is None or cached[0] != key:
        iprior = IntegerPrior.from_float(prior)
        cached = (key, IntegerNet(iprior, "cpu"), iprior.hash())
        prior._integer = cached  # a plain attribute: not a parameter, not in the state dict
    return cached[1:]


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    return frequencies(logits).to(torch.float64).numpy()  # integers < 2^21: exact in float64


def encode_chunks(net: IntegerNet, layout, starts: list[int], chunks: list[np.ndarray], batch: int = 2) -> list[bytes]:
    """Range-code chunks (each (n_i,) int64, flat positions starts[i] ..) -> one payload of 32-bit words each.

    Chunks of equal length go through the window path ``batch`` at a time (bigger products, fewer steps).
    """
    start_id = net.iprior.config.codebook_size
    payloads = [b""] * len(chunks)
    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(chunks):
        by_length.setdefault(len(c), []).append(i)
    with one_thread():
        for same in by_length.values():
            for first in range(0, len(same), batch):
                idx = same[first : first + batch]
                tokens = torch.from_numpy(np.stack([np.asarray(chunks[i], dtype=np.int64) for i in idx]))
                inputs = torch.cat([torch.full((len(idx), 1), start_id), tokens[:, :-1]], dim=1)
                logits = integer_window_logits(net, layout, torch.tensor([starts[i] for i in idx]), inputs)
                for row, i in enumerate(idx):
                    enc = constriction.stream.queue.RangeEncoder()
                    enc.encode(tokens[row].numpy().astype(np.int32), _FAMILY, _probabilities(logits[row]))
                    payloads[i] = enc.get_compressed().astype("<u4").tobytes()
    return payloads


def decode_chunks(
    net: IntegerNet, layout, starts: list[int], lengths: list[int], payloads: list[bytes], batch: int = DECODE_BATCH
) -> list[np.ndarray]:
    """The inverse of ``encode_chunks``: (n_i,) int64 tokens per chunk, decoded ``batch`` chunks in lockstep (the
    file's ``group`` does not matter: the logits are the same however chunks are batched).

    Raises:
        ValueError: a payload that is not whole 32-bit words, or that the range decoder rejects (any error of
            constriction's is reported so, never passed on).
    """
    for data in payloads:
        if len(data) % 4:
            raise ValueError(f"range-coded payload of {len(data)} bytes is not whole 32-bit words")
    out = []
    with one_thread():
        for a in range(0, len(payloads), batch):
            b = slice(a, a + batch)
            out += _decode_lockstep(net, layout, starts[b], lengths[b], payloads[b])
    return out


def _decode_lockstep(net: IntegerNet, layout, starts: list[int], lengths: list[int], payloads: list[bytes]):
    words = [np.frombuffer(data, dtype="<u4").astype(np.uint32) for data in payloads]
    decoders = [_foreign(constriction.stream.queue.RangeDecoder, w) for w in words]
    out = np.zeros((len(payloads), max(lengths)), dtype=np.int64)
    dec = IntegerStepDecoder(net, layout, torch.tensor(starts))
    inputs = torch.full((len(starts),), net.iprior.config.codebook_size, dtype=torch.int64)
    for s in range(out.shape[1]):
        probs = _probabilities(dec.step(inputs))
        for i, d in enumerate(decoders):
            if s < lengths[i]:
                out[i, s] = _foreign(d.decode, _FAMILY, probs[i : i + 1])[0]
        inputs = torch.from_numpy(out[:, s].copy())
    return [out[i, :n].copy() for i, n in enumerate(lengths)]


def _foreign(call, *args):
    """A constriction call; whatever it raises on inconsistent data (assertions too) becomes ValueError."""
    try:
        return call(*args)
    except Exception as e:  # a foreign library's errors on bad data, whatever their type
        raise ValueError(f"range decoder failed: {type(e).__name__}: {e}") from None
