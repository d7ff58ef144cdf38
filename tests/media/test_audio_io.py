"""Audio files: round trips, resampling, streaming, portions, broken files, and atomic media writers.

Every file is generated in tmp_path; the whole module runs in a few seconds.
"""

import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from codec.errors import MediaError
from codec.media import audio_io
from codec.media.audio_io import AUDIO_EXTENSIONS, is_audio_file, iter_audio_blocks, read_audio, resample, write_audio
from codec.media.image_io import write_image


def _uint8_image(c: int, h: int = 17, w: int = 23) -> torch.Tensor:
    """(C, H, W) random values that are exact multiples of 1/255 (odd sizes on purpose)."""
    return torch.randint(0, 256, (c, h, w)).float() / 255


def _no_temp_files(directory) -> bool:
    return not [p for p in os.listdir(directory) if p.endswith(".tmp")]


# ---------------------------------------------------------------- audio

SR = 44100


def _sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


def _stereo(seconds: float = 0.5, sr: int = SR) -> torch.Tensor:
    """(2, T): two different tones plus a little noise, so the channels cannot be confused."""
    noise = 0.05 * (torch.rand(2, int(seconds * sr)) - 0.5)
    return torch.stack([_sine(440, seconds, sr), _sine(660, seconds, sr, 0.3)]) + noise


@pytest.mark.parametrize(
    ("ext", "subtype", "atol"),
    [
        (".wav", None, 1 / 32768),  # PCM_16: write scales by 32767, read by 1/32768
        (".wav", "FLOAT", 0.0),
        (".wav", "PCM_24", 1 / 2**23),
        (".flac", None, 1 / 32768),
        (".flac", "PCM_24", 1 / 2**23),
        (".aiff", None, 1 / 32768),
        (".aiff", "PCM_24", 1 / 2**23),
    ],
)
def test_lossless_audio_roundtrip(tmp_path, ext, subtype, atol):
    x = _stereo()
    path = tmp_path / f"a{ext}"
    write_audio(path, x, SR, subtype=subtype)
    data = read_audio(path)
    assert data.samples.dtype == torch.float32 and data.samples.shape == x.shape
    assert (data.sample_rate, data.orig_sample_rate, data.channels, data.frames) == (SR, SR, 2, x.shape[1])
    assert data.format == ext[1:].upper() and data.subtype == (subtype or "PCM_16")
    assert (data.samples - x).abs().max().item() <= atol + 1e-7


@pytest.mark.parametrize("ext", sorted({".ogg", ".opus", ".mp3"} & AUDIO_EXTENSIONS))
def test_lossy_audio_roundtrip(tmp_path, ext):
    sr = 48000
    x = torch.stack([_sine(440, 0.5, sr), _sine(660, 0.5, sr, 0.3)])
    path = tmp_path / f"a{ext}"
    write_audio(path, x, sr)
    data = read_audio(path)
    assert data.channels == 2 and data.sample_rate == sr
    assert abs(data.frames - x.shape[1]) <= 0.01 * x.shape[1]
    n = min(data.frames, x.shape[1])
    for c in range(2):
        corr = np.corrcoef(data.samples[c, :n].numpy(), x[c, :n].numpy())[0, 1]
        assert corr > 0.98, (ext, c, corr)


@pytest.mark.skipif(".opus" not in AUDIO_EXTENSIONS, reason="libsndfile here has no Opus")
def test_opus_at_other_rates_is_written_at_48k(tmp_path):
    write_audio(tmp_path / "a.opus", _sine(440, 0.5, SR), SR)
    data = read_audio(tmp_path / "a.opus")
    assert data.sample_rate == 48000 and data.channels == 1
    assert abs(data.frames - round(0.5 * 48000)) <= 1


def test_rate_and_channels_restored_on_decode(tmp_path):
    x = _stereo(0.5)
    write_audio(tmp_path / "in.flac", x, SR)
    data = read_audio(tmp_path / "in.flac", sample_rate=24000)  # what the model sees
    assert data.samples.shape == (2, 12000) and data.sample_rate == 24000
    assert (data.orig_sample_rate, data.channels, data.frames) == (SR, 2, x.shape[1])
    restored = resample(data.samples, data.sample_rate, data.orig_sample_rate)
    write_audio(tmp_path / "out.wav", restored, data.orig_sample_rate)
    out = read_audio(tmp_path / "out.wav")
    assert (out.sample_rate, out.channels, out.frames) == (SR, 2, x.shape[1])


def test_resample_keeps_a_440hz_sine():
    x = _sine(440, 1.0, SR).unsqueeze(0)
    down = resample(x, SR, 24000)
    assert down.shape == (1, 24000) and down.dtype == torch.float32
    spectrum = torch.fft.rfft(down[0]).abs()
    assert spectrum.argmax().item() == 440  # 1 s at 24 kHz: bin k is k Hz
    up = resample(down, 24000, SR)
    assert up.shape == x.shape
    inner = slice(1000, -1000)  # the filter's edge transients
    err = (up[0, inner] - x[0, inner]).pow(2).mean()
    snr_db = 10 * torch.log10(x[0, inner].pow(2).mean() / err).item()
    assert snr_db > 60, snr_db


def test_resample_shapes_and_identity():
    x = torch.randn(3, 1001)
    assert resample(x, 16000, 16000) is x
    assert resample(x[0], 16000, 8000).shape == (501,)  # 500.5 rounded half up
    assert resample(x, 22050, 44100).shape == (3, 2002)
    with pytest.raises(ValueError):
        resample(x, 0, 16000)


