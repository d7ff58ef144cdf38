"""The ``.vqc`` container: a checked header, JSON metadata, then CRC-protected chunks (see docs/format.md).

Layout (all integers little-endian)::

    magic        4 bytes   b"VQC\\x1a"
    version      u16       7: every file written now. Older (still read): packed: 2; 3 for an image with alpha;
                           4 for stereo coded by a mono codec. prior mode: 5 (the integer coder; may carry alpha
                           or stereo). 6: an image with a margin (media.margin; either mode, may carry alpha)
    meta_length  u32       bytes of metadata as stored, <= MAX_META_BYTES
    header_crc   u32       CRC-32 of magic, version, meta_length and the stored metadata bytes
    metadata     JSON      UTF-8, keys sorted (see ``Metadata``); versions 2-7 store it raw-deflate compressed
                           (at most MAX_META_BYTES once inflated), version 7 against the preset dictionary
                           META_DICT, version 1 as it is
    alpha record          version 3 or later, when media.alpha is set: the same 12-byte head as a chunk (its CRC of the
                          raw alpha plane), then the coded plane (``codec.bitstream.alpha``)
    chunk * num_chunks:
        payload_length  u32   <= the bound its token count allows
        token_crc       u32   CRC-32 of the chunk's tokens as little-endian u32, checked after decoding
        chunk_crc       u32   CRC-32 of payload_length, token_crc and the payload
        payload         payload_length bytes
    (end of file: nothing may follow the last chunk)

Every field is checked against bounds before anything is allocated from it; any failure is ``CorruptFileError``.
"""

import io
import json
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

import numpy as np

from codec.bitstream.alpha import ALPHA_CODINGS, max_alpha_payload
from codec.bitstream.packing import bits_per_token, packed_size
from codec.core.windows import MAX_MARGIN
from codec.errors import CorruptFileError, MediaError
from codec.store.files import check_readable_file

