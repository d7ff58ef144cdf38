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
    # > 0: entropy-constrained code choice, argmin ||z - e||^2 + rate_weight * code length in bits (see
    # codec.core.quantizer.VectorQuantizer): fewer bits after entropy coding for a little more distortion
    rate_weight: float = 0.0


@dataclass
class ImageCodecConfig:
    """Convolutional VQ-VAE for images: (B, C, H, W) in [0, 1] -> (B, H/f, W/f) tokens."""

    modality: str = "image"
    channels: int = 3  # model channels: 3 accepts RGB and grayscale (replicated), 1 grayscale only
    downsample: int = 8  # f: 4, 8 or 16
    # "conv": convolutions from full resolution down (codec.core.image_net.ImageEncoder);
    # "shuffle": a pixel-unshuffle stem by ``stem`` and a pixel-shuffle head, so no convolution runs at full
    # resolution (codec.core.image_net.ShuffleEncoder), the cheaper design per CPU-hour
    arch: str = "conv"
    stem: int = 4  # "shuffle" only: space-to-depth factor of the stem (a power of 2 dividing downsample)
    # "shuffle" only: how convolutions pad at the image's edges; "replicate" repeats the edge pixels' features,
    # so the outermost rows and columns are coded about as well as the interior ("zeros" doubled their error)
    padding: str = "zeros"
    base_channels: int = 64  # width at the first level, doubled at each level up to max_channels
    max_channels: int = 256
    num_res_blocks: int = 1  # per level
    # "shuffle" only: residual blocks of each decoder stage, from the token grid to the finest (levels + 1 stages;
    # one number for every stage), () = num_res_blocks everywhere. A decoder-only field (DECODER_FIELDS): a fine-tune
    # with a frozen encoder may grow it (new blocks start as the identity), keeping the start model's tokens
    decoder_res_blocks: tuple[int, ...] = ()
    latent_dim: int = 64  # code vector size
    norm_groups: int = 8  # 0: no normalisation ("shuffle" only)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    tile: int = 64  # tokens per tile side when encoding/decoding large images (512 px at f = 8)
    tile_overlap: int = 6  # tokens of context on each side of a tile (covers the receptive field)

    def __post_init__(self):
        if self.downsample not in (4, 8, 16):
            raise ValueError(f"downsample must be 4, 8 or 16, got {self.downsample}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.arch not in ("conv", "shuffle"):
            raise ValueError(f"image arch must be 'conv' or 'shuffle', got {self.arch!r}")
        if self.arch == "shuffle" and (self.stem not in (1, 2, 4, 8, 16) or self.downsample % self.stem):
            raise ValueError(f"stem must be a power of 2 dividing downsample {self.downsample}, got {self.stem}")
        if self.padding not in ("zeros", "replicate") or (self.arch == "conv" and self.padding != "zeros"):
            raise ValueError(f"padding must be 'zeros' or, for the 'shuffle' arch, 'replicate'; got {self.padding!r}")
        if self.arch == "conv" and self.norm_groups < 1:
            raise ValueError("the 'conv' image arch needs norm_groups >= 1")
        if isinstance(self.decoder_res_blocks, int):
            n = self.decoder_res_blocks
            self.decoder_res_blocks = (n,) * (self.levels + 1) if n else ()
        self.decoder_res_blocks = tuple(self.decoder_res_blocks)
        blocks = self.decoder_res_blocks
        if blocks and (self.arch != "shuffle" or len(blocks) != self.levels + 1 or min(blocks) < self.num_res_blocks):
            raise ValueError(
                f"decoder_res_blocks must be empty (num_res_blocks everywhere), or with arch 'shuffle' one count per "
                f"decoder stage ({self.levels + 1}), each at least num_res_blocks ({self.num_res_blocks}): {blocks}"
            )

    def identity(self) -> dict:
        """What ``model_hash`` hashes of this config (see ``identity_dict``)."""
        return identity_dict(self)

    @property
    def decoder_stage_blocks(self) -> tuple[int, ...]:
        """Residual blocks of each "shuffle" decoder stage, from the token grid (1/f) to the finest (1/stem)."""
        return self.decoder_res_blocks or (self.num_res_blocks,) * (self.levels + 1)

    @property
    def encoder_extra_context(self) -> int:
        """The image encoder does not grow: no tile context beyond ``tile_overlap``."""
        return 0

    @property
    def decoder_extra_context(self) -> int:
        """Tokens of tile context a grown decoder needs beyond ``tile_overlap``: each further block's two 3x3
        convolutions reach 2 positions further at its stage, which is 2 / 2^k tokens at the k-th finer stage."""
        extra = sum(2 * (b - self.num_res_blocks) / 2**k for k, b in enumerate(self.decoder_stage_blocks))
        return math.ceil(extra)

    @property
    def levels(self) -> int:
        """Halvings done by strided convolutions: log2(f), or log2(f / stem) after a shuffle stem."""
        stem = self.stem if self.arch == "shuffle" else 1
        return int(math.log2(self.downsample // stem))


@dataclass
class AudioCodecConfig:
    """SEANet-like 1-D VQ-VAE for audio: (B, C, T) in [-1, 1] -> (B, n_q, T/hop) tokens."""

    modality: str = "audio"
    channels: int = 1  # 1 (mono) or 2 (stereo)
    sample_rate: int = 24000
    # "seanet": strided 1-D convolutions at sample rate (codec.core.audio_net); "stft": ConvNeXt blocks at frame rate
    # on the compressed complex STFT with an inverse-STFT head (codec.core.audio_stft_net), the cheaper design
    arch: str = "seanet"
    ratios: tuple[int, ...] = (2, 4, 5, 8)  # encoder strides; hop = product = 320 (75 frames/s at 24 kHz)
    base_channels: int = 16  # doubled at each level; 16 runs >2x EnCodec's speed on CPU (tools/bench_codec.py)
    dilations: tuple[int, ...] = (1, 3, 9)  # residual units per level
    n_fft: int = 1280  # "stft" only: FFT size (4 hops), even, >= hop, (n_fft - hop) even
    width: int = 256  # "stft" only: channels of the frame-rate blocks
    num_blocks: int = 6  # "stft" only: ConvNeXt blocks in the encoder and decoder unless encoder/decoder_blocks
    # "stft" only: ConvNeXt blocks in the encoder, 0 = num_blocks. A fine-tune may grow it (new blocks start as the
    # identity); the tokens then change, so it is part of the model's identity like any encoder field
    encoder_blocks: int = 0
    # "stft" only: ConvNeXt blocks in the decoder, 0 = num_blocks. A decoder-only field (DECODER_FIELDS): a fine-tune
    # with a frozen encoder may grow it (new blocks start as the identity), keeping the start model's tokens
    decoder_blocks: int = 0
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
        if self.arch not in ("seanet", "stft"):
            raise ValueError(f"audio arch must be 'seanet' or 'stft', got {self.arch!r}")
        if self.arch == "stft" and (self.n_fft < self.hop or self.n_fft % 2 or (self.n_fft - self.hop) % 2):
            raise ValueError(f"n_fft must be even, >= the hop {self.hop}, and differ from it by an even number")
        for name in ("encoder_blocks", "decoder_blocks"):
            value = getattr(self, name)
            if value < 0 or (value and self.arch != "stft"):
                raise ValueError(f"{name} must be 0 (= num_blocks), or > 0 with arch 'stft': {value}")

    def identity(self) -> dict:
        """What ``model_hash`` hashes of this config (see ``identity_dict``)."""
        return identity_dict(self)

    @property
    def hop(self) -> int:
        return math.prod(self.ratios)

    @property
    def encoder_depth(self) -> int:
        """ConvNeXt blocks in the "stft" encoder."""
        return self.encoder_blocks or self.num_blocks

    @property
    def decoder_depth(self) -> int:
        """ConvNeXt blocks in the "stft" decoder."""
        return self.decoder_blocks or self.num_blocks

    @property
    def encoder_extra_context(self) -> int:
        """Frames of chunk context a grown encoder needs beyond ``chunk_context``: 3 per further block."""
        return 3 * max(0, self.encoder_depth - self.num_blocks) if self.arch == "stft" else 0

    @property
    def decoder_extra_context(self) -> int:
        """Frames of chunk context a grown decoder needs beyond ``chunk_context``: 3 per further block (its
        depthwise convolution has 7 taps)."""
        return 3 * max(0, self.decoder_depth - self.num_blocks) if self.arch == "stft" else 0


CodecConfig = ImageCodecConfig | AudioCodecConfig

# Fields added after models were first bundled, with the values that reproduce the models made before them. A field
# holding that value is left out of a model's identity (``identity_dict``, hashed by ``model_hash``), so those
# models, the priors paired with them, and the .vqc files that record their hashes keep working.
LATER_FIELDS = {
    "image": {"arch": "conv", "stem": 4, "padding": "zeros", "decoder_res_blocks": ()},
    "audio": {"arch": "seanet", "n_fft": 1280, "width": 256, "num_blocks": 6, "decoder_blocks": 0, "encoder_blocks": 0},
}
# Quantizer fields that only steer the encoder's choice of codes (the same decoder reads the tokens the same way):
# never part of a model's identity, so a bundled model can be given one without breaking its priors' pairing.
ENCODER_CHOICE_FIELDS = {"rate_weight"}

# Config fields that shape only the decoder: a codec that differs from another only in these (and in its decoder's
# weights) gives the same tokens (``freeze_encoder`` fine-tunes; ``tools/bundle_models.py --tokens-of``).
DECODER_FIELDS = {"decoder_blocks", "decoder_res_blocks"}


def config_to_dict(config: CodecConfig) -> dict:
    return asdict(config)


def identity_dict(config: CodecConfig) -> dict:
    """The config as ``model_hash`` sees it: ``config_to_dict`` without the later fields at their old values."""
    later = LATER_FIELDS[config.modality]
    out = {k: v for k, v in config_to_dict(config).items() if k not in later or v != later[k]}
    out["quantizer"] = {k: v for k, v in out["quantizer"].items() if k not in ENCODER_CHOICE_FIELDS}
    return out


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
