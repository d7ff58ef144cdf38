"""Tiny codecs and priors for the bitstream tests, and crafted damage that reaches the range decoder."""

import dataclasses
import struct
import zlib

import torch
from hypothesis import strategies as st

import codec
from codec import AudioCodecConfig, Codec, ImageCodecConfig, QuantizerConfig
from codec.bitstream import container
from codec.bitstream.coders import recorded_hash
from codec.bitstream.context_coding import CODER as CONTEXT_CODER
from codec.bitstream.models import default_prior_dir, load_named_prior
from prior.checkpoint import load_prior, save_prior
from prior.config import PriorConfig
from prior.model import TokenPrior


def image_codec(tmp_path, name="img", K=32, seed=0):
    torch.manual_seed(seed)
    m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=QuantizerConfig(K)))
    m(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp_path / name, m.eval())
    return codec.load(tmp_path / name, device="cpu")


def make_prior(m, path, context=16):
    torch.manual_seed(1)
    p = TokenPrior(PriorConfig.for_codec(m, dim=32, depth=2, heads=2, context=context)).eval()
    save_prior(path, p)
    return load_prior(path, device="cpu")


def build_models(tmp_path_factory):
    """Tiny image and audio codecs, each with a prior stored beside it (RUN_DIR/prior)."""
    tmp = tmp_path_factory.mktemp("models")
    img = image_codec(tmp)
    make_prior(img, tmp / "img" / "prior")
    torch.manual_seed(2)
    q = QuantizerConfig(codebook_size=32, num_quantizers=4, quantizer_dropout=1.0)
    aud = Codec(AudioCodecConfig(base_channels=8, latent_dim=8, sample_rate=16000, quantizer=q))
    aud(torch.rand(2, 1, 320 * 8) * 2 - 1)
    codec.save_model(tmp / "aud", aud.eval())
    aud = codec.load(tmp / "aud", device="cpu")
    make_prior(aud, tmp / "aud" / "prior")
    return {"image": img, "audio": aud, "dir": tmp}


def legacy_metadata(meta, model, prior_model=None, float_coder: bool = False):
    """``meta`` with the 128-bit model hashes versions 1-6 recorded; ``float_coder``: a prior-mode file as the
    float coder of versions 1-4 wrote it (no ``coder``, the float prior's hash).

    ``prior_model``: the entropy model of a prior-mode file; None: the one stored beside ``model``."""
    chars = container.LEGACY_HASH_CHARS
    coder = None if float_coder else meta.coder
    prior = None
    if meta.prior is not None:
        if prior_model is None:
            kind = "context" if meta.coder == CONTEXT_CODER else "prior"
            prior_model = load_named_prior(default_prior_dir(model, kind))
        prior = dict(meta.prior, hash=recorded_hash(coder, prior_model, chars))
    codec_ref = dict(meta.codec, hash=codec.model_hash(model)[:chars])
    return dataclasses.replace(meta, codec=codec_ref, coder=coder, prior=prior)


def written_before_v7(data: bytes, model, prior_model=None) -> bytes:
    """``data`` (a file written now: version 7) as vqcodec wrote it before version 7: the same chunks behind a
    header in the oldest of versions 2-6 that holds it, with 128-bit model hashes and no preset dictionary
    (``legacy_metadata``)."""
    meta = codec.read_info(data)
    head = len(container.header_bytes(meta))
    return container.header_bytes(legacy_metadata(meta, model, prior_model)) + data[head:]


def version(data: bytes) -> int:
    """The format version field of a .vqc file."""
    return struct.unpack_from("<H", data, 4)[0]


def image(seed=0, c=3, h=37, w=53):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(c, h, w, generator=g)


@st.composite
def crafted(draw, files):
    """A payload changed (bits flipped, bytes overwritten, cut or extended by whole words) with its chunk's
    length and CRC recomputed, so only the range decoder and the token CRC can notice."""
    name = draw(st.sampled_from(sorted(files)))
    data = files[name][0]
    meta = codec.read_info(data)
    pos, chunks = len(container.header_bytes(meta)), []
    for _ in range(meta.num_chunks):
        length, tcrc, _ = struct.unpack_from("<III", data, pos)
        chunks.append([tcrc, bytearray(data[pos + 12 : pos + 12 + length])])
        pos += 12 + length
    i = draw(st.integers(0, len(chunks) - 1))
    payload = chunks[i][1]
    kind = draw(st.sampled_from(["flip", "overwrite", "cut", "extend", "zero"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 3))):
            payload[draw(st.integers(0, len(payload) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "overwrite":
        at, blob = draw(st.integers(0, len(payload) - 1)), draw(st.binary(min_size=1, max_size=8))
        payload[at : at + len(blob)] = blob
    elif kind == "cut":
        del payload[4 * draw(st.integers(0, len(payload) // 4 - 1)) :]
    elif kind == "extend":
        payload += draw(st.binary(min_size=4, max_size=4)) * draw(st.integers(1, 3))
    else:
        payload[:] = bytes(len(payload))
    out = bytearray(data[: len(container.header_bytes(meta))])
    for tcrc, p in chunks:
        head = struct.pack("<II", len(p), tcrc)
        out += head + struct.pack("<I", zlib.crc32(head + bytes(p))) + bytes(p)
    return name, bytes(out)
