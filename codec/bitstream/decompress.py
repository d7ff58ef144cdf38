"""``decompress`` and ``read_info``: ``.vqc`` bytes back to an image or audio tensor (the CLI's ``decode``).

>>> import codec
>>> out = codec.decompress(data)                # the models the file names (bundled names or directories)
>>> out.data.shape, out.metadata.mode          # (3, H, W) float32 in [0, 1], "prior"

``decompress`` loads the models a file names when none is given and refuses models whose hash differs.
"""

import contextlib
import os
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from codec.bitstream import container
from codec.bitstream.alpha import decode_alpha
from codec.bitstream.coders import prior_decoder, recorded_prior_hash
from codec.bitstream.container import Metadata, open_source, read_info
from codec.bitstream.context_coding import CODER as CONTEXT_CODER
from codec.bitstream.models import ENTROPY_MODELS, default_prior_dir, load_codec_cached, load_named_prior, load_recorded
from codec.bitstream.packing import bits_per_token, unpack_bits
from codec.bitstream.parallel import map_groups, work_units
from codec.core.model import Codec
from codec.core.windows import framing
from codec.errors import CorruptFileError, ModelMismatchError, VQCodecError
from codec.media import resample, to_audio_channels
from codec.store.rundir import model_hash
from prior.layout import unraster

__all__ = ["Decompressed", "decompress", "read_info"]


@dataclass
class Decompressed:
    """What ``decompress`` returns.

    Attributes:
        data: image (C, H, W) float32 in [0, 1], or audio (C, T) float32 in [-1, 1] at ``sample_rate``,
            with the original's channel count, size, and sample rate. An image with alpha has it as its last
            channel (C = 2 or 4), exactly as stored: k / 255 for the original's 8-bit value k.
        metadata: the file's metadata (``codec.bitstream.container.Metadata``).
        tokens: the decoded tokens, int64 with ``metadata.token_shape``.
        sample_rate: audio only: the rate of ``data`` (the original file's); None for images.
    """

    data: torch.Tensor
    metadata: Metadata
    tokens: torch.Tensor
    sample_rate: int | None = None


def _check_tokens_fit(meta: Metadata, model: Codec) -> None:
    """The file's token layout must be what ``model`` makes of its media."""
    if meta.modality != model.modality or meta.codebook_size != model.codebook_size or meta.residual != model.residual:
        raise ModelMismatchError("the file's token layout does not match this codec")
    f, m = model.downsample, meta.media
    sizes = [m["height"], m["width"]] if meta.modality == "image" else [m["frames"]]
    grid = [framing(s, f, meta.margin)[0] for s in sizes]
    if meta.has_stereo:
        grid = [2 * grid[0]]  # mid frames, then side frames
    levels = meta.token_shape[0] if meta.residual else 1
    if meta.token_shape[int(meta.residual) :] != grid or not 1 <= levels <= model.num_quantizers:
        raise CorruptFileError(f"token shape {meta.token_shape} does not fit the recorded media size {m}")
    if meta.modality == "audio" and m["sample_rate"] != model.sample_rate:  # bounds the output's length, as frames
        raise CorruptFileError(f"media sample rate {m['sample_rate']} Hz is not the codec's {model.sample_rate} Hz")
    if meta.modality == "image" and m["channels"] == 3 and model.channels == 1:
        raise CorruptFileError("a 3-channel image recorded for a 1-channel codec")


