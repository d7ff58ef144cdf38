"""Rates in the units people use: bits per second for audio, bits per pixel for images. No torch.

``parse_bitrate`` reads what a user types ("3kbps", "3k", "3000"); ``level_rate`` is what one residual level costs
bit-packed, from the codec's properties; ``choose_levels`` turns a requested rate into a level count; ``read_sizes``
and ``describe`` say what a ``.vqc`` file really costs (``codec info``, and the line ``codec encode`` prints per file).

n residual levels cost, bit-packed, n * ceil(log2 K) * frame rate (sample_rate / hop) bits per second for audio, and
n * ceil(log2 K) / f^2 bits per pixel for images. Range coding with the prior makes files smaller than that; the
header (about 0.25 KB) makes short clips and small images larger.
"""

import io
import math
import re
from dataclasses import dataclass

from codec.bitstream import container
from codec.bitstream.container import Metadata
from codec.bitstream.packing import bits_per_token

_UNITS = {"": 1, "bps": 1, "b/s": 1, "bit/s": 1, "k": 1e3, "kbps": 1e3, "kb/s": 1e3, "kbit/s": 1e3}
_NUMBER_UNIT = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-z/]*)\s*", re.IGNORECASE)


def parse_bitrate(text: str | float) -> float:
    """Bits per second from "3kbps", "3 kb/s", "3k", "1.5k", "3000" or "3000bps" (a bare number is bits per second),
    or from a number.

    Raises:
        ValueError: not a positive rate in one of those forms.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _NUMBER_UNIT.fullmatch(str(text))
        unit = m and _UNITS.get(m.group(2).lower())
        if not unit:
            raise ValueError(f"bitrate {text!r} is not understood; write it like 3kbps, 3k or 3000 (bits per second)")
        value = float(m.group(1)) * unit
    if not value > 0 or math.isinf(value):
        raise ValueError(f"bitrate must be a positive number of bits per second, got {text!r}")
    return value


def level_rate(model) -> float:
    """The bit-packed rate of one residual level of ``model`` (a codec, or anything with its ``modality``,
    ``codebook_size``, ``downsample`` and ``sample_rate``): bits per second for audio, bits per pixel for images."""
    bits = bits_per_token(model.codebook_size)
    if model.modality == "audio":
        return bits * model.sample_rate / model.downsample
    return bits / model.downsample**2


@dataclass
class LevelChoice:
    """What ``choose_levels`` picked.

    Attributes:
        levels: residual levels to keep (``num_quantizers``).
        rate: their bit-packed rate, in the request's unit (bits per second, or bits per pixel).
        below_lowest: the request was below the rate of one level, the lowest the model offers.
    """

    levels: int
    rate: float
    below_lowest: bool


def choose_levels(model, target: float) -> LevelChoice:
    """The most residual levels whose bit-packed rate is at most ``target`` (bits per second for an audio codec,
    bits per pixel for an image codec), so a file stays within the request apart from its header; one level when
    even one is above it. Files coded with the prior come out smaller still."""
    if not target > 0:
        raise ValueError(f"the requested rate must be positive, got {target}")
    per = level_rate(model)
    most = model.num_quantizers if model.residual else 1
    n = min(most, math.floor(target / per * (1 + 1e-9)))
    return LevelChoice(max(1, n), max(1, n) * per, n < 1)


def format_rate(modality: str, rate: float) -> str:
    """ "3 kbps", "1.5 kbps" (rate in bits per second) or "0.156 bpp"."""
    return f"{rate / 1000:.4g} kbps" if modality == "audio" else f"{rate:.3g} bpp"


@dataclass
class FileSizes:
    """Where a file's bytes go (``read_sizes``).

    Attributes:
        total: the whole file.
        header: fixed header and metadata.
        alpha: the alpha record, head included (0 without alpha).
        chunk_heads: the 12-byte heads of the chunks.
        tokens: the chunks' payloads: the coded tokens.
    """

    total: int
    header: int
    alpha: int
    chunk_heads: int

    @property
    def tokens(self) -> int:
        return self.total - self.header - self.alpha - self.chunk_heads


def read_sizes(source) -> tuple[Metadata, FileSizes]:
    """The metadata of a ``.vqc`` file (bytes, path or seekable binary file) and where its bytes go. Every chunk's
    head, bounds and CRC are checked on the way, and the file's end (nothing decoded): a truncated, extended or
    damaged file raises ``CorruptFileError`` instead of being described."""
    f, close = container.open_source(source)
    try:
        meta = container.read_header(f)
        header = f.tell()
        alpha = container.alpha_record_size(f, meta)
        f.seek(alpha, io.SEEK_CUR)
        for _ in container.iter_chunks(f, meta):
            pass
        total = f.tell()
    finally:
        if close:
            f.close()
    return meta, FileSizes(total, header, alpha, container.CHUNK_HEAD * meta.num_chunks)


def describe(meta: Metadata, sizes: FileSizes) -> dict:
    """What a file costs and how it is coded (the figures of ``codec info --json``).

    Rates are given for the whole file and without its header (fixed header and metadata): ``bpp`` and
    ``bpp_without_header`` for images (per pixel of the original), ``kbps`` and ``kbps_without_header`` for audio
    (per second of the original). ``bits_per_token`` counts the coded tokens only (the chunks' payloads), so it
    compares directly with ``packed_bits_per_token``, what each token costs bit-packed.
    """
    m = meta.media
    info = {
        "bytes": sizes.total,
        "header_bytes": sizes.header,
        "alpha_bytes": sizes.alpha,
        "chunk_header_bytes": sizes.chunk_heads,
        "token_bytes": sizes.tokens,
        "tokens": meta.num_tokens,
        "chunks": meta.num_chunks,
        "levels": meta.token_shape[0] if meta.residual else 1,
        "mode": meta.mode,
        "bits_per_token": sizes.tokens * 8 / meta.num_tokens,
        "packed_bits_per_token": bits_per_token(meta.codebook_size),
    }
    if meta.modality == "image":
        info["pixels"] = m["height"] * m["width"]
        info["bpp"] = sizes.total * 8 / info["pixels"]
        info["bpp_without_header"] = (sizes.total - sizes.header) * 8 / info["pixels"]
    else:
        info["seconds"] = m["orig_frames"] / m["orig_sample_rate"]
        info["kbps"] = sizes.total * 8 / info["seconds"] / 1000
        info["kbps_without_header"] = (sizes.total - sizes.header) * 8 / info["seconds"] / 1000
    return info
