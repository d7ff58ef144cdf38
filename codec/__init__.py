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


def portable_name(path) -> str:
    """How a ``.vqc`` file records a model directory: a bundled model as its name ("image", "image/prior"), so
    files made with bundled models do not carry (or depend on) where the package is installed; any other
    directory as its absolute path."""
    p = Path(path).resolve()
    for name in _bundled_names():
        if p == (BUNDLED_DIR / name).resolve():
            return name
    return str(p)


def _bundled_names() -> set[str]:
    """The names ``model_dir`` resolves inside the package: each bundled codec and the prior shipped with it."""
    names = set(bundled_models())
    return names | {f"{m}/prior" for m in names if (BUNDLED_DIR / m / "prior" / "config.json").is_file()}


def model_dir(name_or_path) -> Path:
    """The run directory of a model given as a directory or a bundled name: "image", "audio", or the prior
    shipped with one ("image/prior").

    Raises:
        CheckpointError: neither an existing directory nor a bundled name.
    """
    path = Path(name_or_path)
    if (path / "config.json").is_file():
        return path
    # a bundled name wins over a directory of that name that holds no model (say ./image/ of photos)
    if isinstance(name_or_path, str) and name_or_path in _bundled_names():
        return BUNDLED_DIR / name_or_path
    if path.is_dir():
        return path  # the loader says what is missing
    names = ", ".join(sorted(_bundled_names())) or "none installed"
    raise CheckpointError(f"{name_or_path}: not a model directory, nor a bundled model name (bundled: {names})")


def load(name_or_path, device=None) -> Codec:
    """Load a codec from a run directory or a bundled model name ("image", "audio"). See ``load_model``.

    The model remembers where it came from (``model.name``, ``model.source``), so that ``compress`` can record it
    in files and find the prior stored beside it (``RUN_DIR/prior``).
    """
    path = model_dir(name_or_path)
    model = load_model(path, device=device)
    model.name = portable_name(path)
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
    "portable_name",
    "compress",
    "decompress",
    "load",
    "load_model",
    "model_hash",
    "read_info",
    "save_model",
]
