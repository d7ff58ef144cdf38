"""Small synthetic media for the training and data tests: images with gradients, shapes and noise; WAVs of
sines, chirps and noise; and broken files (empty, random bytes, truncated)."""

from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw


def make_image(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0, mode: str = "RGB") -> Path:
    """A gradient with an ellipse, a rectangle and mild noise; size is (width, height)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6)
    arr = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 4 + phase)], axis=-1)
    arr = np.clip(arr + rng.normal(0, 0.02, arr.shape), 0, 1)
    img = Image.fromarray((arr * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    x0, y0 = (int(v) for v in rng.integers(0, max(1, min(w, h) // 2), 2))
    draw.ellipse([x0, y0, x0 + w // 3, y0 + h // 3], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw.rectangle([w // 2, h // 2, w - 2, h - 2], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert(mode).save(path)
    return path


def make_wav(
    path: Path, seconds: float = 0.5, sample_rate: int = 8000, channels: int = 1, seed: int = 0, kind: str = "mix"
) -> Path:
    """A sine ("sine"), a linear chirp ("chirp"), or a sine + chirp + a little noise ("mix"), 16-bit PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 200 + 150 * seed
    sine = np.sin(2 * np.pi * f0 * t)
    chirp = np.sin(2 * np.pi * (100 * t + 0.5 * 2000 * t**2))
    x = {"sine": 0.5 * sine, "chirp": 0.5 * chirp}.get(kind, 0.3 * sine + 0.3 * chirp + 0.02 * rng.normal(size=t.shape))
    data = np.stack([x * (0.8 + 0.2 * c) for c in range(channels)], axis=-1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sample_rate, subtype="PCM_16")
    return path


def make_broken(folder: Path, ext: str, good: Path) -> list[Path]:
    """An empty file, random bytes and a truncated copy of ``good``, all named with ``ext``."""
    folder.mkdir(parents=True, exist_ok=True)
    empty, noise, cut = folder / f"empty{ext}", folder / f"noise{ext}", folder / f"truncated{ext}"
    empty.write_bytes(b"")
    noise.write_bytes(np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return [empty, noise, cut]