def decompress(
    source, model=None, prior=None, *, device=None, progress: bool = False, workers: int | None = None
) -> Decompressed:
    """Decode ``.vqc`` bytes (or a path, or a binary file) back to an image or audio tensor.

    Args:
        source: the file's bytes, its path, or a binary file object.
        model, prior: the codec and prior it was made with (objects, run directories or bundled names); None
            loads the ones the file names.
        device: where the codec runs (default: CUDA when available).
        progress: show a progress bar over the tokens being decoded.
        workers: CPU processes that decode chunks at once (forked; Linux); None: one per thread torch may use
            (``torch.get_num_threads()``). The result does not depend on it.

    Raises:
        CorruptFileError: damaged, truncated or extended data, or not a .vqc file, naming the file when ``source``
            is a path; any other library's error while decoding (the range coder's, torch's) becomes one too.
        ModelMismatchError: the file was made with another codec or prior, or the one it names is not available.
    """
    f, close = open_source(source)
    where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    try:
        return _decompress(f, model, prior, device, progress, workers)
    except CorruptFileError as e:
        if where is None or where in str(e):
            raise
        raise CorruptFileError(f"{where}: {e}") from None
    finally:
        if close:
            f.close()


def _decompress(f: BinaryIO, model, prior, device, progress: bool, workers) -> Decompressed:
    meta = container.read_header(f)
    if model is None:
        model = load_recorded("codec", meta.codec, lambda name: load_codec_cached(name, device=device))
    elif not isinstance(model, Codec):
        model = load_codec_cached(model, device=device)
    got = model_hash(model)[: len(meta.codec["hash"])]  # as many digits as the file's version records
    if got != meta.codec["hash"]:
        raise ModelMismatchError(
            f"this file was encoded with codec {meta.codec['name']!r} ({meta.codec['hash'][:12]}), "
            f"not with the given codec ({got[:12]})"
        )
    _check_tokens_fit(meta, model)
    prior_model = _file_prior(meta, model, prior) if meta.mode == "prior" else None
    try:
        return _decode(f, meta, model, prior_model, progress, workers or torch.get_num_threads())
    except VQCodecError:
        raise
    except Exception as e:  # a foreign error on data that passed every check: still a bad file, never a traceback
        raise CorruptFileError(f"cannot be decoded ({type(e).__name__}: {e})") from e


def _crc_cause(meta: Metadata) -> str:
    """What a token checksum failure means for this file's coder."""
    if meta.mode == "prior" and meta.coder is None:  # versions 1 to 4: the float prior (docs/format.md)
        return (
            "damaged data, or a float-coded file of .vqc version 1-4 decoded on a machine whose torch computes the "
            "prior's float logits differently from the writer's: such files decode only on the same kind of CPU "
            "and software; re-encode the original with this vqcodec (exact integer coders)"
        )
    return "damaged data, or a prior computing differently from the encoder's"


def _decode(f: BinaryIO, meta: Metadata, model: Codec, prior_model, progress: bool, workers: int) -> Decompressed:
    """The alpha record, the chunks and the reconstruction: everything read from ``f`` after the header."""
    alpha = _read_alpha(f, meta)
    # every chunk read and checked (CRCs, bounds, the end of the file) before decoding: memory grows with the
    # data actually present, never with the header's claims
    records = list(container.iter_chunks(f, meta))
    jobs = work_units(list(meta.groups()), workers, lockstep=meta.coder is None)
    if prior_model is None:
        bits = bits_per_token(meta.codebook_size)
        decoded_jobs = ([unpack_bits(records[i][0], b - a, bits) for i, a, b in job] for job in jobs)
    else:
        decode, layout = prior_decoder(meta, prior_model), prior_model.layout(meta.token_shape)
        args = (
            ([a for _, a, _ in job], [b - a for _, a, b in job], [records[i][0] for i, _, _ in job]) for job in jobs
        )
        decoded_jobs = map_groups(lambda *a: decode(layout, *a), args, workers, len(jobs))
    parts = []
    bar = tqdm(total=meta.num_tokens, unit="tok", desc="decode", disable=not progress, leave=False)
    with bar, contextlib.closing(iter(decoded_jobs)) as results:
        for job in jobs:
            try:
                decoded = next(results)
            except ValueError as e:
                raise CorruptFileError(f"chunks {job[0][0]}..{job[-1][0]}: {e}") from None
            for (i, _, _), tokens in zip(job, decoded):
                if tokens.size and (tokens.min() < 0 or tokens.max() >= meta.codebook_size):
                    raise CorruptFileError(f"chunk {i} holds token values outside [0, {meta.codebook_size})")
                if container.token_crc(tokens) != records[i][1]:
                    raise CorruptFileError(f"chunk {i} decoded to tokens that fail their checksum ({_crc_cause(meta)})")
                parts.append(tokens)
            bar.update(sum(b - a for _, a, b in job))
    flat = torch.from_numpy(np.concatenate(parts))
    tokens = unraster(flat, tuple(meta.token_shape), meta.residual)
    out = _reconstruct(model, meta, tokens)
    if alpha is not None:
        out.data = torch.cat([out.data, torch.from_numpy(alpha.astype(np.float32) / 255)[None]])
    return out


