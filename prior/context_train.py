"""Training a ContextPrior on a tokens directory: the context model's part of the one training loop
(``codec.train.loop``), beside the Transformer's (``prior.train``).

A training example is a crop of one item's token grid (L, H, W) (``prior.layout``): ``crop`` x ``crop`` positions
of an image, or 1 x ``crop`` frames of audio, from an item drawn with probability proportional to its number of
positions. Items smaller than the crop are padded and the padding masked out (it is "unknown", as a grid's edge
is to the coder). Every level is trained, so files with fewer levels (lower bitrates) are coded by the same model.
Held-out bits per token are measured on fixed crops of the held-out items.

Output directory: ``config.json`` and ``model.safetensors`` (``prior.context_checkpoint``), the loop's checkpoint
files and ``metrics.jsonl``.
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from codec.train.config import dataclass_from_dict
from codec.train.data import mix_seed, split_files, stream_loader
from codec.train.loop import LoopSettings, TrainTask, run_training
from prior.context import ContextConfig, ContextPrior, context_config_from_dict, context_config_to_dict
from prior.context_checkpoint import load_context, save_context
from prior.data import load_tokens
from prior.layout import grid_layout
from prior.train import check_init_layout, check_same_codec, check_unchanged, resumed_run


@dataclass
class TrainContextConfig:
    """Optimisation settings of a context model. Defaults suit an hour of CPU training."""

    steps: int = 4000
    batch_size: int = 12
    crop: int = 24  # images: crop x crop positions; audio: 1 x (8 * crop) frames (24 -> 192 frames)
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    mixed_precision: str = "auto"
    val_fraction: float = 0.05
    eval_every: int = 500
    eval_batches: int = 8
    save_every: int = 250
    log_every: int = 50
    seed: int = 0
    max_minutes: float = 0.0

    def __post_init__(self):
        if min(self.steps, self.batch_size, self.crop, self.eval_every, self.save_every, self.log_every) < 1:
            raise ValueError("steps, batch_size, crop, eval_every, save_every and log_every must be >= 1")
        if self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")

    def loop_settings(self) -> LoopSettings:
        return LoopSettings(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            betas=(0.9, 0.99),
            weight_decay=self.weight_decay,
            warmup=self.warmup_steps,
            min_lr_ratio=self.min_lr_ratio,
            grad_clip=self.grad_clip,
            mixed_precision=self.mixed_precision,
            log_every=self.log_every,
            eval_every=self.eval_every,
            checkpoint_every=self.save_every,
            seed=self.seed,
            max_minutes=self.max_minutes,
        )


LAYOUT_KEYS = ("modality", "codebook_size", "levels", "residual", "codec_hash")


class CropSampler:
    """Random crops of token grids: ``sampler[(index, item_seed)]`` is one crop made from ``item_seed`` alone."""

    def __init__(self, grids: list[torch.Tensor], crop: tuple[int, int]):
        self.grids, self.crop = grids, crop
        self.weights = torch.tensor([float(g.shape[1] * g.shape[2]) for g in grids], dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.grids)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.window(torch.Generator().manual_seed(int(key[1])))

    def window(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (L, h, w), inside (L, h, w) bool) of one crop."""
        grid = self.grids[int(torch.multinomial(self.weights, 1, generator=generator))]
        L, H, W = grid.shape
        h, w = self.crop
        r = int(torch.randint(max(0, H - h) + 1, (1,), generator=generator))
        c = int(torch.randint(max(0, W - w) + 1, (1,), generator=generator))
        part = grid[:, r : r + h, c : c + w]
        tokens = torch.zeros(L, h, w, dtype=torch.int64)
        inside = torch.zeros(L, h, w, dtype=torch.bool)
        tokens[:, : part.shape[1], : part.shape[2]] = part
        inside[:, : part.shape[1], : part.shape[2]] = True
        return tokens, inside

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_crops([self.window(generator) for _ in range(size)])


def collate_crops(crops: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.stack(parts) for parts in zip(*crops, strict=True))


