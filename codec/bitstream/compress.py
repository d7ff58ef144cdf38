"""``compress``: an image or audio (a file or a tensor) to ``.vqc`` bytes (the CLI's ``encode``).

>>> import codec
>>> data = codec.compress("photo.png", model="image")     # the bundled model and its prior
>>> data = codec.compress(x, model="runs/img", prior=None)  # packed mode
>>> data = codec.compress("speech.flac", bitrate="3kbps")  # the most residual levels within 3 kbps

The one module that joins the codec, the prior, the range coder and the container (see ``decompress`` for the way
back). Models are named by a run directory or a bundled model name (``codec.load``); a file records each model's
name and hash.
"""

import dataclasses
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codec.bitstream import container
from codec.bitstream.alpha import ALPHA_CODINGS, encode_alpha
from codec.bitstream.coders import coder_of, prior_encoder, recorded_hash
from codec.bitstream.container import Metadata
from codec.bitstream.context_coding import CODER as CONTEXT_CODER
from codec.bitstream.models import resolve_codec, resolve_prior
from codec.bitstream.packing import bits_per_token, pack_bits
from codec.bitstream.parallel import map_groups, work_units
from codec.bitstream.rate import choose_levels, describe, format_rate, parse_bitrate, read_sizes
from codec.core.model import Codec
from codec.core.refine import check_refine
from codec.core.windows import IMAGE_MARGIN, check_margin
from codec.errors import MediaError, ModelMismatchError
from codec.media import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    is_audio_file,
    is_image_file,
    read_audio,
    read_image,
    resample,
    to_audio_channels,
    to_image_channels,
)
from codec.store.rundir import model_hash
from prior.layout import raster

MAX_AUTO_CHUNK = 1024  # tokens per chunk at most when chosen automatically (128 frames of 8-level audio)
MIN_AUTO_CHUNK = 256  # and at least (one prior context); see auto_chunk_tokens
DEFAULT_GROUP = 32  # chunks range-coded in lockstep (speed; see codec.bitstream.range_coding)
# Automatic chunking aims at this many groups of chunks: one lockstep group per worker of a 2-core machine. A fixed
# number, never the machine's core count: the same input gives the same file everywhere. Measured on 4 held-out
# 512 px photographs (24,576 tokens each): 64 chunks of 384 tokens instead of 32 of 768 decode 27% faster with
# two workers (3,531 against 2,770 tokens/s) for 0.6% more bytes (chunk heads and restarted prior context).
AUTO_GROUPS = 2
MIN_PARALLEL_TOKENS = 8192  # the context coder splits inputs of at least this many tokens for the workers