MAGIC = b"VQC\x1a"
FORMAT_VERSION = 7  # the newest, and the version of every file written now (``file_version``)
# 1: plain JSON metadata; 2: the same JSON, raw-deflate compressed; 3: 2 + alpha; 4: 2 + stereo through a mono codec;
# 5: 4 + "coder": prior mode range-coded with the integer prior. Prior-mode files of 1-4 used the float prior.
# 6: 5 + media.margin: an image coded with a margin of replicated edge (``codec.core.windows.framing``).
# 7: 6 with a compact header: the metadata deflated against META_DICT, model hashes of 64 bits (HASH_CHARS).
READ_VERSIONS = (1, 2, 3, 4, 5, 6, 7)
CODER_VERSION = 5  # the first version whose prior-mode files name their coder
MARGIN_VERSION = 6  # the first version whose images may have a margin
COMPACT_VERSION = 7  # the first version with the compact header (META_DICT, 64-bit hashes)
# "prior" mode's range coders (metadata "coder", version 5): "integer-1" is the integer prior of prior.integer
# (codec.bitstream.integer_coding), exact on every machine. Versions 1-4 name none: the float prior
# (codec.bitstream.range_coding), which decodes only where torch computes its logits as the encoder's machine did.
PRIOR_CODERS = ("integer-1", "context-1")
STEREO_CODINGS = ("mid_side",)  # media.stereo: how a 2-channel original was coded by a 1-channel audio codec
_FIXED = struct.Struct("<4sHII")  # magic, version, meta_length, header_crc
_CHUNK = struct.Struct("<III")  # payload_length, token_crc, chunk_crc
CHUNK_HEAD = _CHUNK.size  # bytes before each chunk's payload (and the alpha record's)
MAX_META_BYTES = 1 << 16
MAX_TOKENS = 1 << 28  # per file: 2^27-pixel images at f = 4 with 4 levels; 9 days of 75 Hz audio at 8 levels
MAX_CHUNK_TOKENS = 1 << 16
MAX_GROUP = 256
MAX_CODEBOOK = 1 << 16  # so every symbol keeps at least one unit of the range coder's 2^20, with room to spare
MAX_IMAGE_SIDE = 1 << 16
MAX_IMAGE_PIXELS = 1 << 27  # as codec.media.image_io.MAX_PIXELS
MAX_AUDIO_FRAMES = 1 << 36
MAX_CHANNELS = 64
MAX_SAMPLE_RATE = 1 << 20
MODES = ("packed", "prior")
HASH_CHARS = 16  # model hashes are stored as the first 64 bits of their SHA-256, in hex (version 7)
LEGACY_HASH_CHARS = 32  # versions 1-6 stored the first 128 bits
# Version 7's preset dictionary for the metadata's deflate stream: the JSON of typical files with their hashes
# and counts left out, most common last (deflate codes near matches in fewer bits). It cut the metadata of a
# bundled-model audio file from 272 to 68 bytes (with the shorter hashes). Part of the format: never change it.
META_DICT = (
    b'{"format":"JPEG""OGG""MP3""WEBP""OPUS""VORBIS""PCM_24""PCM_U8""FLOAT""DOUBLE""extra":{}'
    b'{"chunk_tokens":256,"codebook_size":1024,"codec":{"hash":"","name":"image"},"coder":"integer-1","group":32,'
    b'"media":{"alpha":"lzma2","channels":3,"format":"JPEG","height":512,"margin":2,"width":512},"modality":"image",'
    b'"mode":"packed","prior":null,"residual":true,"token_shape":[6,64,64]}'
    b'{"chunk_tokens":256,"codebook_size":1024,"codec":{"hash":"","name":"image"},"coder":"context-1","group":1,'
    b'"media":{"channels":3,"format":"PNG","height":512,"margin":2,"width":512},"modality":"image","mode":"prior",'
    b'"prior":{"hash":"","name":"image/context"},"residual":true,"token_shape":[6,65,65]}'
    b'{"chunk_tokens":256,"codebook_size":1024,"codec":{"hash":"","name":"audio"},"coder":"integer-1","group":32,'
    b'"media":{"channels":1,"format":"WAV","frames":0,"orig_channels":2,"orig_frames":0,"orig_sample_rate":44100,'
    b'"sample_rate":24000,"stereo":"mid_side","subtype":"FLOAT"},"modality":"audio","mode":"packed",'
    b'"prior":{"hash":"","name":"audio/prior"},"residual":true,"token_shape":[8,0]}'
    b'{"chunk_tokens":6000,"codebook_size":1024,"codec":{"hash":"","name":"audio"},"coder":"context-1","group":1,'
    b'"media":{"channels":1,"format":"FLAC","frames":0,"orig_channels":1,"orig_frames":0,"orig_sample_rate":24000,'
    b'"sample_rate":24000,"subtype":"PCM_16"},"modality":"audio","mode":"prior",'
    b'"prior":{"hash":"","name":"audio/context"},"residual":true,"token_shape":[8,0]}'
)


def hash_chars(version: int) -> int:
    """Hex digits of the model hashes a file of ``version`` records."""
    return HASH_CHARS if version >= COMPACT_VERSION else LEGACY_HASH_CHARS


