"""vqcodec: VQ-VAE neural codecs for images and audio.

>>> import codec
>>> model = codec.load("image")               # a bundled model, or a run directory (config.json + model.safetensors)
>>> tokens = model.encode(x)                  # image (B, C, H, W) in [0, 1] -> (B, n_q, h, w) int64
>>> x_hat = model.decode(tokens, shape=x.shape[1:])
>>> data = codec.compress("photo.png")        # .vqc bytes; codec.decompress(data) is the way back

The public API is gathered here and imported on first use, so that ``import codec`` (and ``codec --help``) does
not load torch. The packages below are layers, each importing only those under it (checked by ``lint-imports``;
see docs/architecture.md): ``cli`` > ``eval`` > ``bitstream`` > ``prior`` > ``train`` > ``core`` | ``media`` >
``store`` > ``errors`` > ``kernels``.
"""

import importlib

from codec.errors import (
    CheckpointError,
    CorruptFileError,
    DeviceError,
    MediaError,
    ModelMismatchError,
    VQCodecError,
    WorkerError,
)

_LAZY = {
    "AudioCodecConfig": "codec.core.config",
    "ImageCodecConfig": "codec.core.config",
    "QuantizerConfig": "codec.core.config",
    "Codec": "codec.core.model",
    "load": "codec.core.checkpoint",
    "load_model": "codec.core.checkpoint",
    "save_model": "codec.core.checkpoint",
    "model_hash": "codec.store.rundir",
    "BUNDLED_DIR": "codec.store.registry",
    "bundled_models": "codec.store.registry",
    "model_dir": "codec.store.registry",
    "portable_name": "codec.store.registry",
    "compress": "codec.bitstream.compress",
    "decompress": "codec.bitstream.decompress",
    "Decompressed": "codec.bitstream.decompress",
    "read_info": "codec.bitstream.container",
}


def __getattr__(name: str):
    """The public names above, imported when first used (PEP 562); then cached in the module."""
    if name not in _LAZY:
        raise AttributeError(f"module 'codec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [  # noqa: F822 (the lazy names are resolved by __getattr__)
    "AudioCodecConfig",
    "BUNDLED_DIR",
    "CheckpointError",
    "Codec",
    "CorruptFileError",
    "Decompressed",
    "DeviceError",
    "ImageCodecConfig",
    "MediaError",
    "ModelMismatchError",
    "QuantizerConfig",
    "VQCodecError",
    "WorkerError",
    "bundled_models",
    "compress",
    "decompress",
    "load",
    "load_model",
    "model_dir",
    "model_hash",
    "portable_name",
    "read_info",
    "save_model",
]
