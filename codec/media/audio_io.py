"""Read and write audio with soundfile (libsndfile), and resample with soxr.

Formats, by extension: .wav, .flac, .ogg (Vorbis), .opus (Opus in an Ogg container), .mp3 and .aiff / .aif,
each only where the linked libsndfile has it (`AUDIO_EXTENSIONS` is computed at import). Opus and MP3 need
libsndfile >= 1.1 built with libopus and mpg123/LAME; the libsndfile in the soundfile wheels (1.2.x) has all
six, for reading and writing. AAC (.m4a, .aac) is not among them: convert it first (ffmpeg -i a.m4a a.flac).

Decoded audio is (C, T) float32 in [-1, 1] (louder samples, from float files or resampling, are clipped),
with C the file's channel count. `AudioData` keeps the file's own rate and channel count, so the decoder
can give back a file like the one it was given: `resample(y, model_rate, data.orig_sample_rate)`, then
`write_audio(path, y, data.orig_sample_rate)`.

Missing, empty, unreadable, zero-length and truncated files raise `MediaError` naming the file. libsndfile
silently shortens a truncated WAV, so the WAV data chunk's declared size is checked against the file's.
MP3 lengths come from the file's headers and may be estimates, so an MP3 may decode up to `MP3_SLACK`
short of its stated length without counting as truncated.
"""

import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from codec.errors import MediaError
from codec.store.files import atomic_write, check_readable_file

RESAMPLE_QUALITY = "HQ"  # soxr's default: 20-bit precision, passband to 91% of Nyquist
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the only rates libsndfile writes Opus at
MP3_SLACK = 0.01  # fraction of its stated length an MP3 may decode short of

# extension or format name -> (libsndfile format, default subtype)
_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "aiff": ("AIFF", "PCM_16"),
    "aif": ("AIFF", "PCM_16"),
}
_SF_ERRORS = (sf.SoundFileError, RuntimeError)  # LibsndfileError is both


def _available(fmt: str, subtype: str) -> bool:
    return fmt in sf.available_formats() and subtype in sf.available_subtypes(fmt)


AUDIO_EXTENSIONS = frozenset(f".{name}" for name, (fmt, sub) in _FORMATS.items() if _available(fmt, sub))


@dataclass
class AudioData:
    """A decoded audio file (or a portion of one).

    Attributes:
        samples: (C, T) float32 in [-1, 1], at `sample_rate`.
        sample_rate: rate of `samples`: the one asked for, else the file's.
        orig_sample_rate: the file's rate.
        channels: the file's channel count (= C).
        format: libsndfile's container name: "WAV", "FLAC", "OGG", "MP3", ...
        subtype: libsndfile's encoding name: "PCM_16", "FLOAT", "VORBIS", "OPUS", "MPEG_LAYER_III", ...
        frames: length of the whole file in frames at `orig_sample_rate`.
    """

    samples: torch.Tensor
    sample_rate: int
    orig_sample_rate: int
    channels: int
    format: str
    subtype: str
    frames: int


