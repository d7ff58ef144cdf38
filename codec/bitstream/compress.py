"""``compress`` / ``decompress``: images and audio to ``.vqc`` bytes and back (the CLI's ``encode`` / ``decode``).

>>> import codec
>>> data = codec.compress("photo.png", model="runs/image", prior="runs/image-prior")
>>> out = codec.decompress(data, model="runs/image", prior="runs/image-prior")
>>> out.data.shape, out.metadata.mode          # (3, H, W) float32 in [0, 1], "prior"

Models are named by a run directory or a bundled model name (``codec.load``). A file records each model's
name and hash; ``decompress`` loads them by name when none is given and refuses models whose hash differs.
"""

import dataclasses
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from codec import container, entropy
from codec.checkpoint import model_hash
from codec.container import Metadata
from codec.errors import CheckpointError, CorruptFileError, MediaError, ModelMismatchError
from codec.model import Codec

MAX_AUTO_CHUNK = 1024  # tokens per chunk at most when chosen automatically (128 frames of 8-level audio)
MIN_AUTO_CHUNK = 256  # and at least (one prior context); see auto_chunk_tokens
DEFAULT_GROUP = 32  # chunks range-coded in lockstep (speed; see codec.entropy)


def auto_chunk_tokens(num_tokens: int, group: int = DEFAULT_GROUP) -> int:
    """Tokens per chunk: enough chunks to fill a group (chunks in lockstep are what makes range coding fast),
    but no fewer than MIN_AUTO_CHUNK tokens (each chunk restarts the prior's context) nor more than MAX_AUTO_CHUNK.
    """
    return int(min(MAX_AUTO_CHUNK, max(MIN_AUTO_CHUNK, -(-num_tokens // group))))


PRIOR_DIR_NAME = "prior"  # a codec run directory may hold its default prior in this subdirectory


@dataclass
class Decompressed:
    """What ``decompress`` returns.

    Attributes:
        data: image (C, H, W) float32 in [0, 1], or audio (C, T) float32 in [-1, 1] at ``sample_rate``,
            with the original's channel count, size, and sample rate.
        metadata: the file's metadata (``codec.container.Metadata``).
        tokens: the decoded tokens, int64 with ``metadata.token_shape``.
        sample_rate: audio only: the rate of ``data`` (the original file's); None for images.
    """

    data: torch.Tensor
    metadata: Metadata
    tokens: torch.Tensor
    sample_rate: int | None = None


# ------------------------------------------------------------------------------------------ models
def resolve_codec(model, device=None) -> tuple[Codec, str]:
    """(codec, name) from a Codec, a run directory or a bundled name."""
    from codec import load

    if isinstance(model, Codec):
        return model, getattr(model, "name", "") or ""
    model = load(model, device=device)
    return model, model.name


def default_prior_dir(model: Codec):
    """The prior stored beside a codec (``RUN_DIR/prior``), or None."""
    source = getattr(model, "source", None)
    if source is None:
        return None
    p = Path(source) / PRIOR_DIR_NAME
    return p if (p / "config.json").is_file() else None


def load_named_prior(name_or_path):
    """A prior from a run directory or a bundled name ("image/prior"), on the CPU, with ``.name`` set to what a
    file records (``codec.portable_name``)."""
    from codec import model_dir, portable_name
    from prior.checkpoint import load_prior

    path = model_dir(name_or_path)
    prior = load_prior(path, device="cpu")
    prior.name = portable_name(path)
    return prior


def resolve_prior(prior, model: Codec, codec_hash: str):
    """(prior on the CPU, name) or (None, None); checks that the prior belongs to ``model`` (whose ``model_hash`` is
    ``codec_hash``). "auto": ``default_prior_dir``."""
    from prior.checkpoint import check_codec
    from prior.model import TokenPrior

    if isinstance(prior, str) and prior == "auto":
        prior = default_prior_dir(model)
    if prior is None:
        return None, None
    if not isinstance(prior, TokenPrior):
        prior = load_named_prior(prior)
    name = getattr(prior, "name", "") or ""
    check_codec(prior, model, where=f"the prior {name}".strip(), codec_hash=codec_hash)
    return prior, name


# ------------------------------------------------------------------------------------------- inputs
def _read_input(x, model: Codec | None, sample_rate: int | None):
    """(tensor, modality, media dict fields from the source) from a path or a tensor."""
    from codec.audio_io import is_audio_file, read_audio
    from codec.image_io import is_image_file, read_image

    if isinstance(x, (str, os.PathLike)):
        if is_image_file(x):
            img = read_image(x)
            return img.pixels, "image", {"format": img.format}
        if is_audio_file(x):
            audio = read_audio(x)
            return audio.samples, "audio", {"format": audio.format, "subtype": audio.subtype, "rate": audio.sample_rate}
        raise MediaError(x, "not a supported image or audio file (unknown extension)")
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


def _prepare(x: torch.Tensor, model: Codec, src: dict) -> tuple[torch.Tensor, dict]:
    """The codec's input (C, ...) and the metadata's media dict."""
    from codec.audio_io import resample
    from codec.data import to_audio_channels, to_image_channels

    if model.modality == "image":
        if x.shape[0] not in (1, 3):
            raise ValueError(f"an image must have 1 or 3 channels, got shape {tuple(x.shape)}")
        if x.shape[0] == 3 and model.channels == 1:
            x = to_image_channels(x, 1)  # a grayscale model codes luma
        media = {"channels": int(x.shape[0]), "height": int(x.shape[1]), "width": int(x.shape[2])}
        return x, {**media, "format": src["format"]}
    if x.shape[-1] == 0 or x.shape[0] == 0:
        raise ValueError(f"audio is empty: shape {tuple(x.shape)}")
    orig_rate, orig_frames, orig_channels = int(src["rate"]), int(x.shape[1]), int(x.shape[0])
    y = to_audio_channels(resample(x.float(), orig_rate, model.sample_rate), model.channels)
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
    return y, media


# ----------------------------------------------------------------------------------------- compress
def compress(
    x,
    model=None,
    prior="auto",
    *,
    num_quantizers: int | None = None,
    sample_rate: int | None = None,
    chunk_tokens: int | None = None,
    group: int = DEFAULT_GROUP,
    device=None,
    progress: bool = False,
    packed_if_smaller: bool | None = None,
) -> bytes:
    """Compress an image or audio (a file path or a tensor) into ``.vqc`` bytes.

    Args:
        x: a path to an image or audio file; or an image tensor (C, H, W) in [0, 1] (C = 1 or 3); or audio
            (C, T) in [-1, 1] at ``sample_rate`` (default: the model's rate).
        model: a ``Codec``, a codec run directory, or a bundled model name; None: the bundled model for the
            input's modality.
        prior: a ``TokenPrior`` or a prior run directory for "prior" mode; None: "packed" mode; "auto": the
            prior stored with the codec (``RUN_DIR/prior``, as bundled models have) if there is one, else packed.
        num_quantizers: residual levels to keep (fewer = lower bitrate); None = all.
        chunk_tokens: tokens per chunk (each independently checked and entropy coded); None chooses with
            ``auto_chunk_tokens``.
        group: chunks range-coded in lockstep in "prior" mode (recorded in the file).
        device: where the codec runs (default: CUDA when available). The prior always runs on the CPU, so
            files decode the same on any machine of the same kind.
        progress: show a progress bar over the tokens being entropy coded.
        packed_if_smaller: write a "packed" file instead when it is no larger than the prior-coded one (a prior
            that does not model this input well can cost more than the fixed-width indices); None: only with
            ``prior="auto"``, so a prior given explicitly is always used.

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
    given = model if isinstance(model, Codec) else None
    x, modality, src = _read_input(x, given, sample_rate)
    model, codec_name = resolve_codec(model if model is not None else modality, device)
    if model.modality != modality:
        raise ModelMismatchError(f"the input is {modality} but the codec is a {model.modality} model")
    if model.codebook_size > entropy.MAX_CODEBOOK:
        raise ValueError(f"codebook size {model.codebook_size} exceeds the format's {entropy.MAX_CODEBOOK}")
    c_hash = model_hash(model)
    prior_model, prior_name = resolve_prior(prior, model, c_hash)
    x, media = _prepare(x, model, src)
    tokens = model.encode(x[None].to(model.device), num_quantizers=num_quantizers)[0].cpu()
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
    if prior_model is not None:
        from prior.checkpoint import prior_hash

        meta.prior = {"name": prior_name, "hash": prior_hash(prior_model)[: container.HASH_CHARS]}
    flat = entropy.raster(tokens, model.residual).numpy()
    data = _write(meta, flat, prior_model, progress)
    if prior_model is not None and (packed_if_smaller if packed_if_smaller is not None else prior == "auto"):
        packed_meta = dataclasses.replace(meta, mode="packed", prior=None, group=1)
        packed = _write(packed_meta, flat, None, False)
        if len(packed) <= len(data):
            return packed
    return data


def _write(meta: Metadata, flat: np.ndarray, prior_model, progress: bool) -> bytes:
    """The file's bytes: header, then every chunk of ``flat`` (raster order), packed or coded by ``prior_model``."""
    layout = prior_model.layout(tuple(meta.token_shape)) if prior_model is not None else None
    bits = entropy.bits_per_token(meta.codebook_size)
    out = io.BytesIO()
    out.write(container.header_bytes(meta))
    bar = tqdm(total=meta.num_tokens, unit="tok", desc="encode", disable=not progress, leave=False)
    with bar:
        for group_chunks in meta.groups():
            chunks = [flat[a:b] for _, a, b in group_chunks]
            if prior_model is None:
                payloads = [entropy.pack_bits(c, bits) for c in chunks]
            else:
                payloads = entropy.prior_encode(prior_model, layout, [a for _, a, _ in group_chunks], chunks)
            for payload, chunk in zip(payloads, chunks):
                out.write(container.chunk_bytes(payload, chunk))
            bar.update(sum(len(c) for c in chunks))
    return out.getvalue()


# --------------------------------------------------------------------------------------- decompress
def _open_source(source) -> tuple[BinaryIO, bool]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, (str, os.PathLike)):
        from codec.fileio import check_readable_file

        try:
            return open(check_readable_file(source), "rb"), True
        except MediaError as e:
            raise CorruptFileError(str(e)) from None
    if hasattr(source, "read"):
        return source, False
    raise TypeError(f"expected bytes, a path or a binary file, got {type(source).__name__}")


def read_info(source) -> Metadata:
    """The metadata of a ``.vqc`` file (bytes, path or binary file), header checked; chunks not read."""
    f, close = _open_source(source)
    try:
        return container.read_header(f)
    finally:
        if close:
            f.close()


def _load_named(kind: str, ref: dict, loader):
    try:
        return loader(ref["name"])
    except (CheckpointError, OSError) as e:
        raise ModelMismatchError(
            f"this file was encoded with the {kind} {ref['name']!r} ({ref['hash'][:12]}), which cannot be loaded "
            f"here ({e}); pass the {kind} it was made with"
        ) from None


def _check_tokens_fit(meta: Metadata, model: Codec) -> None:
    """The file's token layout must be what ``model`` makes of its media."""
    if meta.modality != model.modality or meta.codebook_size != model.codebook_size or meta.residual != model.residual:
        raise ModelMismatchError("the file's token layout does not match this codec")
    f, m = model.downsample, meta.media
    grid = [m["height"], m["width"]] if meta.modality == "image" else [m["frames"]]
    grid = [-(-s // f) for s in grid]
    levels = meta.token_shape[0] if meta.residual else 1
    if meta.token_shape[int(meta.residual) :] != grid or not 1 <= levels <= model.num_quantizers:
        raise CorruptFileError(f"token shape {meta.token_shape} does not fit the recorded media size {m}")
    if meta.modality == "image" and m["channels"] == 3 and model.channels == 1:
        raise CorruptFileError("a 3-channel image recorded for a 1-channel codec")


def decompress(source, model=None, prior=None, *, device=None, progress: bool = False) -> Decompressed:
    """Decode ``.vqc`` bytes (or a path, or a binary file) back to an image or audio tensor.

    Args:
        source: the file's bytes, its path, or a binary file object.
        model, prior: the codec and prior it was made with (objects, run directories or bundled names); None
            loads the ones the file names.
        device: where the codec runs (default: CUDA when available).
        progress: show a progress bar over the tokens being decoded.

    Raises:
        CorruptFileError: damaged, truncated or extended data, or not a .vqc file.
        ModelMismatchError: the file was made with another codec or prior, or the one it names is not available.
    """
    f, close = _open_source(source)
    try:
        return _decompress(f, model, prior, device, progress)
    finally:
        if close:
            f.close()


def _decompress(f: BinaryIO, model, prior, device, progress: bool) -> Decompressed:
    from codec import load

    meta = container.read_header(f)
    if model is None:
        model = _load_named("codec", meta.codec, lambda name: load(name, device=device))
    elif not isinstance(model, Codec):
        model = load(model, device=device)
    got = model_hash(model)[: container.HASH_CHARS]
    if got != meta.codec["hash"]:
        raise ModelMismatchError(
            f"this file was encoded with codec {meta.codec['name']!r} ({meta.codec['hash'][:12]}), "
            f"not with the given codec ({got[:12]})"
        )
    _check_tokens_fit(meta, model)
    prior_model = _file_prior(meta, model, prior) if meta.mode == "prior" else None
    parts = []  # decoded chunks: memory grows with the data actually present, never with the header's claims
    chunks = container.iter_chunks(f, meta)
    layout = prior_model.layout(meta.token_shape) if prior_model is not None else None
    bits = entropy.bits_per_token(meta.codebook_size)
    bar = tqdm(total=meta.num_tokens, unit="tok", desc="decode", disable=not progress, leave=False)
    with bar:
        for group_chunks in meta.groups():
            got_chunks = [next(chunks) for _ in group_chunks]
            lengths = [b - a for _, a, b in group_chunks]
            if prior_model is None:
                decoded = [entropy.unpack_bits(p, n, bits) for (p, _), n in zip(got_chunks, lengths)]
            else:
                starts, payloads = [a for _, a, _ in group_chunks], [p for p, _ in got_chunks]
                try:
                    decoded = entropy.prior_decode(prior_model, layout, starts, lengths, payloads)
                except ValueError as e:
                    first, last = group_chunks[0][0], group_chunks[-1][0]
                    raise CorruptFileError(f"chunks {first}..{last}: {e}") from None
            for (i, _, _), tokens, (_, tcrc) in zip(group_chunks, decoded, got_chunks):
                if tokens.size and (tokens.min() < 0 or tokens.max() >= meta.codebook_size):
                    raise CorruptFileError(f"chunk {i} holds token values outside [0, {meta.codebook_size})")
                if container.token_crc(tokens) != tcrc:
                    raise CorruptFileError(
                        f"chunk {i} decoded to tokens that fail their checksum (damaged data, or a prior computing "
                        "differently from the encoder's)"
                    )
                parts.append(tokens)
            bar.update(sum(lengths))
    next(chunks, None)  # runs the end-of-file check
    flat = torch.from_numpy(np.concatenate(parts))
    tokens = entropy.unraster(flat, tuple(meta.token_shape), meta.residual)
    return _reconstruct(model, meta, tokens)


def _file_prior(meta: Metadata, model: Codec, prior):
    """The prior a "prior"-mode file was made with: ``prior`` (an object or a directory) if given, else the one
    stored with the codec if its hash is the file's, else the one the file names. Each candidate is hashed once.

    Raises:
        ModelMismatchError: not the file's prior (by hash), or not trained on the file's codec.
    """
    from prior.checkpoint import load_prior, prior_hash
    from prior.model import TokenPrior

    def hashed(p):
        return p, prior_hash(p)[: container.HASH_CHARS]

    candidate = got = None
    if prior is not None:
        candidate, got = hashed(prior if isinstance(prior, TokenPrior) else load_prior(prior, device="cpu"))
    elif (beside := default_prior_dir(model)) is not None:
        candidate, got = hashed(load_prior(beside, device="cpu"))
        if got != meta.prior["hash"]:
            candidate = None
    if candidate is None:
        candidate, got = hashed(_load_named("prior", meta.prior, load_named_prior))
    if got != meta.prior["hash"]:
        raise ModelMismatchError(
            f"this file was encoded with prior {meta.prior['name']!r} ({meta.prior['hash'][:12]}), "
            f"not with the given prior ({got[:12]})"
        )
    if candidate.config.codec_hash[: container.HASH_CHARS] != meta.codec["hash"]:
        raise ModelMismatchError("the file's prior was not trained on the file's codec")
    return candidate


def _reconstruct(model: Codec, meta: Metadata, tokens: torch.Tensor) -> Decompressed:
    from codec.audio_io import resample
    from codec.data import to_audio_channels

    m = meta.media
    if meta.modality == "image":
        y = model.decode(tokens[None].to(model.device), shape=(m["channels"], m["height"], m["width"]))[0]
        return Decompressed(y.cpu(), meta, tokens)
    y = model.decode(tokens[None].to(model.device), shape=(model.channels, m["frames"]))[0].cpu()
    y = resample(y, m["sample_rate"], m["orig_sample_rate"]).clamp(-1, 1)
    if m["orig_channels"] <= 2:  # back to the original's layout; more channels than 2 stay as the codec gives them
        y = to_audio_channels(y, m["orig_channels"])
    n = m["orig_frames"]
    y = y[:, :n] if y.shape[1] >= n else torch.nn.functional.pad(y, (0, n - y.shape[1]))
    return Decompressed(y.contiguous(), meta, tokens, sample_rate=m["orig_sample_rate"])
