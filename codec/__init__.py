"""vqcodec: VQ-VAE neural codecs for images and audio.

>>> import codec
>>> model = codec.load("runs/image")          # a run directory (config.json + model.safetensors)
>>> tokens = model.encode(x)                  # image (B, C, H, W) in [0, 1] -> (B, h, w) int64
>>> x_hat = model.decode(tokens, shape=x.shape[1:])
"""

from codec.checkpoint import load_model, model_hash, save_model
from codec.config import AudioCodecConfig, ImageCodecConfig, QuantizerConfig
from codec.errors import CheckpointError, CorruptFileError, MediaError, ModelMismatchError, VQCodecError
from codec.model import Codec


def load(name_or_path, device=None) -> Codec:
    """Load a codec from a run directory (bundled model names come later). See ``load_model``."""
    return load_model(name_or_path, device=device)


__all__ = [
    "AudioCodecConfig",
    "CheckpointError",
    "Codec",
    "CorruptFileError",
    "ImageCodecConfig",
    "MediaError",
    "ModelMismatchError",
    "QuantizerConfig",
    "VQCodecError",
    "load",
    "load_model",
    "model_hash",
    "save_model",
]
