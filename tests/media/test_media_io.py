"""Media I/O: image and audio round trips, conversions, broken files, streaming, atomic writes.

Every file is generated in tmp_path; the whole module runs in a few seconds.
"""

import math
import os
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from codec.errors import MediaError, VQCodecError
from codec.media import audio_io, image_io
from codec.media.audio_io import AUDIO_EXTENSIONS, is_audio_file, iter_audio_blocks, read_audio, resample, write_audio
from codec.media.image_io import IMAGE_EXTENSIONS, is_image_file, read_image, write_image
from codec.store.files import atomic_write, atomic_write_bytes, atomic_write_text


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a - b).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def _smooth_image(c: int, h: int = 48, w: int = 64) -> torch.Tensor:
    """(C, H, W) in [0, 1], low-frequency content that lossy codecs keep well."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    chans = [0.5 + 0.4 * torch.sin(3 * x + 2 * y + k) for k in range(c)]
    return torch.stack(chans)


def _uint8_image(c: int, h: int = 17, w: int = 23) -> torch.Tensor:
    """(C, H, W) random values that are exact multiples of 1/255 (odd sizes on purpose)."""
    return torch.randint(0, 256, (c, h, w)).float() / 255


def _no_temp_files(directory) -> bool:
    return not [p for p in os.listdir(directory) if p.endswith(".tmp")]


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_lossless_image_roundtrip_is_exact(tmp_path, ext, channels):
    pixels = _uint8_image(channels)
    path = tmp_path / f"img{ext}"
    write_image(path, pixels)
    data = read_image(path)
    assert data.pixels.dtype == torch.float32 and data.pixels.shape == pixels.shape
    assert torch.equal(data.pixels, pixels)
    assert data.format == {".png": "PNG", ".bmp": "BMP"}.get(ext, "TIFF")
    assert (data.had_alpha, data.bit_depth) == (False, 8)


@pytest.mark.parametrize(("ext", "fmt"), [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
@pytest.mark.parametrize("channels", [1, 3])
def test_lossy_image_roundtrip_is_close(tmp_path, ext, fmt, channels):
    pixels = _smooth_image(channels)
    path = tmp_path / f"img{ext}"
    write_image(path, pixels)  # default quality 95
    data = read_image(path)
    if fmt == "WEBP" and channels == 1:  # WebP stores RGB only
        assert data.pixels.shape == (3, *pixels.shape[1:])
        assert (data.pixels - data.pixels.mean(0)).abs().max() <= 1 / 255
        pixels = pixels.expand(3, -1, -1)
    assert data.format == fmt and data.pixels.shape == pixels.shape
    assert _psnr(data.pixels, pixels) > 35


def test_write_image_accepts_hw_clamps_and_explicit_format(tmp_path):
    pixels = torch.tensor([[-1.0, 0.0, 0.5], [1.0, 2.0, float("nan")]])
    path = tmp_path / "no_suffix"
    write_image(path, pixels, format="PNG")
    data = read_image(path)
    expected = torch.tensor([[[0, 0, 128], [255, 255, 0]]]) / 255
    assert data.format == "PNG" and torch.equal(data.pixels, expected)


def test_write_image_errors(tmp_path):
    with pytest.raises(MediaError, match="unknown.xyz"):
        write_image(tmp_path / "unknown.xyz", torch.zeros(3, 4, 4))
    with pytest.raises(MediaError, match="no file extension"):
        write_image(tmp_path / "noext", torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="C in"):
        write_image(tmp_path / "a.png", torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="quality"):
        write_image(tmp_path / "a.jpg", torch.zeros(3, 4, 4), quality=0)
    assert not os.listdir(tmp_path)


def test_grayscale_modes(tmp_path):
    gray = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    data = read_image(tmp_path / "l.png")
    assert data.pixels.shape == (1, 16, 16) and data.bit_depth == 8
    assert torch.equal(data.pixels[0], torch.from_numpy(gray).float() / 255)

    Image.fromarray(gray > 127).save(tmp_path / "bilevel.png")  # mode "1"
    assert set(read_image(tmp_path / "bilevel.png").pixels.unique().tolist()) == {0.0, 1.0}

    floats = np.linspace(-0.5, 1.5, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(floats, "F").save(tmp_path / "f.tif")
    data = read_image(tmp_path / "f.tif")
    assert data.bit_depth == 16 and torch.equal(data.pixels[0], torch.from_numpy(floats).clamp(0, 1))


def test_16bit_png_keeps_precision(tmp_path):
    values = np.random.default_rng(0).permutation(np.linspace(0, 65535, 32 * 24).round()).astype(np.uint16)
    values = values.reshape(24, 32)  # 0 .. 65535, most values not multiples of 257 (no 8-bit shortcut)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I")
    data = read_image(tmp_path / "g16.png")
    assert data.bit_depth == 16 and data.pixels.shape == (1, 24, 32)
    torch.testing.assert_close(data.pixels[0], torch.from_numpy(values.astype(np.float32) / 65535), rtol=0, atol=1e-7)
    assert data.pixels.max() == 1.0 and data.pixels.min() == 0.0


@pytest.mark.parametrize(("mode", "channels"), [("RGBA", 3), ("LA", 1)])
def test_alpha_is_dropped_with_one_warning(tmp_path, mode, channels):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (9, 11, len(mode)), dtype=np.uint8)
    path = tmp_path / f"alpha_{mode}.png"
    Image.fromarray(array, mode).save(path)
    with pytest.warns(UserWarning, match=f"{path.name}.*alpha") as record:
        data = read_image(path)
    assert len(record) == 1
    assert data.had_alpha and data.pixels.shape == (channels, 9, 11)
    expected = torch.from_numpy(array[..., :channels]).permute(2, 0, 1).float() / 255
    assert torch.equal(data.pixels, expected)  # colour kept as stored, not composited


def test_palette_image_becomes_rgb(tmp_path):
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]
    img = Image.new("P", (6, 4))
    img.putpalette(palette)
    img.putdata([i % 4 for i in range(24)])
    img.save(tmp_path / "p.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no transparency: no warning
        data = read_image(tmp_path / "p.png")
    assert data.pixels.shape == (3, 4, 6) and not data.had_alpha
    colours = torch.tensor(palette, dtype=torch.float32).view(4, 3) / 255
    expected = colours[torch.arange(24) % 4].view(4, 6, 3).permute(2, 0, 1)
    assert torch.equal(data.pixels, expected)

    img.save(tmp_path / "p_transparent.png", transparency=0)
    with pytest.warns(UserWarning, match="p_transparent.png"):
        data = read_image(tmp_path / "p_transparent.png")
    assert data.had_alpha and torch.equal(data.pixels, expected)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_exif_orientation_is_applied(tmp_path, ext):
    # Stored 64 wide x 32 high: left half red, right half blue. Orientation 6 = "rotate 90 degrees clockwise
    # to display", so the displayed image is 32 wide x 64 high with red on top.
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32, 0] = 255
    stored[:, 32:, 2] = 255
    img = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"rotated{ext}"
    img.save(path, exif=exif, quality=95)
    data = read_image(path)
    assert data.pixels.shape == (3, 64, 32)
    top, bottom = data.pixels[:, 4:28].mean(dim=(1, 2)), data.pixels[:, 36:60].mean(dim=(1, 2))
    assert top[0] > 0.9 and top[2] < 0.1, top
    assert bottom[2] > 0.9 and bottom[0] < 0.1, bottom


def test_multi_frame_tiff_reads_the_first_page(tmp_path):
    first, second = Image.new("L", (5, 3), 10), Image.new("L", (5, 3), 200)
    first.save(tmp_path / "pages.tif", save_all=True, append_images=[second])
    data = read_image(tmp_path / "pages.tif")
    assert data.pixels.shape == (1, 3, 5) and torch.all(data.pixels == 10 / 255)


def test_image_size_limits(tmp_path, monkeypatch):
    write_image(tmp_path / "a.png", torch.zeros(3, 16, 16))
    monkeypatch.setattr(image_io, "MAX_PIXELS", 255)
    with pytest.raises(MediaError, match="a.png.*MAX_PIXELS"):
        read_image(tmp_path / "a.png")
    monkeypatch.setattr(image_io, "MAX_PIXELS", 2**27)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own bomb error, at 2x this
    with pytest.raises(MediaError, match="a.png.*too many pixels"):
        read_image(tmp_path / "a.png")


def _broken_images(tmp_path):
    def cut(name, fmt):
        full = tmp_path / f"full_{name}"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, fmt)
        data = full.read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])

    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "random.png").write_bytes(np.random.default_rng(1).bytes(4096))
    (tmp_path / "text.jpg").write_text("not an image\n")
    (tmp_path / "a_directory.png").mkdir()
    cut("truncated.png", "PNG")
    cut("truncated.jpg", "JPEG")
    Image.new("RGB", (4, 4)).save(tmp_path / "anim.gif")
    return {
        "empty.png": "empty",
        "random.png": "not a PNG",
        "text.jpg": "not a PNG",
        "a_directory.png": "directory",
        "truncated.png": "truncated",
        "truncated.jpg": "truncated",
        "missing.png": "no such file",
        "anim.gif": "not a PNG",
    }


def test_broken_images_raise_media_error_naming_the_file(tmp_path):
    for name, reason in _broken_images(tmp_path).items():
        with pytest.raises(MediaError) as info:
            read_image(tmp_path / name)
        message = str(info.value)
        assert name in message and reason in message, message
        assert isinstance(info.value, ValueError) and isinstance(info.value, VQCodecError)


def test_image_extensions():
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"} == IMAGE_EXTENSIONS
    assert is_image_file("a/B.JPG") and is_image_file("x.tiff") and not is_image_file("x.wav")


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
    assert is_audio_file("x/Y.FLAC") and not is_audio_file("x.png")


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_old_content_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="midway"), atomic_write(path) as f:
        f.write(b"new partial data")
        raise RuntimeError("midway")
    assert path.read_bytes() == b"old" and _no_temp_files(tmp_path)

    atomic_write_bytes(path, b"new")
    atomic_write_text(tmp_path / "t.txt", "h\u00e9")
    assert path.read_bytes() == b"new" and (tmp_path / "t.txt").read_text("utf-8") == "h\u00e9"
    assert sorted(os.listdir(tmp_path)) == ["out.bin", "t.txt"]


def test_atomic_write_keeps_permissions_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "script.sh"
    path.write_text("old")
    path.chmod(0o750)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o750


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
