"""Image files: round trips, conversions (grayscale, 16-bit, alpha, palette, EXIF), size limits, broken files.

Every file is generated in tmp_path; the whole module runs in a few seconds.
"""

import math
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from codec.errors import MediaError, VQCodecError
from codec.media import image_io
from codec.media.image_io import IMAGE_EXTENSIONS, is_image_file, read_image, write_image


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
        write_image(tmp_path / "a.png", torch.zeros(5, 4, 4))
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
def test_alpha_is_kept_apart_from_the_colour(tmp_path, mode, channels):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (9, 11, len(mode)), dtype=np.uint8)
    path = tmp_path / f"alpha_{mode}.png"
    Image.fromarray(array, mode).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = read_image(path)
    assert data.had_alpha and data.pixels.shape == (channels, 9, 11)
    expected = torch.from_numpy(array[..., :channels]).permute(2, 0, 1).float() / 255
    assert torch.equal(data.pixels, expected)  # colour kept as stored, not composited
    assert torch.equal(data.alpha, torch.from_numpy(array[..., -1]).float()[None] / 255)


@pytest.mark.parametrize("ext", [".png", ".webp", ".tif"])
@pytest.mark.parametrize("channels", [2, 4])
def test_alpha_is_written_back_exactly(tmp_path, ext, channels):
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (channels, 9, 11))).float() / 255
    write_image(tmp_path / f"a{ext}", x)
    data = read_image(tmp_path / f"a{ext}")
    assert torch.equal(data.alpha, x[-1:])  # lossless even in lossy WebP
    assert data.pixels.shape[0] == (1 if channels == 2 and ext != ".webp" else 3)  # WebP has no grayscale


@pytest.mark.parametrize("ext", [".jpg", ".bmp", ".gif"])
def test_alpha_is_dropped_with_a_warning_where_the_format_has_none(tmp_path, ext):
    with pytest.warns(UserWarning, match=f"a{ext}: .* has no alpha channel"):
        write_image(tmp_path / f"a{ext}", torch.rand(4, 9, 11))
    assert read_image(tmp_path / f"a{ext}").alpha is None


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
    data = read_image(tmp_path / "p_transparent.png")
    assert data.had_alpha and torch.equal(data.pixels, expected)
    assert torch.equal(data.alpha[0], (torch.arange(24) % 4 != 0).float().view(4, 6))  # index 0 transparent


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
    with pytest.warns(UserWarning, match="pages.tif: 2 frames; only the first is read"):
        data = read_image(tmp_path / "pages.tif")
    assert data.pixels.shape == (1, 3, 5) and torch.all(data.pixels == 10 / 255)


def test_gif_reads_its_palette_first_frame_and_transparency(tmp_path):
    """A GIF's pixels are its palette's colours (hand-made palette), an animation gives its first frame, the
    transparent index becomes alpha; a written GIF of at most 256 colours reads back exactly."""
    palette = [255, 165, 0, 0, 0, 128, 10, 200, 30, 255, 255, 255]
    index = np.arange(35).reshape(5, 7) % 4
    frames = []
    for k in range(3):
        img = Image.fromarray(((index + k) % 4).astype(np.uint8), "P")
        img.putpalette(palette)
        frames.append(img)
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="anim.gif: 3 frames; only the first is read"):
        data = read_image(tmp_path / "anim.gif")
    colours = torch.tensor(palette, dtype=torch.float32).view(4, 3) / 255
    expected = colours[torch.from_numpy(index)].permute(2, 0, 1)
    assert data.format == "GIF" and data.pixels.shape == (3, 5, 7) and not data.had_alpha
    assert torch.equal(data.pixels, expected)

    frames[0].save(tmp_path / "transparent.gif", transparency=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one frame: no warning
        data = read_image(tmp_path / "transparent.gif")
    assert torch.equal(data.pixels, expected)
    assert torch.equal(data.alpha[0], torch.from_numpy(index != 1).float())

    write_image(tmp_path / "back.gif", expected)  # 4 colours: the adaptive palette holds them exactly
    assert torch.equal(read_image(tmp_path / "back.gif").pixels, expected)
    noise = torch.rand(3, 40, 40)  # 1,600 colours: quantized to a palette, close on average
    write_image(tmp_path / "noise.gif", noise)
    assert (read_image(tmp_path / "noise.gif").pixels - noise).abs().mean() < 0.1


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
    cut("truncated.gif", "GIF")
    Image.new("RGB", (4, 4)).save(tmp_path / "pnm.png", "PPM")  # a format we do not read, named .png
    return {
        "empty.png": "empty",
        "random.png": "not a PNG",
        "text.jpg": "not a PNG",
        "a_directory.png": "directory",
        "truncated.png": "truncated",
        "truncated.jpg": "truncated",
        "missing.png": "no such file",
        "truncated.gif": "truncated",
        "pnm.png": "not a PNG",
    }


def test_broken_images_raise_media_error_naming_the_file(tmp_path):
    for name, reason in _broken_images(tmp_path).items():
        with pytest.raises(MediaError) as info:
            read_image(tmp_path / name)
        message = str(info.value)
        assert name in message and reason in message, message
        assert isinstance(info.value, ValueError) and isinstance(info.value, VQCodecError)


def test_image_extensions():
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"} == IMAGE_EXTENSIONS
    assert (
        is_image_file("a/B.JPG") and is_image_file("x.tiff") and is_image_file("y.GIF") and not is_image_file("x.wav")
    )
