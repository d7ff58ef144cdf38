"""vqcodec: VQ-VAE neural codecs for images and audio.

>>> import codec
>>> model = codec.load("runs/image")          # a run directory (config.json + model.safetensors)
>>> tokens = model.encode(x)                  # image (B, C, H, W) in [0, 1] -> (B, h, w) int64
>>> x_hat = model.decode(tokens, shape=x.shape[1:])
"""

from pathlib import Path

from codec.checkpoint import load_model, model_hash, save_model
from codec.compress import Decompressed, compress, decompress, read_info
from codec.config import AudioCodecConfig, ImageCodecConfig, QuantizerConfig
from codec.errors import CheckpointError, CorruptFileError, MediaError, ModelMismatchError, VQCodecError
from codec.model import Codec

BUNDLED_DIR = Path(__file__).parent / "models"  # bundled models: BUNDLED_DIR/NAME (config, weights, prior/)


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())


def model_dir(name_or_path) -> Path:
    """The run directory of a codec given as a directory or a bundled model name.

    Raises:
        CheckpointError: neither an existing directory nor a bundled name.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if isinstance(name_or_path, str) and name_or_path in bundled_models():
        return BUNDLED_DIR / name_or_path
    names = ", ".join(bundled_models()) or "none installed"
    raise CheckpointError(f"{name_or_path}: not a codec directory, nor a bundled model name (bundled: {names})")


def load(name_or_path, device=None) -> Codec:
    """Load a codec from a run directory or a bundled model name ("image", "audio"). See ``load_model``.

    The model remembers where it came from (``model.name``, ``model.source``), so that ``compress`` can record it
    in files and find the prior stored beside it (``RUN_DIR/prior``).
    """
    path = model_dir(name_or_path)
    model = load_model(path, device=device)
    model.name = str(path.resolve()) if Path(name_or_path).is_dir() else str(name_or_path)
    model.source = str(path)
    return model


__all__ = [
    "AudioCodecConfig",
    "CheckpointError",
    "Codec",
    "Decompressed",
    "CorruptFileError",
    "ImageCodecConfig",
    "MediaError",
    "ModelMismatchError",
    "QuantizerConfig",
    "VQCodecError",
    "bundled_models",
    "compress",
    "decompress",
    "load",
    "load_model",
    "model_hash",
    "read_info",
    "save_model",
]
