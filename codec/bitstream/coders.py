"""The range coders of "prior" mode, in one place: which coder an entropy model uses, the hash a file records of
it, and each coder's encode and decode functions.

    coder        entropy model                       module
    (none)       float TokenPrior (versions 1-4)     codec.bitstream.range_coding: decodes only where torch computes
                                                     its logits bit for bit as the encoder's machine did
    integer-1    integer TokenPrior (prior.integer)  codec.bitstream.integer_coding: one step per token
    context-1    integer ContextPrior                codec.bitstream.context_coding: a few passes per chunk
"""

from codec.bitstream import container, context_coding, integer_coding, range_coding
from codec.bitstream.container import Metadata
from codec.store.rundir import model_hash
from prior.context import ContextPrior


def coder_of(prior_model) -> str:
    """The version-5 coder of an entropy model: ``context-1`` for a ``ContextPrior``, else ``integer-1``."""
    return context_coding.CODER if isinstance(prior_model, ContextPrior) else integer_coding.CODER


def recorded_hash(coder: str | None, prior_model, chars: int = container.HASH_CHARS) -> str:
    """The hash a "prior" file records of its entropy model, its first ``chars`` hex digits: its integer network's
    (versions 5-7), or the float prior's (the float coder of versions 1-4)."""
    if coder == context_coding.CODER:
        h = context_coding.context_hash(prior_model)
    elif coder is not None:
        h = integer_coding.integer_hash(prior_model)
    else:
        h = model_hash(prior_model)
    return h[:chars]


def recorded_prior_hash(meta: Metadata, prior_model) -> str:
    """The hash a "prior" file records of its entropy model (``compress.recorded_hash``); "" for a model of
    another kind than the file's coder needs."""
    if (meta.coder == context_coding.CODER) != isinstance(prior_model, ContextPrior):
        return ""
    return recorded_hash(meta.coder, prior_model, len(meta.prior["hash"]))


def prior_encoder(meta: Metadata, prior_model):
    """``encode(layout, starts, chunks) -> payloads`` of a "prior" file's coder (``meta.coder``)."""
    if meta.coder is None:
        return lambda *a: range_coding.prior_encode(prior_model, *a)
    if meta.coder == context_coding.CODER:
        net = context_coding.context_net(prior_model)
        return lambda *a: context_coding.encode_chunks(net, *a)
    net = integer_coding.integer_net(prior_model)
    return lambda *a: integer_coding.encode_chunks(net, *a)


def prior_decoder(meta: Metadata, prior_model):
    """``decode(layout, starts, lengths, payloads) -> tokens`` of a "prior" file's coder: the integer prior
    (version 5), or the float one of versions 1-4, which decodes only where torch computes its logits bit for bit
    as the encoder's machine did."""
    if meta.coder is None:
        return lambda *a: range_coding.prior_decode(prior_model, *a)
    if meta.coder == context_coding.CODER:
        net = context_coding.context_net(prior_model)
        return lambda *a: context_coding.decode_chunks(net, *a)
    net = integer_coding.integer_net(prior_model)
    return lambda *a: integer_coding.decode_chunks(net, *a)
