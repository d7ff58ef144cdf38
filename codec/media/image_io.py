"""Read and write images with Pillow: PNG, JPEG, WebP, BMP, TIFF and GIF.

A decoded image is a (C, H, W) float32 tensor in [0, 1], with C = 1 (grayscale) or C = 3 (RGB):

- EXIF orientation is applied, so the pixels are laid out as a viewer shows them.
- Alpha (RGBA, LA, or a palette or colour-key transparency) is kept apart, in `ImageData.alpha` (1, H, W) at
  8 bits; the colour values are kept as stored, not composited onto a background (compositing would invent
  colours the file does not hold). The codec models colour; `compress` stores alpha losslessly beside it.
- Grayscale stays one channel (LA too); palette, CMYK, YCbCr and the rest become RGB.
- 16-bit grayscale keeps its precision (`bit_depth` 16); Pillow itself decodes 16-bit RGB as 8-bit.
- Multi-frame files (TIFF pages, animated WebP and GIF): the first frame, with a warning that names the count.
- Images over `MAX_PIXELS` pixels are refused before they are decoded (decompression bombs).

Writes are 8 bits per channel and atomic (`codec.store.files.atomic_write`). Two or four channels are written
as LA or RGBA (alpha last) to PNG, WebP and TIFF; JPEG and BMP hold no alpha, which is then dropped with a
warning. WebP has no grayscale: a one-channel image written as WebP reads back as three equal channels (LA as
RGBA). GIF holds at most 256 colours: an image with more is written with an adaptive palette (Pillow's; lossy, as GIF
is), and reads back as RGB; a GIF's transparent colour reads as alpha, but alpha is not written to GIF (dropped with
a warning: GIF transparency is one bit).
"""

import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from codec.errors import MediaError
from codec.store.files import atomic_write, check_readable_file

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MAX_PIXELS = 2**27  # 134 M pixels (e.g. 11585 x 11585): above any camera, below Pillow's own bomb error
DEFAULT_QUALITY = 95  # JPEG and WebP, when write_image gets no quality

_FORMATS = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "bmp": "BMP",
    "tif": "TIFF",
    "tiff": "TIFF",
    "gif": "GIF",
}
_READ_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
_MAX_SIDE = {"JPEG": 65535, "WEBP": 16383, "GIF": 65535}
_ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")  # those that can store an alpha channel
# What Pillow's decoders raise on broken input (truncated data shows up as OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error, zlib.error)


@dataclass
class ImageData:
    """A decoded image.

    Attributes:
        pixels: (C, H, W) float32 in [0, 1]; C = 1 (grayscale) or 3 (RGB); EXIF orientation applied.
        format: Pillow's name of the file format: "PNG", "JPEG", "WEBP", "BMP", "TIFF" or "GIF".
        alpha: (1, H, W) float32, k / 255 for 8-bit alpha k, when the file has an alpha channel or transparency;
            None otherwise. Not part of ``pixels``.
        bit_depth: 8, or 16 for sources with more than 8 bits per sample (16/32-bit integer, float).
    """

    pixels: torch.Tensor
    format: str
    alpha: torch.Tensor | None
    bit_depth: int

    @property
    def had_alpha(self) -> bool:
        return self.alpha is not None