class ContextTask(TrainTask):
    """A ContextPrior trained on tokens (see the module docstring)."""

    kind = "context"
    stat_names = ("loss", "bits")
    progress_stats = ("bits",)

    def __init__(self, config: ContextConfig, cfg: TrainContextConfig, items, tokens_dir: Path, init_state=None):
        super().__init__(cfg.loop_settings())
        self.config, self.cfg, self.items, self.tokens_dir = config, cfg, items, tokens_dir
        self.init_state = init_state

    def build_model(self) -> ContextPrior:
        model = ContextPrior(self.config)
        if self.init_state is not None:
            model.load_state_dict(self.init_state)
            self.init_state = None
        return model

    def param_groups(self, model: ContextPrior) -> list[dict]:
        return [{"params": list(model.parameters()), "weight_decay": self.cfg.weight_decay}]

    def _grids(self, names: list[str]) -> list[torch.Tensor]:
        by_name = dict(zip(self.items.names, self.items.tokens))
        c = self.config
        return [by_name[n].reshape(grid_layout(by_name[n].shape, c.modality, c.residual)) for n in names]

    def start(self, model: ContextPrior, accelerator) -> None:
        cfg = self.cfg
        self.device = accelerator.device
        train_names, self.val_names = split_files(self.items.names, cfg.val_fraction)
        crop = (1, cfg.crop * 8) if self.config.modality == "audio" else (cfg.crop, cfg.crop)
        self.train_crops = self.val_crops = CropSampler(self._grids(train_names), crop)
        if self.val_names:
            self.val_crops = CropSampler(self._grids(self.val_names), crop)

    def train_loader(self, position: int):
        return stream_loader(self.train_crops, self.cfg.batch_size, self.cfg.seed, position, 0, collate_crops)

    def loss(self, model: ContextPrior, batch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, inside = batch
        nats, _ = model.loss_nats(tokens, inside)
        mean = nats / inside.sum().clamp_min(1)
        return mean, torch.stack([mean.detach(), mean.detach() / math.log(2)])

    @torch.no_grad()
    def evaluate(self, model: ContextPrior, accelerator, step: int) -> dict:
        """Mean bits/token, and per level, over fixed held-out crops (the same at every evaluation)."""
        g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, 1))
        L = self.config.levels
        nats, counts = torch.zeros(L), torch.zeros(L)
        for _ in range(self.cfg.eval_batches):
            tokens, inside = (t.to(accelerator.device) for t in self.val_crops.batch(self.cfg.batch_size, g))
            _, per_level = model.loss_nats(tokens, inside)
            nats += per_level.cpu()
            counts += inside.sum(dim=(0, 2, 3)).cpu().float()
        bits = nats / counts.clamp_min(1) / math.log(2)
        return {
            "val_bits": float(nats.sum() / counts.sum().clamp_min(1) / math.log(2)),
            "val_bits_per_level": [round(float(b), 4) for b in bits],
            "log2_K": math.log2(self.config.codebook_size),
            "held_out_items": len(self.val_names),
        }

    def save_model(self, out_dir: Path, model: ContextPrior) -> None:
        save_context(out_dir, model)

    def state(self) -> dict:
        return {
            "context_config": context_config_to_dict(self.config),
            "train_config": asdict(self.cfg),
            "tokens_dir": str(self.tokens_dir),
        }


def train_context(
    tokens_dir: str | Path,
    out_dir: str | Path,
    model_overrides: dict | None = None,
    train_overrides: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    init=None,
) -> dict:
    """Train (or resume) a context model on a tokens directory; ``train_prior``'s twin (same arguments: the
    overrides are ContextConfig and TrainContextConfig fields).

    Returns:
        {"step", "train_bits", "val_bits", "log2_K", "out"}.
    """
    if resume and init is not None:
        raise ValueError("--init starts a new run from a model's weights; --resume continues a run: use one")
    out = Path(out_dir)
    items = load_tokens(tokens_dir)
    if not items.tokens:
        raise ValueError(f"{tokens_dir}: no tokenized items")
    meta = items.meta
    overrides = dict(model_overrides or {})
    unknown = set(overrides) - set(asdict(ContextConfig()))
    if unknown:
        raise ValueError(f"unknown context model config keys: {sorted(unknown)}")
    if set(overrides) & set(LAYOUT_KEYS):
        raise ValueError(f"settings {sorted(set(overrides) & set(LAYOUT_KEYS))} come from the tokens directory")
    init_state = None
    if resume:
        saved = resumed_run(out, "context", "context model")
        config = context_config_from_dict(saved["context_config"])
        check_unchanged(config, overrides, "setting", "when resuming")
        check_same_codec(config, meta, out, tokens_dir)
        train_cfg = dataclass_from_dict(TrainContextConfig, {**saved["train_config"], **(train_overrides or {})})
    else:
        if init is not None:
            start = init if isinstance(init, ContextPrior) else load_context(init, device="cpu")
            check_init_layout(start.config, meta, tokens_dir, "model")
            check_unchanged(start.config, overrides, "setting", "of the --init model")
            overrides = {k: v for k, v in asdict(start.config).items() if k not in LAYOUT_KEYS}
            init_state = start.state_dict()
        config = ContextConfig(**{**overrides, **{k: meta[k] for k in LAYOUT_KEYS}})
        train_cfg = dataclass_from_dict(TrainContextConfig, train_overrides or {})
    task = ContextTask(config, train_cfg, items, Path(tokens_dir), init_state)
    result = run_training(task, out, resume=resume, progress=progress)
    return dict(
        step=result["step"],
        train_bits=result["train"].get("bits", float("nan")),
        val_bits=result["eval"].get("val_bits", float("nan")),
        log2_K=math.log2(config.codebook_size),
        out=str(out),
    )
