"""Codec configurations. Defaults are the values that work; a run directory stores them as config.json."""

import math
from dataclasses import asdict, dataclass, field, fields, replace


@dataclass
class QuantizerConfig:
    """Codebook settings shared by both modalities (see codec.core.quantizer.VectorQuantizer)."""

    codebook_size: int = 1024
    num_quantizers: int = 1  # > 1: residual VQ, one model serves 1..num_quantizers stages
    quantizer_dropout: float = 0.0  # residual VQ only: fraction of items trained with fewer stages
    decay: float = 0.99
    dead_code_threshold: float = 2.0
    commitment_weight: float = 0.25
    kmeans_init: bool = True


@dataclass
class ImageCodecConfig:
    """Convolutional VQ-VAE for images: (B, C, H, W) in [0, 1] -> (B, H/f, W/f) tokens."""

    modality: str = "image"
    channels: int = 3  # model channels: 3 accepts RGB and grayscale (replicated), 1 grayscale only
    downsample: int = 8  # f: 4, 8 or 16
    base_channels: int = 64  # width at full resolution, doubled at each level up to max_channels
    max_channels: int = 256
    num_res_blocks: int = 1  # per level
    latent_dim: int = 64  # code vector size
    norm_groups: int = 8
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    tile: int = 64  # tokens per tile side when encoding/decoding large images (512 px at f = 8)
    tile_overlap: int = 6  # tokens of context on each side of a tile (covers the receptive field)

    def __post_init__(self):
        if self.downsample not in (4, 8, 16):
            raise ValueError(f"downsample must be 4, 8 or 16, got {self.downsample}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    @property
    def levels(self) -> int:
        return int(math.log2(self.downsample))


@dataclass
class AudioCodecConfig:
    """SEANet-like 1-D VQ-VAE for audio: (B, C, T) in [-1, 1] -> (B, n_q, T/hop) tokens."""

    modality: str = "audio"
    channels: int = 1  # 1 (mono) or 2 (stereo)
    sample_rate: int = 24000
    ratios: tuple[int, ...] = (2, 4, 5, 8)  # encoder strides; hop = product = 320 (75 frames/s at 24 kHz)
    base_channels: int = 16  # doubled at each level; 16 runs >2x EnCodec's speed on CPU (tools/bench_codec.py)
    dilations: tuple[int, ...] = (1, 3, 9)  # residual units per level
    latent_dim: int = 128
    # 75 frames/s: a batch of 16 one-second segments gives ~1.2 vectors per code per step, so the dead-code
    # threshold must sit well below that (see codec.train.codec_task.check_dead_code_threshold)
    quantizer: QuantizerConfig = field(
        default_factory=lambda: QuantizerConfig(num_quantizers=8, quantizer_dropout=1.0, dead_code_threshold=0.2)
    )
    chunk_frames: int = 750  # frames per chunk for long signals (10 s at 75 frames/s)
    chunk_context: int = 8  # frames of context on each side of a chunk (covers the receptive field)

    def __post_init__(self):
        self.ratios = tuple(self.ratios)
        self.dilations = tuple(self.dilations)
        if self.channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {self.channels}")
        if self.sample_rate <= 0 or any(r < 1 for r in self.ratios):
            raise ValueError("sample_rate and ratios must be positive")

    @property
    def hop(self) -> int:
        return math.prod(self.ratios)


CodecConfig = ImageCodecConfig | AudioCodecConfig


def config_to_dict(config: CodecConfig) -> dict:
    return asdict(config)


def config_from_dict(data: dict) -> CodecConfig:
    """Build a config from its dict form. Missing keys (also inside "quantizer") keep the modality's defaults;
    unknown keys are an error (a config from another version)."""
    data = dict(data)
    modality = data.get("modality")
    cls = {"image": ImageCodecConfig, "audio": AudioCodecConfig}.get(modality)
    if cls is None:
        raise ValueError(f"config has unknown modality {modality!r} (expected 'image' or 'audio')")
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {modality} config keys: {sorted(unknown)}")
    if "quantizer" in data:
        q = dict(data["quantizer"])
        unknown = set(q) - {f.name for f in fields(QuantizerConfig)}
        if unknown:
            raise ValueError(f"unknown quantizer config keys: {sorted(unknown)}")
        data["quantizer"] = replace(cls().quantizer, **q)
    return cls(**data)