def _read_alpha(f: BinaryIO, meta: Metadata) -> np.ndarray | None:
    """The image's alpha plane ((H, W) uint8, checked against its CRC), or None."""
    record = container.read_alpha(f, meta)
    if record is None:
        return None
    payload, crc = record
    plane = decode_alpha(payload, meta.media["height"], meta.media["width"])
    if zlib.crc32(plane.tobytes()) != crc:
        raise CorruptFileError("the alpha plane fails its checksum (the data is damaged)")
    return plane


def _file_prior(meta: Metadata, model: Codec, prior):
    """The prior a "prior"-mode file was made with: ``prior`` (an object or a directory) if given, else the one
    stored with the codec if its hash is the file's, else the one the file names. Each candidate is hashed once.

    Raises:
        ModelMismatchError: not the file's prior (by hash), or not trained on the file's codec.
    """

    def hashed(p):
        return p, recorded_prior_hash(meta, p)

    candidate = got = None
    if prior is not None:
        candidate, got = hashed(prior if isinstance(prior, ENTROPY_MODELS) else load_named_prior(prior))
    elif (beside := default_prior_dir(model, "context" if meta.coder == CONTEXT_CODER else "prior")) is not None:
        candidate, got = hashed(load_named_prior(beside))
        if got != meta.prior["hash"]:
            candidate = None
    if candidate is None:
        candidate, got = hashed(load_recorded("prior", meta.prior, load_named_prior))
    if got != meta.prior["hash"]:
        raise ModelMismatchError(
            f"this file was encoded with prior {meta.prior['name']!r} ({meta.prior['hash'][:12]}), "
            f"not with the given prior ({got[:12]})"
        )
    if candidate.config.codec_hash[: len(meta.codec["hash"])] != meta.codec["hash"]:
        raise ModelMismatchError("the file's prior was not trained on the file's codec")
    return candidate


def _reconstruct(model: Codec, meta: Metadata, tokens: torch.Tensor) -> Decompressed:
    m = meta.media
    if meta.modality == "image":
        shape = (m["channels"], m["height"], m["width"])
        y = model.decode(tokens[None].to(model.device), shape=shape, margin=meta.margin)[0]
        return Decompressed(y.cpu(), meta, tokens)
    if meta.has_stereo:  # (n_q, 2t): mid, then side
        halves = torch.stack(tokens.chunk(2, dim=-1)).to(model.device)
        mid, side = model.decode(halves, shape=(1, m["frames"]))[:, 0].cpu()
        y = torch.stack([mid + side, mid - side])
    else:
        y = model.decode(tokens[None].to(model.device), shape=(model.channels, m["frames"]))[0].cpu()
    y = resample(y, m["sample_rate"], m["orig_sample_rate"])
    with torch.inference_mode():  # the decoder's output is an inference tensor
        y.clamp_(-1, 1)  # in place: a long recording is held once
    if m["orig_channels"] <= 2:  # back to the original's layout; more channels than 2 stay as the codec gives them
        y = to_audio_channels(y, m["orig_channels"])
    n = m["orig_frames"]
    y = y[:, :n] if y.shape[1] >= n else torch.nn.functional.pad(y, (0, n - y.shape[1]))
    return Decompressed(y.contiguous(), meta, tokens, sample_rate=m["orig_sample_rate"])