def auto_chunk_tokens(num_tokens: int, group: int = DEFAULT_GROUP) -> int:
    """Tokens per chunk: enough chunks to fill AUTO_GROUPS groups (chunks in lockstep are what makes range coding
    fast; a group per worker), but no fewer than MIN_AUTO_CHUNK tokens (each chunk restarts the prior's context)
    nor more than MAX_AUTO_CHUNK.
    """
    return int(min(MAX_AUTO_CHUNK, max(MIN_AUTO_CHUNK, -(-num_tokens // (AUTO_GROUPS * group)))))


# ------------------------------------------------------------------------------------------- inputs
def _read_input(x, model: Codec | None, sample_rate: int | None):
    """(tensor, modality, media dict fields from the source) from a path or a tensor."""
    if isinstance(x, (str, os.PathLike)):
        if is_image_file(x):
            img = read_image(x)
            pixels = img.pixels if img.alpha is None else torch.cat([img.pixels, img.alpha])
            return pixels, "image", {"format": img.format}
        if is_audio_file(x):
            audio = read_audio(x)
            return audio.samples, "audio", {"format": audio.format, "subtype": audio.subtype, "rate": audio.sample_rate}
        ext = Path(x).suffix or "no extension"
        known = ", ".join(sorted(IMAGE_EXTENSIONS | AUDIO_EXTENSIONS))
        raise MediaError(x, f"not a supported image or audio file ({ext}; known: {known})")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a path or a torch.Tensor, got {type(x).__name__}")
    modality = {3: "image", 2: "audio"}.get(x.ndim)
    if modality is None:
        raise ValueError(f"x must be an image (C, H, W) or audio (C, T) tensor, got shape {tuple(x.shape)}")
    if modality == "audio":
        rate = sample_rate or (model.sample_rate if model is not None and model.modality == "audio" else None)
        if rate is None:
            raise ValueError("sample_rate is required to compress an audio tensor without a model")
        return x, "audio", {"format": None, "subtype": None, "rate": rate}
    return x, "image", {"format": None}


def _prepare(
    x: torch.Tensor, model: Codec, src: dict, margin: int = IMAGE_MARGIN
) -> tuple[torch.Tensor, dict, np.ndarray | None]:
    """The codec's input (C, ...), the metadata's media dict, and an image's alpha plane ((H, W) uint8, or None)."""
    if model.modality == "image":
        if x.shape[0] not in (1, 2, 3, 4):
            raise ValueError(f"an image must have 1 to 4 channels (L, LA, RGB, RGBA), got shape {tuple(x.shape)}")
        alpha = None
        if x.shape[0] in (2, 4):  # the last channel is alpha: coded losslessly at 8 bits beside the tokens
            x, a = x[:-1], x[-1].detach().cpu().float()
            if not torch.isfinite(a).all():
                raise ValueError("the alpha channel holds NaN or infinite values")
            alpha = a.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
        if x.shape[0] == 3 and model.channels == 1:
            x = to_image_channels(x, 1)  # a grayscale model codes luma
        media = {"channels": int(x.shape[0]), "height": int(x.shape[1]), "width": int(x.shape[2])}
        media["format"] = src["format"]
        if margin:
            media["margin"] = margin
        if alpha is not None:
            media["alpha"] = ALPHA_CODINGS[0]
        return x, media, alpha
    if x.shape[-1] == 0 or x.shape[0] == 0:
        raise ValueError(f"audio is empty: shape {tuple(x.shape)}")
    orig_rate, orig_frames, orig_channels = int(src["rate"]), int(x.shape[1]), int(x.shape[0])
    y = resample(x.float(), orig_rate, model.sample_rate)
    stereo = orig_channels == 2 and model.channels == 1  # mid and side, each coded by the mono codec
    y = torch.stack([(y[0] + y[1]) / 2, (y[0] - y[1]) / 2]) if stereo else to_audio_channels(y, model.channels)
    media = dict(
        channels=model.channels,
        sample_rate=model.sample_rate,
        frames=int(y.shape[1]),
        orig_sample_rate=orig_rate,
        orig_frames=orig_frames,
        orig_channels=orig_channels,
        format=src["format"],
        subtype=src["subtype"],
    )
    if stereo:
        media["stereo"] = container.STEREO_CODINGS[0]
    return y, media, None


def encode_tokens(
    model: Codec, x: torch.Tensor, media: dict, num_quantizers: int | None, refine: int = 0
) -> torch.Tensor:
    """The codec's tokens of a prepared input (``_prepare``), on the CPU: the model's token shape, except for coded
    stereo, whose mid and side grids (n_q, t) follow each other along time: (n_q, 2t). ``refine``: steps of
    encoder-side search (``codec.core.refine``)."""
    if media.get("stereo"):
        mid, side = model.encode(x[:, None].to(model.device), num_quantizers=num_quantizers, refine=refine).cpu()
        return torch.cat([mid, side], dim=-1)
    margin = media.get("margin", 0)  # images only
    x = x[None].to(model.device)
    return model.encode(x, num_quantizers=num_quantizers, margin=margin, refine=refine)[0].cpu()


def _levels_for_rate(model: Codec, num_quantizers, bitrate, bpp, streams: int = 1) -> tuple[int | None, float | None]:
    """(``num_quantizers``, None), or (the level count ``choose_levels`` picks for ``bitrate`` / ``bpp`` shared by
    ``streams`` signals (2 for stereo coded as mid and side), the requested rate in bits per second or pixel)."""
    given = [
        name for name, v in (("num_quantizers", num_quantizers), ("bitrate", bitrate), ("bpp", bpp)) if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give one of num_quantizers, bitrate and bpp, not {' and '.join(given)}")
    if bitrate is None and bpp is None:
        return num_quantizers, None
    if (bitrate is not None) != (model.modality == "audio"):
        raise ValueError(f"bitrate is for audio and bpp for images; this is an {model.modality} codec")
    target = parse_bitrate(bitrate) if bitrate is not None else float(bpp)
    choice = choose_levels(model, target / streams)
    if choice.below_lowest:
        each = " for each of mid and side" if streams == 2 else ""
        warnings.warn(
            f"{format_rate(model.modality, target)} is below the lowest rate this codec offers, "
            f"{format_rate(model.modality, streams * choice.rate)} (1 level{each}); using 1 level",
            stacklevel=3,
        )
    return choice.levels, target


# ----------------------------------------------------------------------------------------- compress
def compress(
    x,
    model=None,
    prior="auto",
    *,
    num_quantizers: int | None = None,
    bitrate: float | str | None = None,
    bpp: float | None = None,
    sample_rate: int | None = None,
    chunk_tokens: int | None = None,
    group: int = DEFAULT_GROUP,
    device=None,
    progress: bool = False,
    packed_if_smaller: bool | None = None,
    workers: int | None = None,
    margin: int = IMAGE_MARGIN,
    refine: int = 0,
    fit: str = "packed",
) -> bytes:
    """Compress an image or audio (a file path or a tensor) into ``.vqc`` bytes.

    Args:
        x: a path to an image or audio file; or an image tensor (C, H, W) in [0, 1] with C = 1, 3 (grayscale, RGB)
            or 2, 4 (the same with alpha last: kept losslessly at 8 bits); or audio (C, T) in [-1, 1] at
            ``sample_rate`` (default: the model's rate).
        model: a ``Codec``, a codec run directory, or a bundled model name; None: the bundled model for the
            input's modality.
        prior: the entropy model of "prior" mode: a ``ContextPrior`` (coder ``context-1``, fast) or a
            ``TokenPrior`` (``integer-1``), or a run directory or bundled name of one ("image/context",
            "image/prior"); None: "packed" mode; "auto": the codec's context model (``RUN_DIR/context``) if it has
            one, else its prior (``RUN_DIR/prior``), else packed.
        num_quantizers: residual levels to keep (fewer = lower bitrate); None = all.
        bitrate: audio: instead of ``num_quantizers``, a rate in bits per second (or a string such as "3kbps",
            "3k", "3000"): the most levels whose bit-packed rate is at most this (one level, with a warning, when
            even one costs more; ``codec.bitstream.rate.choose_levels``).
        bpp: images: the same in bits per pixel.
        fit: how ``bitrate`` / ``bpp`` pick the levels: "packed" (the rule above: fixed, whatever the content) or
            "coded": from that count up, the most levels whose whole file (header included, prior-coded) is within
            the request, found by coding every further level count (at most ``num_quantizers`` - 1 more codings;
            an entropy-constrained codec's upper levels code far below their bit-packed rate).
        chunk_tokens: tokens per chunk (each independently checked and entropy coded); None chooses with
            ``auto_chunk_tokens`` (``context_chunk_tokens`` for the context model).
        group: chunks range-coded in lockstep in "prior" mode with a Transformer prior (recorded in the file; 1
            for the context model, which codes a chunk in a few passes).
        device: where the codec runs (default: CUDA when available). The prior codes in exact integer arithmetic
            (``codec.bitstream.integer_coding``), so the file decodes to the same tokens on any machine.
        progress: show a progress bar over the tokens being entropy coded.
        packed_if_smaller: write a "packed" file instead when it is no larger than the prior-coded one (a prior
            that does not model this input well can cost more than the fixed-width indices); None: only with
            ``prior="auto"``, so a prior given explicitly is always used.
        workers: CPU processes that range-code chunks at once (forked; Linux); None: one per thread torch may use
            (``torch.get_num_threads()``, the cores by default). The bytes do not depend on it.
        margin: images: pixels of replicated edge coded around the image at least (``codec.core.windows.framing``:
            the edges come out about as well as the interior, for a few % more tokens); 0 codes the grid
            ``model.encode(x)`` makes (no ``media.margin`` recorded). Ignored for audio.
        refine: steps of encoder-side search for tokens that decode closer to the input (``codec.core.refine``);
            0 = the encoder's nearest codes. Each step costs a decoder forward and backward pass (30 steps: about
            35x the plain encoder's time on images). Any reader decodes the file; only encoding changes.

    Returns:
        The file's bytes (see docs/format.md). The same input and models give the same bytes (with the same
        zlib, which compresses the header).

    Raises:
        MediaError: unreadable or unsupported input file. ValueError: bad tensors or settings.
        CheckpointError: a model that cannot be loaded. ModelMismatchError: a prior from another codec.
    """
    if chunk_tokens is not None and not 1 <= chunk_tokens <= container.MAX_CHUNK_TOKENS:
        raise ValueError(f"chunk_tokens must be in [1, {container.MAX_CHUNK_TOKENS}], got {chunk_tokens}")
    if not 1 <= group <= container.MAX_GROUP:
        raise ValueError(f"group must be in [1, {container.MAX_GROUP}], got {group}")
    if fit not in ("packed", "coded"):
        raise ValueError(f'fit must be "packed" or "coded", got {fit!r}')
    if fit == "coded" and bitrate is None and bpp is None:
        raise ValueError('fit="coded" chooses the levels for bitrate / bpp; give one of them')
    given = model if isinstance(model, Codec) else None
    x, modality, src = _read_input(x, given, sample_rate)
    model, codec_name = resolve_codec(model if model is not None else modality, device)
    if model.modality != modality:
        raise ModelMismatchError(f"the input is {modality} but the codec is an {model.modality} model")
    if model.codebook_size > container.MAX_CODEBOOK:
        raise ValueError(f"codebook size {model.codebook_size} exceeds the format's {container.MAX_CODEBOOK}")
    c_hash = model_hash(model)
    prior_model, prior_name = resolve_prior(prior, model, c_hash)
    check_refine(refine)
    x, media, alpha = _prepare(x, model, src, check_margin(margin))
    num_quantizers, target = _levels_for_rate(model, num_quantizers, bitrate, bpp, 2 if media.get("stereo") else 1)
    alpha_record = b"" if alpha is None else container.alpha_bytes(encode_alpha(alpha), alpha)
    workers = workers or torch.get_num_threads()
    packed_too = prior_model is not None and (packed_if_smaller if packed_if_smaller is not None else prior == "auto")

    def file_bytes(tokens: torch.Tensor) -> bytes:
        """The file of ``tokens``: prior-coded (packed without a prior), or packed where ``packed_too`` and that
        is no larger."""
        meta = Metadata(
            modality=modality,
            codec={"name": codec_name, "hash": c_hash[: container.HASH_CHARS]},
            mode="prior" if prior_model is not None else "packed",
            token_shape=list(tokens.shape),
            residual=model.residual,
            codebook_size=model.codebook_size,
            chunk_tokens=chunk_tokens or auto_chunk_tokens(tokens.numel(), group),
            media=media,
            group=group if prior_model is not None else 1,
        )
        if prior_model is not None:  # an integer network codes (version 5); the file names it by its hash
            meta.coder = coder_of(prior_model)
            meta.prior = {"name": prior_name, "hash": recorded_hash(meta.coder, prior_model)}
            if meta.coder == CONTEXT_CODER:
                meta.group = 1  # chunks are coded one at a time, each in a few passes
                meta.chunk_tokens = chunk_tokens or context_chunk_tokens(prior_model.layout(tokens.shape))
        flat = raster(tokens, model.residual).numpy()
        data = _write(meta, alpha_record, flat, prior_model, progress, workers)
        if packed_too:
            packed_meta = dataclasses.replace(meta, mode="packed", prior=None, group=1, coder=None)
            packed = _write(packed_meta, alpha_record, flat, None, False, 1)
            if len(packed) <= len(data):
                return packed
        return data

    if not (fit == "coded" and prior_model is not None and model.residual):
        return file_bytes(encode_tokens(model, x, media, num_quantizers, refine))
    # every count from the bit-packed rule's up (sizes need not grow with the levels: a nearly free upper level can
    # shift the chunking); residual levels are chosen one after another, so without the search one encoding of all
    # levels holds every count's tokens as its first levels
    most = model.num_quantizers
    every = encode_tokens(model, x, media, most) if not refine else None
    data = None
    for levels in range(num_quantizers, most + 1):
        trial = file_bytes(every[:levels] if every is not None else encode_tokens(model, x, media, levels, refine))
        if data is None or _file_rate(trial) <= target:
            data = trial
    return data


def _file_rate(data: bytes) -> float:
    """A whole file's rate, header included: bits per pixel (image) or bits per second (audio)."""
    info = describe(*read_sizes(data))
    return info["bpp"] if "bpp" in info else 1000 * info["kbps"]


def _write(
    meta: Metadata, alpha_record: bytes, flat: np.ndarray, prior_model, progress: bool, workers: int = 1
) -> bytes:
    """The file's bytes: header, the alpha record (b"" without alpha), then every chunk of ``flat`` (raster
    order), packed or coded by ``prior_model`` with the file's coder (``meta.coder``: the integer prior; None: the
    float coder of versions 1-4, which only tests and benchmarks write), in ``workers`` processes (the same
    bytes whatever their number; ``codec.bitstream.parallel``)."""
    bits = bits_per_token(meta.codebook_size)
    out = io.BytesIO()
    out.write(container.header_bytes(meta))
    out.write(alpha_record)
    jobs = work_units(list(meta.groups()), workers, lockstep=meta.coder is None)
    args = (([a for _, a, _ in job], [flat[a:b] for _, a, b in job]) for job in jobs)
    if prior_model is None:
        coded = ([pack_bits(c, bits) for c in chunks] for _, chunks in args)
    else:
        encode, layout = prior_encoder(meta, prior_model), prior_model.layout(tuple(meta.token_shape))
        coded = map_groups(lambda starts, chunks: encode(layout, starts, chunks), args, workers, len(jobs))
    bar = tqdm(total=meta.num_tokens, unit="tok", desc="encode", disable=not progress, leave=False)
    with bar:
        for job, payloads in zip(jobs, coded):
            chunks = [flat[a:b] for _, a, b in job]
            for payload, chunk in zip(payloads, chunks):
                out.write(container.chunk_bytes(payload, chunk))
            bar.update(sum(len(c) for c in chunks))
    return out.getvalue()


def context_chunk_tokens(layout) -> int:
    """Tokens per chunk for the context coder: whole rows of the grid (a chunk's edges cost context), as few
    chunks as the format's chunk limit allows, but AUTO_GROUPS of them (one per worker) once there are at least
    MIN_PARALLEL_TOKENS tokens. Audio (one row) is cut into runs of whole frames."""
    L, H, W = layout
    total = L * H * W
    chunks = max(-(-total // container.MAX_CHUNK_TOKENS), AUTO_GROUPS if total >= MIN_PARALLEL_TOKENS else 1)
    unit = L * W if H > 1 and L * W <= container.MAX_CHUNK_TOKENS else L  # a row, or a frame
    per = -(-total // chunks)
    per = -(-per // unit) * unit  # whole units, rounded up ...
    if per > container.MAX_CHUNK_TOKENS:  # ... unless that passes the limit
        per = container.MAX_CHUNK_TOKENS // unit * unit
    return int(per)