@dataclass
class Metadata:
    """What a ``.vqc`` file says about its content (the JSON part of the header).

    Attributes:
        modality: "image" or "audio".
        codec: {"name": how the codec was named when encoding, "hash": the first HASH_CHARS hex digits of its
            ``codec.model_hash`` (LEGACY_HASH_CHARS in versions 1-6)}.
        prior: the same for the prior in "prior" mode; None in "packed" mode.
        mode: "packed" or "prior".
        token_shape: one item's tokens: [h, w], [n_q, h, w] (images) or [n_q, t] (audio).
        residual: whether token_shape has a level axis first.
        codebook_size: K; tokens lie in [0, K).
        chunk_tokens: tokens per chunk (the last may be shorter), in raster order with the level innermost.
        group: chunks range-decoded together ("prior" mode; the float coder of versions 1-4 needs it to reproduce
            its logits; the integer coder's do not depend on it).
        coder: the range coder of a "prior" file of version 5 (one of PRIOR_CODERS); None in "packed" mode and in
            the float-coded "prior" files of versions 1-4.
        media: the original: images {"channels" (colour: 1 or 3), "height", "width", "format", and "alpha" (the
            alpha plane's coding, ``ALPHA_CODINGS``) when it has one, "margin" (pixels, version 6) when the image
            was coded inside a margin of replicated edge, centred in its grid (``codec.core.windows.framing``)};
            audio {"channels",
            "sample_rate" (the codec's), "frames" (at the codec's rate), "orig_sample_rate", "orig_frames",
            "orig_channels", "format", "subtype", and "stereo" (``STEREO_CODINGS``) when a 2-channel original was
            coded as mid and side by a 1-channel codec}. "format" / "subtype" may be null (a tensor was encoded).
    """

    modality: str
    codec: dict
    mode: str
    token_shape: list[int]
    residual: bool
    codebook_size: int
    chunk_tokens: int
    media: dict
    prior: dict | None = None
    group: int = 1
    extra: dict = field(default_factory=dict)
    coder: str | None = None

    @property
    def num_tokens(self) -> int:
        return math.prod(self.token_shape)

    @property
    def has_alpha(self) -> bool:
        return self.modality == "image" and "alpha" in self.media

    @property
    def margin(self) -> int:
        """An image's margin of replicated edge (``codec.core.windows.framing``); 0 without one and for audio."""
        return self.media.get("margin", 0) if self.modality == "image" else 0

    @property
    def has_stereo(self) -> bool:
        """Stereo coded as two mono signals (mid, side) whose token grids follow each other along time."""
        return self.modality == "audio" and "stereo" in self.media

    @property
    def num_chunks(self) -> int:
        return -(-self.num_tokens // self.chunk_tokens)

    def chunk_range(self, i: int) -> tuple[int, int]:
        """Flat positions [start, stop) of chunk i."""
        start = i * self.chunk_tokens
        return start, min(self.num_tokens, start + self.chunk_tokens)

    def groups(self) -> Iterator[list[tuple[int, int, int]]]:
        """The chunks, ``group`` at a time, as lists of (index, start, stop): the coder's unit of work."""
        for first in range(0, self.num_chunks, self.group):
            yield [(i, *self.chunk_range(i)) for i in range(first, min(self.num_chunks, first + self.group))]

    def max_payload(self, n: int) -> int:
        return packed_size(n, bits_per_token(self.codebook_size)) if self.mode == "packed" else max_prior_payload(n)


def max_prior_payload(n: int) -> int:
    """An upper bound on a range-coded chunk of n tokens: a token costs at most the coder's 24-bit precision (its
    least probable symbol), plus rounding and the final words."""
    return 4 * (-(-n * 25 // 32) + 4)


# ------------------------------------------------------------------------------------------ validation
def _int(d: dict, key: str, lo: int, hi: int, where: str) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise CorruptFileError(f"{where}{key} = {v!r} is not an integer in [{lo}, {hi}]")
    return v


def _is_text(v) -> bool:
    """A str that is text: encodable as UTF-8 (JSON's \\ud800 escapes can make lone surrogates, which are not)."""
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _model_ref(v, what: str, chars: int) -> dict:
    ok = isinstance(v, dict) and _is_text(v.get("name")) and isinstance(v.get("hash"), str)
    ok = ok and len(v["hash"]) == chars and all(c in "0123456789abcdef" for c in v["hash"])
    if not ok or len(v["name"]) > 4096 or set(v) != {"name", "hash"}:
        raise CorruptFileError(f"metadata field {what} is not a {{name, hash}} model reference")
    return {"name": v["name"], "hash": v["hash"]}


def _opt_str(media: dict, key: str) -> None:
    v = media.get(key)
    if v is not None and (not _is_text(v) or len(v) > 64):
        raise CorruptFileError(f"metadata field media.{key} = {v!r} is not a short string or null")


def validate(d, version: int = FORMAT_VERSION) -> Metadata:
    """Check parsed JSON metadata (of a file of format ``version``) against the format's bounds.

    Raises:
        CorruptFileError: a missing or unknown field, a wrong type, or a value out of bounds.
    """
    if not isinstance(d, dict):
        raise CorruptFileError("metadata is not a JSON object")
    known = {"modality", "codec", "prior", "mode", "token_shape", "residual", "codebook_size", "chunk_tokens"}
    known |= {"media", "group", "extra"} | ({"coder"} if version >= CODER_VERSION else set())
    if set(d) - known:
        raise CorruptFileError(f"unknown metadata fields {sorted(set(d) - known)}")
    modality, mode = d.get("modality"), d.get("mode")
    if modality not in ("image", "audio"):
        raise CorruptFileError(f"metadata modality {modality!r} is not 'image' or 'audio'")
    if mode not in MODES:
        raise CorruptFileError(f"metadata mode {mode!r} is not one of {MODES}")
    chars = hash_chars(version)
    codec_ref = _model_ref(d.get("codec"), "codec", chars)
    prior_ref = _model_ref(d.get("prior"), "prior", chars) if mode == "prior" else None
    if mode == "packed" and d.get("prior") is not None:
        raise CorruptFileError("a packed file names a prior")
    residual = d.get("residual")
    if type(residual) is not bool or (modality == "audio" and not residual):
        raise CorruptFileError(f"metadata residual = {residual!r} is not valid for {modality}")
    shape = d.get("token_shape")
    ndim = 2 if modality == "audio" else 2 + int(residual)
    if not isinstance(shape, list) or len(shape) != ndim or any(type(s) is not int or s < 1 for s in shape):
        raise CorruptFileError(f"metadata token_shape {shape!r} is not {ndim} positive integers")
    if residual and shape[0] > 64:
        raise CorruptFileError(f"metadata token_shape has {shape[0]} levels (at most 64)")
    if math.prod(shape) > MAX_TOKENS:
        raise CorruptFileError(f"metadata token_shape {shape} holds more than {MAX_TOKENS} tokens")
    extra = d.get("extra", {})
    if not isinstance(extra, dict):
        raise CorruptFileError("metadata extra is not an object")
    meta = Metadata(
        modality=modality,
        codec=codec_ref,
        prior=prior_ref,
        mode=mode,
        token_shape=shape,
        residual=residual,
        codebook_size=_int(d, "codebook_size", 2, MAX_CODEBOOK, "metadata "),
        chunk_tokens=_int(d, "chunk_tokens", 1, MAX_CHUNK_TOKENS, "metadata "),
        group=_int(d, "group", 1, MAX_GROUP, "metadata "),
        media=_validate_media(d.get("media"), modality),
        extra=extra,
        coder=_validate_coder(d.get("coder"), mode, version),
    )
    return meta


def _validate_coder(coder, mode: str, version: int) -> str | None:
    if version < CODER_VERSION or mode == "packed":
        if coder is not None:
            raise CorruptFileError(f"metadata names a coder {coder!r} in a {mode} file")
        return None
    if coder not in PRIOR_CODERS:
        raise CorruptFileError(
            f"this file's range coder {coder!r} is not one this vqcodec decodes ({', '.join(PRIOR_CODERS)}): "
            "a newer vqcodec wrote it, or the file is damaged"
        )
    return coder


def _validate_media(media, modality: str) -> dict:
    if not isinstance(media, dict):
        raise CorruptFileError("metadata media is not an object")
    w = "metadata media."
    if modality == "image":
        allowed = {"channels", "height", "width", "format"} | ({"alpha", "margin"} & set(media))
        _int(media, "channels", 1, 3, w)
        h, wd = _int(media, "height", 1, MAX_IMAGE_SIDE, w), _int(media, "width", 1, MAX_IMAGE_SIDE, w)
        if h * wd > MAX_IMAGE_PIXELS:
            raise CorruptFileError(f"metadata image size {h}x{wd} exceeds {MAX_IMAGE_PIXELS} pixels")
        _opt_str(media, "format")
        if "alpha" in media and media["alpha"] not in ALPHA_CODINGS:
            raise CorruptFileError(f"metadata media.alpha = {media['alpha']!r} is not one of {ALPHA_CODINGS}")
        if "margin" in media:
            _int(media, "margin", 1, MAX_MARGIN, w)
    else:
        allowed = {"channels", "sample_rate", "frames", "orig_sample_rate", "orig_frames", "orig_channels"}
        allowed |= {"format", "subtype"}
        for key in ("channels", "orig_channels"):
            _int(media, key, 1, MAX_CHANNELS, w)
        for key in ("sample_rate", "orig_sample_rate"):
            _int(media, key, 1, MAX_SAMPLE_RATE, w)
        for key in ("frames", "orig_frames"):
            _int(media, key, 1, MAX_AUDIO_FRAMES, w)
        _opt_str(media, "format")
        _opt_str(media, "subtype")
        # the output is the coded signal resampled to the original's rate: its length follows from the coded frames
        # (a header may not claim more, or a 2 KB file could ask for gigabytes of samples)
        longest = -(-media["frames"] * media["orig_sample_rate"] // media["sample_rate"]) + 2
        if media["orig_frames"] > longest:
            raise CorruptFileError(
                f"metadata media.orig_frames = {media['orig_frames']} exceeds the {longest} samples that "
                f"{media['frames']} coded samples give at {media['orig_sample_rate']} Hz"
            )
        if "stereo" in media:
            allowed.add("stereo")
            if media["stereo"] not in STEREO_CODINGS or media["channels"] != 1 or media["orig_channels"] != 2:
                raise CorruptFileError(
                    f"metadata media.stereo = {media['stereo']!r} needs one of {STEREO_CODINGS}, "
                    "a 1-channel codec and a 2-channel original"
                )
    if set(media) != allowed:
        raise CorruptFileError(f"metadata media fields {sorted(media)} are not {sorted(allowed)}")
    return dict(media)


# ------------------------------------------------------------------------------------------ writing
def token_crc(tokens: np.ndarray) -> int:
    """CRC-32 of tokens as little-endian u32."""
    return zlib.crc32(np.ascontiguousarray(tokens, dtype="<u4").tobytes())


def metadata_bytes(meta: Metadata) -> bytes:
    d = asdict(meta)
    for key in ("extra", "coder"):
        if not d[key]:
            del d[key]
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


def _zdict(version: int) -> dict:
    return {"zdict": META_DICT} if version >= COMPACT_VERSION else {}


def deflate(data: bytes, version: int = FORMAT_VERSION) -> bytes:
    """Raw deflate (no zlib header or checksum: the header CRC covers the stored bytes), level 9; from version 7
    against the preset dictionary META_DICT."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, **_zdict(version))
    return c.compress(data) + c.flush()


def inflate_metadata(body: bytes, version: int = FORMAT_VERSION) -> bytes:
    """The JSON bytes of a version-2 to 7 header's metadata, never more than MAX_META_BYTES (no inflation bomb)."""
    d = zlib.decompressobj(-15, **_zdict(version))
    try:
        out = d.decompress(body, MAX_META_BYTES + 1)
    except zlib.error as e:
        raise CorruptFileError(f"metadata is not valid deflate data ({e})") from None
    if len(out) > MAX_META_BYTES:
        raise CorruptFileError(f"metadata inflates to more than {MAX_META_BYTES} bytes")
    if not d.eof or d.unused_data:
        raise CorruptFileError("metadata deflate stream is truncated or followed by stray bytes")
    return out


def file_version(meta: Metadata) -> int:
    """The version a file is written in, which its hashes tell: 7 (the compact header) for the 64-bit hashes that
    every file gets now. 128-bit hashes: the file as vqcodec wrote it before version 7 (tests write such files), in
    the oldest version that holds it (6 for an image with a margin; 5 for a prior-mode file naming its coder; else
    3 for alpha, 4 for coded stereo, else 2)."""
    if len(meta.codec["hash"]) == HASH_CHARS:
        return COMPACT_VERSION
    if meta.margin:
        return MARGIN_VERSION
    return CODER_VERSION if meta.coder is not None else 4 if meta.has_stereo else 3 if meta.has_alpha else 2


def header_bytes(meta: Metadata, version: int | None = None) -> bytes:
    """Fixed header + metadata of a file; ``version`` None: ``file_version`` (1 only to write test files for the
    version-1 reader)."""
    version = file_version(meta) if version is None else version
    body = metadata_bytes(meta)
    if len(body) > MAX_META_BYTES:
        raise ValueError(f"metadata of {len(body)} bytes exceeds {MAX_META_BYTES}")
    if len(meta.codec["hash"]) != hash_chars(version):
        raise ValueError(f"a version-{version} file records hashes of {hash_chars(version)} hex digits")
    if version in (2, 3, 4, 5, 6, 7):
        body = deflate(body, version)
    elif version != 1:
        raise ValueError(f"cannot write .vqc version {version}")
    if meta.has_alpha and version < 3:
        raise ValueError("an alpha plane needs .vqc version 3")
    if meta.has_stereo and version < 4:
        raise ValueError("coded stereo needs .vqc version 4")
    if meta.margin and version < MARGIN_VERSION:
        raise ValueError(f"an image with a margin needs .vqc version {MARGIN_VERSION}")
    if (meta.coder is not None) != (version >= CODER_VERSION and meta.mode == "prior"):
        raise ValueError(f"a version-{version} {meta.mode} file cannot have coder {meta.coder!r}")
    fixed = struct.pack("<4sHI", MAGIC, version, len(body))
    return fixed + struct.pack("<I", zlib.crc32(fixed + body)) + body


def record_bytes(payload: bytes, content_crc: int) -> bytes:
    """A chunk or the alpha record: payload_length, the CRC of what the payload decodes to, the record's CRC."""
    head = struct.pack("<II", len(payload), content_crc)
    return head + struct.pack("<I", zlib.crc32(head + payload)) + payload


def chunk_bytes(payload: bytes, tokens: np.ndarray) -> bytes:
    return record_bytes(payload, token_crc(tokens))


def alpha_bytes(payload: bytes, plane: np.ndarray) -> bytes:
    """The alpha record of a (H, W) uint8 plane coded as ``payload``."""
    return record_bytes(payload, zlib.crc32(np.ascontiguousarray(plane, dtype=np.uint8).tobytes()))


# ------------------------------------------------------------------------------------------ reading
def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CorruptFileError(f"file is truncated: {what} needs {n} bytes, {len(data)} left")
    return data


def read_header(f: BinaryIO) -> Metadata:
    """Read and check the fixed header and the metadata; leaves ``f`` at the first chunk."""
    fixed = f.read(_FIXED.size)
    if len(fixed) < 4 or fixed[:4] != MAGIC:
        raise CorruptFileError("not a .vqc file (bad magic bytes)")
    if len(fixed) < _FIXED.size:
        raise CorruptFileError("file is truncated inside its header")
    _, version, length, crc = _FIXED.unpack(fixed)
    if version not in READ_VERSIONS:
        readable = ", ".join(map(str, READ_VERSIONS))
        raise CorruptFileError(f".vqc format version {version} is not supported (this vqcodec reads {readable})")
    if not 2 <= length <= MAX_META_BYTES:
        raise CorruptFileError(f"metadata length {length} is outside [2, {MAX_META_BYTES}]")
    body = _read_exact(f, length, "the metadata")
    if zlib.crc32(fixed[:10] + body) != crc:
        raise CorruptFileError("header checksum mismatch (the header is damaged)")
    if version >= 2:
        body = inflate_metadata(body, version)
    try:
        d = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CorruptFileError(f"metadata is not valid JSON ({e})") from None
    meta = validate(d, version)
    if meta.has_alpha and version < 3:
        raise CorruptFileError(f"metadata media.alpha in a version {version} file (alpha needs version 3 or later)")
    if meta.has_stereo and version < 4:
        raise CorruptFileError(f"metadata media.stereo in a version {version} file (it needs version 4 or later)")
    if meta.margin and version < MARGIN_VERSION:
        raise CorruptFileError(f"metadata media.margin in a version {version} file (it needs version 6)")
    return meta


def open_source(source) -> tuple[BinaryIO, bool]:
    """(binary file, whether to close it) for bytes, a path or an open binary file.

    Raises:
        CorruptFileError: a path that is missing, empty or not a regular file.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), True
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(check_readable_file(source), "rb"), True
        except MediaError as e:
            raise CorruptFileError(str(e)) from None
    if hasattr(source, "read"):
        return source, False
    raise TypeError(f"expected bytes, a path or a binary file, got {type(source).__name__}")


def read_info(source) -> Metadata:
    """The metadata of a ``.vqc`` file (bytes, path or binary file), header checked; chunks not read."""
    f, close = open_source(source)
    try:
        return read_header(f)
    finally:
        if close:
            f.close()


def _read_record(f: BinaryIO, bound: int, exact: bool, what: str, holds: str) -> tuple[bytes, int]:
    """(payload, content CRC) of a chunk or the alpha record, its length checked against ``bound`` (equal to it
    when ``exact``) before it is read, then its CRC."""
    head = _read_exact(f, _CHUNK.size, f"{what} header")
    length, content_crc, crc = _CHUNK.unpack(head)
    if length > bound or (exact and length != bound):
        raise CorruptFileError(f"{what} claims {length} bytes; {holds} allow at most {bound}")
    payload = _read_exact(f, length, what)
    if zlib.crc32(head[:8] + payload) != crc:
        raise CorruptFileError(f"{what} checksum mismatch (the data is damaged)")
    return payload, content_crc


def read_alpha(f: BinaryIO, meta: Metadata) -> tuple[bytes, int] | None:
    """(payload, CRC of the raw plane) of the alpha record, which follows the header; None without alpha."""
    if not meta.has_alpha:
        return None
    n = meta.media["height"] * meta.media["width"]
    return _read_record(f, max_alpha_payload(n), False, "the alpha record", f"{n} pixels")


def alpha_record_size(f: BinaryIO, meta: Metadata) -> int:
    """Bytes of the alpha record (0 without alpha), from its length field; ``f`` stands just after the header and
    is left there."""
    if not meta.has_alpha:
        return 0
    pos = f.tell()
    head = _read_exact(f, _CHUNK.size, "the alpha record header")
    f.seek(pos)
    return _CHUNK.size + _CHUNK.unpack(head)[0]


def iter_chunks(f: BinaryIO, meta: Metadata) -> Iterator[tuple[bytes, int]]:
    """Yield (payload, token_crc) of every chunk, each checked against its CRC and bounds; then check the end.
    ``f`` stands at the first chunk (after the alpha record, if any)."""
    for i in range(meta.num_chunks):
        start, stop = meta.chunk_range(i)
        bound = meta.max_payload(stop - start)
        yield _read_record(f, bound, meta.mode == "packed", f"chunk {i}", f"{stop - start} tokens")
    if f.read(1):
        raise CorruptFileError("unexpected data after the last chunk")
