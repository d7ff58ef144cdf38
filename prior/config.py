"""Prior configuration. Defaults are sensible for CPU training; a prior's run directory stores it as config.json.

The token layout is given by ``modality``, ``residual`` and ``levels``, copied from the codec the prior is trained
on (see ``PriorConfig.for_codec``):

- image, ``residual=False``: tokens (h, w), one level;
- image, ``residual=True``: tokens (n_q, h, w), ``levels = n_q``;
- audio (always residual): tokens (n_q, t), ``levels = n_q``.
"""

from dataclasses import asdict, dataclass, fields

from codec.store.rundir import model_hash


@dataclass
class PriorConfig:
    """A TokenPrior: layout of the codec's tokens, Transformer size, and the codec it belongs to."""

    modality: str = "image"  # "image" or "audio"
    codebook_size: int = 1024  # K: token values are 0..K-1
    levels: int = 1  # residual levels per position (n_q); 1 for single-quantizer images
    residual: bool = False  # tokens carry a level axis: (n_q, h, w) images, (n_q, t) audio
    context: int = 256  # attention window: position i sees i-context+1 .. i (256: entropy coding >2000 tok/s)
    dim: int = 256
    depth: int = 6
    heads: int = 8
    ff_mult: int = 4
    dropout: float = 0.0
    num_classes: int = 0  # 0: one "unconditional" start token; C > 0: also C class start tokens
    edge_positions: int = 16  # distances to each grid edge embedded exactly up to this many tokens
    rotary_base: float = 10000.0
    codec_hash: str = ""  # model_hash of the codec whose tokens the prior models: given as data, checked on use
    sample_shape: tuple[int, ...] | None = None  # default token shape for sampling (commonest in training)

    def __post_init__(self):
        if self.sample_shape is not None:
            self.sample_shape = tuple(int(s) for s in self.sample_shape)
        if self.modality not in ("image", "audio"):
            raise ValueError(f"modality must be 'image' or 'audio', got {self.modality!r}")
        if self.modality == "audio" and not self.residual:
            raise ValueError("audio tokens always carry a level axis: residual must be True")
        if self.levels < 1 or (not self.residual and self.levels != 1):
            raise ValueError(f"levels must be >= 1 (and 1 when residual is False), got {self.levels}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.context < 2:
            raise ValueError(f"context must be >= 2 tokens, got {self.context}")
        if self.dim % self.heads or (self.dim // self.heads) % 4:
            raise ValueError(f"dim / heads must be a multiple of 4 (2-D rotary), got dim={self.dim} heads={self.heads}")
        if self.depth < 1 or self.num_classes < 0 or self.edge_positions < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("depth and edge_positions must be >= 1, num_classes >= 0, dropout in [0, 1)")

    @classmethod
    def for_codec(cls, codec_model, **overrides) -> "PriorConfig":
        """The layout fields (and codec_hash) taken from a codec; every other field from ``overrides``."""
        return cls(**{**overrides, **codec_layout(codec_model)})

    @property
    def receptive_field(self) -> int:
        """How many earlier positions can influence a prediction: each layer reaches context - 1 further back."""
        return self.depth * (self.context - 1)


def codec_layout(codec_model) -> dict:
    """The token layout of a codec's tokens (modality, codebook_size, levels, residual) and its codec_hash: the
    fields an entropy model's config takes from the codec (``PriorConfig``, ``prior.context.ContextConfig``)."""
    return dict(
        modality=codec_model.modality,
        codebook_size=codec_model.codebook_size,
        levels=codec_model.num_quantizers if codec_model.residual else 1,
        residual=codec_model.residual,
        codec_hash=model_hash(codec_model),
    )


def config_to_dict(config: PriorConfig) -> dict:
    d = asdict(config)
    d["sample_shape"] = list(config.sample_shape) if config.sample_shape is not None else None
    return d


def config_from_dict(data: dict) -> PriorConfig:
    """Build a config from its dict form; unknown keys are an error (a config from another version)."""
    known = {f.name for f in fields(PriorConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown prior config keys: {sorted(unknown)}")
    return PriorConfig(**data)
