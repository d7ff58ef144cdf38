"""Training settings of a codec (``TrainConfig``), the one reader of ``--config`` files, and config merging."""

import json
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path

from codec.core.refine import MAX_REFINE_STEPS


@dataclass
class TrainConfig:
    """Optimisation, data and bookkeeping settings of a codec. A "step" is one optimizer update.

    A setting added later must default to the behaviour before it: runs saved without it resume with the default.
    """

    steps: int = 100_000
    batch_size: int = 16  # per process and micro-batch
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    warmup: int = 500  # linear warm-up steps, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    grad_accum: int = 1  # micro-batches per step
    mixed_precision: str = "no"  # "no", "fp16" (CUDA only) or "bf16"
    crop: int = 128  # image crop side, a multiple of the model's downsampling
    segment_samples: int = 24000  # audio segment at the model's rate, a multiple of its hop
    eval_every: int = 1000
    eval_items: int = 16  # held-out items per evaluation
    sample_items: int = 4  # reconstructions written per evaluation
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes
    val_fraction: float = 0.05
    # "l1" or "l2". Measured: 500 steps on synthetic photos + real photo tiles, held-out PSNR 22.2 dB with l1
    # vs 20.2 dB with l2 (mean of 3 seeds; l1 ahead on every seed).
    image_loss: str = "l1"
    # images: errors past 0 or 1 where the target sits on that bound count as nothing (the codec clamps its
    # output; codec.train.losses.clamp_aware_output)
    image_clamp_aware: bool = False
    saturation_jitter: float = 0.0  # images: scale each training crop's saturation by 1 + U(-s, s), clamped
    recon_weight: float = 1.0  # image L1/L2, or audio time-domain L1
    stft_weight: float = 1.0  # audio multi-resolution STFT loss
    mel_weight: float = 1.0  # audio multi-resolution log-mel L1
    cstft_weight: float = 0.0  # audio: MSE of the power-law compressed complex STFT (phase-aware)
    # audio: the same error on the frame-periodic component (the signal averaged over hop-long frames), which
    # holds the decoder's comb of fixed tones at the frame rate (codec.core.spectral.FramePeriodicLoss); its size
    # depends on the segment length: 0.3 was measured with one-second segments
    periodic_weight: float = 0.0
    # > 0: stop (evaluate, checkpoint) once this much wall time has passed in this call; the cosine then follows
    # the time or the steps, whichever is further along
    max_minutes: float = 0.0
    vq_weight: float = 1.0  # quantizer commitment loss
    # fine-tuning (needs init): keep the encoder and codebooks as they are and train the decoder only, so the
    # model gives exactly the start model's tokens and a prior trained on them stays valid (re-paired on bundling)
    freeze_encoder: bool = False
    # fine-tuning (needs init): keep the decoder and codebooks as they are and train the encoder only, against the
    # start model's decoder (straight through its quantizer): the tokens change, what each code means does not, so
    # the start model's priors still fit them roughly (fine-tune them with ``train-prior --init``)
    freeze_decoder: bool = False
    # fine-tuning with freeze_encoder: the first search_share of each batch takes its tokens from the encoder-side
    # search (codec.core.refine) of search_steps steps against the decoder being trained, the rest the encoder's
    # nearest codes; the decoder learns to render the tokens `codec encode --refine` writes. 0 = off
    search_steps: int = 0
    search_share: float = 0.5
    # audio: a light adversarial loss (codec.train.adversarial): a multi-resolution complex-spectrogram
    # discriminator with hinge losses; its generator term and its relative feature-matching term, both 0 = off.
    # They switch on at step adversarial_start (give reconstruction time to converge first; with --init at 0).
    adversarial_weight: float = 0.0
    feature_weight: float = 0.0
    adversarial_start: int = 0
    disc_lr: float = 0.0  # the discriminator's AdamW rate (constant); 0 = lr
    disc_channels: int = 64  # width of the discriminator's convolutions
    disc_samples: int = 0  # > 0: the discriminator sees a random window this long of each item (cost), 0 = all

    @property
    def adversarial(self) -> bool:
        """Whether a discriminator trains beside the codec."""
        return self.adversarial_weight > 0 or self.feature_weight > 0

    @property
    def frozen_codebooks(self) -> bool:
        """Either freeze: the quantizer runs in eval mode (no EMA update, no dead-code reset)."""
        return self.freeze_encoder or self.freeze_decoder

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if self.freeze_encoder and self.freeze_decoder:
            raise ValueError("train config: freeze_encoder and freeze_decoder together leave nothing to train")
        positive = ("steps", "batch_size", "grad_accum", "crop", "segment_samples")
        positive += ("eval_every", "eval_items", "checkpoint_every", "log_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"train config: {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"train config: need lr > 0 and two betas in [0, 1), got {self.lr}, {self.betas}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"train config: mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.image_loss not in ("l1", "l2"):
            raise ValueError(f"train config: image_loss must be 'l1' or 'l2', got {self.image_loss!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"train config: val_fraction must be in [0, 1), got {self.val_fraction}")
        if min(self.warmup, self.num_workers, self.sample_items, self.grad_clip, self.max_minutes) < 0:
            raise ValueError("train config: warmup, num_workers, sample_items, grad_clip, max_minutes must be >= 0")
        if not 0.0 <= self.saturation_jitter < 1.0:
            raise ValueError(f"train config: saturation_jitter must be in [0, 1), got {self.saturation_jitter}")
        adv = ("adversarial_weight", "feature_weight", "adversarial_start", "disc_lr", "disc_samples")
        if min(getattr(self, k) for k in adv) < 0 or self.disc_channels < 1:
            raise ValueError(f"train config: {', '.join(adv)} must be >= 0 and disc_channels >= 1")
        if not 0 <= self.search_steps <= MAX_REFINE_STEPS or not 0.0 < self.search_share <= 1.0:
            raise ValueError(
                f"train config: search_steps must be in [0, {MAX_REFINE_STEPS}] and search_share in (0, 1], got "
                f"{self.search_steps} and {self.search_share}"
            )
        if self.search_steps and not self.freeze_encoder:
            raise ValueError("train config: search_steps searches a frozen encoder's codes: it needs freeze_encoder")
        if self.adversarial and self.freeze_decoder:
            raise ValueError("train config: the adversarial loss trains the decoder; it cannot go with freeze_decoder")


# Settings that may differ when a run is resumed; any other difference is an error.
RESUMABLE_CHANGES = frozenset(
    {"steps", "eval_every", "eval_items", "sample_items", "checkpoint_every", "log_every", "num_workers"}
    | {"mixed_precision", "max_minutes"}
)


def dataclass_from_dict(cls, data: dict, what: str = "train config"):
    """``cls(**data)`` for a (possibly partial) dict; unknown keys are an error."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} keys: {unknown}")
    return cls(**data)


def train_config_from_dict(data: dict) -> TrainConfig:
    """A TrainConfig from a (possibly partial) dict; unknown keys are an error."""
    return dataclass_from_dict(TrainConfig, data)


def read_config_file(path: str | Path, sections: tuple[str, ...]) -> dict:
    """The sections of a ``--config`` JSON file, each optional: {"codec": {...}, "train": {...}} for ``codec
    train``, {"prior": {...}, "train": {...}} for ``codec train-prior``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not an object, an unknown section, or a section that is not an object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    names = " and ".join(f'"{s}"' for s in sections)
    if not isinstance(data, dict) or set(data) - set(sections):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: expected a JSON object with optional {names} sections, got {keys}")
    for name, section in data.items():
        if not isinstance(section, dict):
            raise ValueError(f'{path}: the "{name}" section must be a JSON object')
    return data


def plain(obj):
    """A dataclass, dict or list -> its JSON form (tuples become lists), so saved and live values compare equal."""
    return json.loads(json.dumps(asdict(obj) if is_dataclass(obj) else obj))


def merge(base: dict, override: dict) -> dict:
    """Recursive dict update: nested dicts are merged, anything else replaced."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """'key (a -> b)' for every leaf that differs."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k} ({va!r} -> {vb!r})")
    return out