@pytest.mark.parametrize("sample_rate", [None, 24000, 16000, 48000])
@pytest.mark.parametrize("block_frames", [1000, 4096])
def test_streamed_blocks_equal_one_shot_read(tmp_path, sample_rate, block_frames):
    write_audio(tmp_path / "a.wav", _stereo(0.7), SR, subtype="FLOAT")
    whole = read_audio(tmp_path / "a.wav", sample_rate=sample_rate).samples
    blocks = list(iter_audio_blocks(tmp_path / "a.wav", block_frames, sample_rate=sample_rate))
    assert all(b.dtype == torch.float32 and b.shape[0] == 2 and b.shape[1] > 0 for b in blocks)
    streamed = torch.cat(blocks, dim=1)
    assert streamed.shape == whole.shape
    # Measured: 0.0 (python-soxr's one-shot call runs the same filter as its stream). The bound leaves
    # room for float32 rounding differences between soxr builds, far below 16-bit resolution (3e-5).
    assert (streamed - whole).abs().max().item() <= 1e-6


def test_read_a_portion(tmp_path):
    x = _stereo(0.5)
    write_audio(tmp_path / "a.flac", x, SR)
    full = read_audio(tmp_path / "a.flac").samples
    part = read_audio(tmp_path / "a.flac", start=5000, frames=3000)
    assert part.frames == x.shape[1] and torch.equal(part.samples, full[:, 5000:8000])
    tail = read_audio(tmp_path / "a.flac", start=20000, frames=10**9)
    assert torch.equal(tail.samples, full[:, 20000:])
    with pytest.raises(ValueError, match="start"):
        read_audio(tmp_path / "a.flac", start=x.shape[1] + 1)


def test_write_audio_mono_clips_and_rejects_bad_input(tmp_path):
    write_audio(tmp_path / "m.wav", torch.tensor([2.0, -2.0, 0.5, float("nan")]), 8000, subtype="FLOAT")
    data = read_audio(tmp_path / "m.wav")
    assert data.channels == 1 and data.samples.tolist() == [[1.0, -1.0, 0.5, 0.0]]
    with pytest.raises(MediaError, match="a.xyz"):
        write_audio(tmp_path / "a.xyz", torch.zeros(1, 10), 8000)
    with pytest.raises(MediaError, match="FLAC with subtype FLOAT"):
        write_audio(tmp_path / "a.flac", torch.zeros(1, 10), 8000, subtype="FLOAT")
    with pytest.raises(ValueError, match="non-empty"):
        write_audio(tmp_path / "a.wav", torch.zeros(1, 0), 8000)
    assert sorted(os.listdir(tmp_path)) == ["m.wav"]


def _broken_audio(tmp_path):
    x = _stereo(0.5)
    write_audio(tmp_path / "full.flac", x, SR)
    flac = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    write_audio(tmp_path / "full.wav", x, SR)
    wav = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(wav[: len(wav) // 2])
    sf.write(tmp_path / "zero_frames.wav", np.zeros((0, 1), np.float32), 16000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "random.wav").write_bytes(np.random.default_rng(2).bytes(4096))
    (tmp_path / "a_directory.flac").mkdir()
    return {
        "truncated.flac": "truncated",
        "truncated.wav": "truncated",
        "zero_frames.wav": "no audio frames",
        "empty.wav": "empty",
        "random.wav": "not a readable audio file",
        "a_directory.flac": "directory",
        "missing.wav": "no such file",
    }


def test_broken_audio_raises_media_error_naming_the_file(tmp_path):
    for name, reason in _broken_audio(tmp_path).items():
        for read in (read_audio, lambda p: list(iter_audio_blocks(p, 4096, sample_rate=24000))):
            with pytest.raises(MediaError) as info:
                read(tmp_path / name)
            message = str(info.value)
            assert name in message and reason in message, message


def test_audio_extensions():
    assert {".wav", ".flac", ".ogg"} <= AUDIO_EXTENSIONS
    assert (".mp3" in AUDIO_EXTENSIONS) == ("MP3" in sf.available_formats())
    assert is_audio_file("x/Y.FLAC") and is_audio_file("z.aif") and not is_audio_file("x.png")
    assert (".aiff" in AUDIO_EXTENSIONS) == ("AIFF" in sf.available_formats())


def test_media_writers_fail_atomically(tmp_path, monkeypatch):
    image_path, audio_path = tmp_path / "img.png", tmp_path / "snd.wav"
    write_image(image_path, _uint8_image(3))
    write_audio(audio_path, _stereo(0.1), SR)
    old_image, old_audio = image_path.read_bytes(), audio_path.read_bytes()

    def half_then_fail(*args, **kwargs):
        fp = next(a for a in args if hasattr(a, "write"))
        fp.write(b"\x89PNG half written")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Image.Image, "save", lambda self, fp, **kw: half_then_fail(fp))
    with pytest.raises(OSError, match="simulated"):
        write_image(image_path, _uint8_image(3))
    monkeypatch.setattr(audio_io.sf, "write", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        write_audio(audio_path, _stereo(0.1), SR)
    assert image_path.read_bytes() == old_image and audio_path.read_bytes() == old_audio
    assert _no_temp_files(tmp_path)