def is_audio_file(path: str | os.PathLike) -> bool:
    """True if `path` has one of the `AUDIO_EXTENSIONS` (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def read_audio(
    path: str | os.PathLike,
    *,
    sample_rate: int | None = None,
    frames: int | None = None,
    start: int = 0,
) -> AudioData:
    """Decode an audio file, or `frames` frames of it from frame `start`, optionally resampled.

    Only the requested portion is decoded (libsndfile seeks to `start`).

    Args:
        path: the audio file.
        sample_rate: rate to resample to (soxr, RESAMPLE_QUALITY); None keeps the file's.
        frames: how many frames to read, at the file's rate; None reads to the end. Clamped to the end.
        start: first frame to read, at the file's rate; 0 <= start <= file length.

    Returns:
        AudioData with samples (C, T) float32 in [-1, 1] at `sample_rate` (or the file's rate).

    Raises:
        MediaError: missing, empty, not audio, no frames, truncated or corrupt; the message names the file.
        ValueError: `start`, `frames` or `sample_rate` out of range.
    """
    _check_rate(sample_rate, "sample_rate", optional=True)
    if frames is not None and frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    with _open(path) as (f, path):
        total = f.frames
        if not 0 <= start <= total:
            raise ValueError(f"start must be in [0, {total}] for {path}, got {start}")
        wanted = total - start if frames is None else min(frames, total - start)
        if start:
            _guard(path, lambda: f.seek(start))
        data = _guard(path, lambda: f.read(wanted, dtype="float32", always_2d=True))  # (T, C)
        _check_complete(f, path, wanted, len(data))
        if frames is None:
            total = start + len(data)  # an MP3's stated length may be an estimate
        rate = sample_rate or f.samplerate
        if rate != f.samplerate:
            data = _resample_np(data, f.samplerate, rate)
        np.clip(data, -1.0, 1.0, out=data)
        return AudioData(
            samples=torch.from_numpy(np.ascontiguousarray(data.T)),
            sample_rate=rate,
            orig_sample_rate=f.samplerate,
            channels=f.channels,
            format=f.format,
            subtype=f.subtype,
            frames=total,
        )


def iter_audio_blocks(
    path: str | os.PathLike,
    block_frames: int,
    *,
    sample_rate: int | None = None,
) -> Iterator[torch.Tensor]:
    """Stream a file block by block, resampling as it goes, so a long file is never in memory whole.

    Reads `block_frames` frames at a time and feeds them to a streaming soxr resampler. Concatenated along
    time, the blocks equal `read_audio(path, sample_rate=sample_rate).samples` (the same soxr filter; equal
    to float32 rounding). As a generator, it opens the file, and raises, only on the first `next`; a file
    found truncated raises MediaError after the blocks before the damage have been yielded.

    Args:
        path: the audio file.
        block_frames: frames read per step, at the file's rate (> 0). Each yielded block has about
            block_frames * sample_rate / file_rate frames (the resampler's delay shifts a few between blocks).
        sample_rate: rate to resample to; None keeps the file's.

    Yields:
        (C, n) float32 tensors in [-1, 1] at the target rate, n > 0.

    Raises:
        MediaError: as read_audio.
        ValueError: block_frames <= 0 or a bad sample_rate.
    """
    if block_frames <= 0:
        raise ValueError(f"block_frames must be > 0, got {block_frames}")
    _check_rate(sample_rate, "sample_rate", optional=True)
    with _open(path) as (f, path):
        rate = sample_rate or f.samplerate
        stream = None
        if rate != f.samplerate:
            stream = soxr.ResampleStream(f.samplerate, rate, f.channels, dtype="float32", quality=RESAMPLE_QUALITY)
        done = 0
        while True:
            block = _guard(path, lambda: f.read(block_frames, dtype="float32", always_2d=True))  # (n, C)
            done += len(block)
            last = len(block) < block_frames or done >= f.frames
            if stream is not None:
                block = stream.resample_chunk(block, last=last)
            if len(block):
                np.clip(block, -1.0, 1.0, out=block)
                yield torch.from_numpy(np.ascontiguousarray(block.T))
            if last:
                break
        _check_complete(f, path, f.frames, done)


def write_audio(
    path: str | os.PathLike,
    samples: torch.Tensor,
    sample_rate: int,
    *,
    format: str | None = None,
    subtype: str | None = None,
) -> None:
    """Encode audio atomically (a failed write leaves `path` as it was).

    Opus stores only OPUS_RATES; other rates are resampled to 48000 Hz first (what Opus decoders output).

    Args:
        path: the destination; its extension picks the format unless `format` is given.
        samples: (C, T) or (T,), float in [-1, 1], T > 0. Values are clipped, NaN becomes 0.
        sample_rate: rate of `samples` in Hz.
        format: "wav", "flac", "ogg" (Vorbis), "opus", "mp3" (any case, leading dot allowed), or any
            other libsndfile format name ("AIFF", ...).
        subtype: libsndfile subtype ("PCM_16", "PCM_24", "FLOAT", ...); default PCM_16 for WAV and FLAC,
            VORBIS, OPUS or MPEG_LAYER_III for the lossy formats.

    Raises:
        MediaError: unknown format, a format/subtype libsndfile cannot write, or libsndfile refusing the
            data (too many channels, a rate the format cannot hold).
        ValueError: samples of the wrong shape or empty, or a bad sample_rate.
    """
    _check_rate(sample_rate, "sample_rate")
    fmt, default_subtype = _output_format(path, format)
    subtype = subtype.upper() if subtype else default_subtype
    if not sf.check_format(fmt, subtype):
        raise MediaError(path, f"libsndfile here cannot write {fmt} with subtype {subtype}")
    x = torch.as_tensor(samples).detach().to("cpu", torch.float32)
    x = x.unsqueeze(0) if x.ndim == 1 else x
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"samples must be a non-empty (C, T) or (T,) tensor, got {tuple(x.shape)}")
    data = x.nan_to_num(0.0).clamp_(-1, 1).T.contiguous().numpy()  # (T, C); one float copy of a long signal
    if subtype == "OPUS" and sample_rate not in OPUS_RATES:
        data, sample_rate = np.clip(_resample_np(data, sample_rate, 48000), -1.0, 1.0), 48000
    try:
        with atomic_write(path) as f:
            sf.write(f, data, sample_rate, format=fmt, subtype=subtype)
    except _SF_ERRORS as e:
        raise MediaError(path, f"cannot write {fmt}/{subtype}: {_reason(e)}") from e


def resample(samples: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample with soxr (RESAMPLE_QUALITY), along the last axis.

    Args:
        samples: (C, T) or (T,) float tensor, on any device (soxr runs on the CPU).
        orig_sr: rate of `samples` in Hz.
        target_sr: rate wanted in Hz.

    Returns:
        float32 (C, T') or (T',) on samples' device, T' = T * target_sr / orig_sr rounded half up;
        `samples` itself (as float32) when the rates are equal.
    """
    _check_rate(orig_sr, "orig_sr")
    _check_rate(target_sr, "target_sr")
    if orig_sr == target_sr:
        return samples.to(torch.float32)
    if samples.ndim not in (1, 2):
        raise ValueError(f"samples must be (C, T) or (T,), got {tuple(samples.shape)}")
    x = samples.detach().to("cpu", torch.float32)
    y = _resample_np((x.T if x.ndim == 2 else x).contiguous().numpy(), orig_sr, target_sr)  # soxr wants (T, C)
    return torch.from_numpy(np.ascontiguousarray(y.T)).to(samples.device)


def _resample_np(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """(T, C) or (T,) float32 -> same layout at target_sr."""
    return soxr.resample(x, orig_sr, target_sr, quality=RESAMPLE_QUALITY)


@contextlib.contextmanager
def _open(path: str | os.PathLike) -> Iterator[tuple[sf.SoundFile, str]]:
    """Open for reading, with every way of failing turned into MediaError; yields (file, path as str)."""
    path = check_readable_file(path)
    try:
        f = sf.SoundFile(path)
    except _SF_ERRORS as e:
        raise MediaError(path, f"not a readable audio file ({_reason(e)})") from e
    with f:
        if f.frames <= 0:
            raise MediaError(path, "no audio frames (empty or truncated stream)")
        if f.format in ("WAV", "WAVEX"):
            _check_wav_size(path)
        yield f, path


def _guard(path: str, op):
    """Run a libsndfile read or seek; its errors become MediaError."""
    try:
        return op()
    except _SF_ERRORS as e:
        raise MediaError(path, f"truncated or corrupt audio data ({_reason(e)})") from e


def _check_complete(f: sf.SoundFile, path: str, expected: int, got: int) -> None:
    """Fewer frames decoded than the headers promise means a truncated file."""
    short = expected - got
    if short > 0 and not (f.format == "MP3" and short <= MP3_SLACK * f.frames):
        raise MediaError(path, f"truncated: headers promise {expected} frames, only {got} could be decoded")


def _check_wav_size(path: str) -> None:
    """Compare a RIFF/WAVE data chunk's declared size with the bytes present (libsndfile trusts the file)."""
    size_on_disk = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        while len(chunk := fh.read(8)) == 8:
            name, size = struct.unpack("<4sI", chunk)
            if name == b"data":
                present = size_on_disk - fh.tell()
                if size not in (0, 0xFFFFFFFF) and size > present:  # 0 / 0xFFFFFFFF: written as a stream
                    raise MediaError(path, f"truncated: WAV data chunk declares {size} bytes, {present} present")
                return
            fh.seek(size + (size & 1), os.SEEK_CUR)


def _output_format(path: str | os.PathLike, format: str | None) -> tuple[str, str]:
    """(libsndfile format, default subtype) for an explicit `format`, else for the extension of `path`."""
    name = format if format is not None else Path(path).suffix
    key = name.lower().lstrip(".")
    if key in _FORMATS and _available(*_FORMATS[key]):
        return _FORMATS[key]
    if key.upper() in sf.available_formats() and key not in _FORMATS:
        return key.upper(), sf.default_subtype(key.upper())
    what = f"audio format {name!r} is not available here" if name else "no file extension to choose a format by"
    choices = ", ".join(sorted(ext.lstrip(".") for ext in AUDIO_EXTENSIONS))
    raise MediaError(path, f"{what}; use {choices} (or pass format=)")


def _check_rate(rate: int | None, name: str, optional: bool = False) -> None:
    if rate is None and optional:
        return
    if not isinstance(rate, int | np.integer) or isinstance(rate, bool) or rate <= 0:
        raise ValueError(f"{name} must be a positive integer (Hz), got {rate!r}")


def _reason(e: Exception) -> str:
    """libsndfile's own words, without soundfile's "Error opening 'path': " prefix."""
    return (getattr(e, "error_string", None) or str(e)).strip()