def is_image_file(path: str | os.PathLike) -> bool:
    """True if `path` has one of the `IMAGE_EXTENSIONS` (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | os.PathLike) -> ImageData:
    """Decode an image file (see the module docstring for what is kept and what is converted).

    Integer samples are scaled by their full range (255 or 65535); Pillow's 32-bit integer mode "I" is
    taken as 16-bit data (how Pillow holds 16-bit files) and clamped to [0, 65535]; float mode "F" is taken
    as already in [0, 1] and clamped.

    Args:
        path: the image file.

    Returns:
        ImageData with pixels (C, H, W) float32 in [0, 1].

    Raises:
        MediaError: missing, empty, a directory, not one of the six formats, truncated or corrupt, or
            larger than MAX_PIXELS. The message names the file and the reason.
    """
    path = check_readable_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is checked below
            img = Image.open(path, formats=_READ_FORMATS)
    except UnidentifiedImageError:
        raise MediaError(path, "not a PNG, JPEG, WebP, BMP, TIFF or GIF image") from None
    except Image.DecompressionBombError as e:
        raise MediaError(path, f"too many pixels ({e})") from e
    except _DECODE_ERRORS as e:
        raise MediaError(path, f"cannot read image ({e})") from e
    with img:
        fmt, (width, height) = img.format, img.size
        if width * height > MAX_PIXELS:
            raise MediaError(path, f"{width}x{height} image has more than MAX_PIXELS={MAX_PIXELS} pixels")
        try:
            img.load()  # decode now, inside the try: truncated data raises here
            frames = getattr(img, "n_frames", 1)  # GIF counts by seeking: a broken later frame raises here too
            img = ImageOps.exif_transpose(img)
            array, bit_depth = _to_array(img)
            alpha = _alpha(img)
        except _DECODE_ERRORS as e:
            raise MediaError(path, f"truncated or corrupt image data ({e})") from e
    if frames > 1:
        warnings.warn(f"{path}: {frames} frames; only the first is read", stacklevel=2)
    pixels = torch.from_numpy(array)
    pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels
    return ImageData(pixels=pixels, format=fmt, alpha=alpha, bit_depth=bit_depth)


def write_image(
    path: str | os.PathLike,
    pixels: torch.Tensor,
    *,
    format: str | None = None,
    quality: int | None = None,
) -> None:
    """Encode an image, 8 bits per channel, atomically (a failed write leaves `path` as it was).

    Args:
        path: the destination; its extension picks the format unless `format` is given.
        pixels: (C, H, W) with C in {1, 3} (grayscale, RGB) or {2, 4} (the same with alpha last), or (H, W);
            float in [0, 1]. Values are clamped, NaN becomes 0, then rounded to uint8.
        format: "png", "jpg"/"jpeg", "webp", "bmp", "tif"/"tiff" or "gif" (any case, leading dot allowed).
        quality: JPEG/WebP quality, 1 to 100 (default DEFAULT_QUALITY); ignored by the lossless formats.

    Raises:
        MediaError: unknown or missing format, or an image too large for the format.
        ValueError: pixels of the wrong shape, or a quality outside 1..100.
    """
    fmt = _output_format(path, format)
    x = torch.as_tensor(pixels).detach().to("cpu", torch.float32)
    if x.ndim == 3 and x.shape[0] in (2, 4) and fmt not in _ALPHA_FORMATS:
        warnings.warn(f"{path}: {fmt} has no alpha channel; alpha dropped", stacklevel=2)
        x = x[:-1]
    if x.ndim == 3 and x.shape[0] in (1, 2, 3, 4):
        x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)  # (H, W) or (H, W, C)
    elif x.ndim != 2:
        raise ValueError(f"pixels must be (C, H, W) with C in 1..4, or (H, W); got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"pixels must not be empty; got {tuple(x.shape)}")
    if fmt in _MAX_SIDE and max(x.shape[:2]) > _MAX_SIDE[fmt]:
        raise MediaError(path, f"{fmt} images are at most {_MAX_SIDE[fmt]} pixels on a side; got {tuple(x.shape)}")
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    array = torch.empty(x.shape, dtype=torch.uint8)
    for r in range(0, x.shape[0], 256):  # rows at a time: a big image is not copied whole as floats
        array[r : r + 256] = x[r : r + 256].nan_to_num(0.0).clamp_(0, 1).mul_(255).round_()
    array = array.numpy()
    options = {"quality": quality or DEFAULT_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    with atomic_write(path) as f:
        Image.fromarray(array).save(f, format=fmt, **options)  # L, LA, RGB or RGBA from the array's shape


def _output_format(path: str | os.PathLike, format: str | None) -> str:
    """Pillow's format name for an explicit `format`, else for the extension of `path`."""
    name = format if format is not None else Path(path).suffix
    fmt = _FORMATS.get(name.lower().lstrip("."))
    if fmt is None:
        what = f"image format {name!r}" if name else "no file extension to choose an image format by"
        raise MediaError(path, f"{what}; use png, jpg, webp, bmp, tiff or gif (or pass format=)")
    return fmt


def _to_array(img: Image.Image) -> tuple[np.ndarray, int]:
    """(H, W) or (3, H, W) float32 in [0, 1], and the source's bits per sample (8 or 16)."""
    if img.mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32) / 65535, 16
    if img.mode == "I":
        return np.clip(np.asarray(img, dtype=np.float32) / 65535, 0, 1), 16
    if img.mode == "F":
        return np.clip(np.nan_to_num(np.asarray(img, dtype=np.float32)), 0, 1), 16
    if img.mode in ("1", "L", "LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255, 8
    mode = "RGBA" if img.has_transparency_data else "RGB"  # RGBA first: palette transparency
    rgb = img if img.mode == mode else img.convert(mode)  # convert copies even an image already in the mode
    chw = np.ascontiguousarray(np.asarray(rgb)[..., :3].transpose(2, 0, 1), dtype=np.float32)  # one float copy
    chw /= 255  # in place: a big image is held as float32 once, not three times
    return chw, 8


def _alpha(img: Image.Image) -> torch.Tensor | None:
    """(1, H, W) float32 alpha at 8 bits, or None: an alpha band, or transparency (palette, colour key) made one."""
    if not img.has_transparency_data:
        return None
    if "A" not in img.getbands():
        img = img.convert("LA" if img.mode in ("1", "L") or img.mode.startswith("I") else "RGBA")
    a = np.asarray(img.getchannel("A"), dtype=np.uint8)
    return torch.from_numpy(a.astype(np.float32) / 255)[None]
