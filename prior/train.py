"""Training a TokenPrior on a tokens directory (``prior.data.tokenize_dataset``): the prior's part of the one
training loop (``codec.train.loop``: AdamW, warm-up and cosine decay, clipping, mixed precision, checkpoints with
RNG and optimizer state, ``--resume``, ``metrics.jsonl``).

``PriorTask`` plugs in what is the prior's own: weight decay on matrices only, training windows, the
cross-entropy loss in bits per token, and held-out bits per token on fixed windows. A training example is a window
of ``seq_len`` consecutive positions of one item's raster sequence, the item drawn with probability proportional
to its length (so every token is equally likely) and the start uniform; each window is made from its key in the
data stream alone, so a resumed run sees exactly the data it would have seen.

Output directory: ``config.json`` and ``model.safetensors`` (the prior, ``prior.load``), the checkpoint files and
``metrics.jsonl`` of the loop.
"""

import math
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from codec.errors import CheckpointError, ModelMismatchError
from codec.train.config import dataclass_from_dict
from codec.train.data import mix_seed, split_files, stream_loader
from codec.train.loop import LoopSettings, TrainTask, run_training
from codec.train.state import read_checkpoint_meta
from prior.checkpoint import load_prior, save_prior
from prior.config import PriorConfig, config_from_dict, config_to_dict
from prior.data import load_tokens
from prior.layout import positions
from prior.model import TokenPrior


@dataclass
class TrainPriorConfig:
    """Optimisation settings. Defaults suit a few hours of CPU training of the default PriorConfig."""

    steps: int = 20000
    batch_size: int = 16
    seq_len: int = 1024  # window length; capped at the longest item
    lr: float = 3e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0
    mixed_precision: str = "auto"  # "auto": bf16 on a CUDA GPU that supports it, else "no"; or "no", "bf16", "fp16"
    val_fraction: float = 0.05  # items held out for the bits/token evaluation (by a hash of their names)
    eval_every: int = 500
    eval_batches: int = 8
    save_every: int = 500
    log_every: int = 50
    seed: int = 0
    # Residual tokens: also train on each item cut to its first 1..L-1 levels, the sequences that files coded at
    # lower bitrates (``--quantizers``) present to the coder.
    level_subsets: bool = True
    max_minutes: float = 0.0  # > 0: stop (evaluate, checkpoint) once this much wall time has passed in this call

    def __post_init__(self):
        if min(self.steps, self.batch_size, self.seq_len, self.eval_every, self.save_every, self.log_every) < 1:
            raise ValueError("steps, batch_size, seq_len, eval_every, save_every and log_every must be >= 1")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")

    def loop_settings(self) -> LoopSettings:
        """The loop's share of these settings."""
        return LoopSettings(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            betas=(self.beta1, self.beta2),
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


def train_config_from_dict(data: dict) -> TrainPriorConfig:
    return dataclass_from_dict(TrainPriorConfig, data)


LAYOUT_KEYS = ("modality", "codebook_size", "levels", "residual", "codec_hash")


def _check_prior_overrides(overrides: dict) -> dict:
    unknown = set(overrides) - set(asdict(PriorConfig()))
    if unknown:
        raise ValueError(f"unknown prior config keys: {sorted(unknown)}")
    fixed = sorted(set(overrides) & set(LAYOUT_KEYS))
    if fixed:
        raise ValueError(f"prior settings {fixed} come from the tokens directory and cannot be set")
    return dict(overrides)


# ------------------------------------------------------------------------------------------------- data
class WindowSampler:
    """Random training windows over items given as flat raster sequences (prior order) with their layouts.

    ``sampler[(index, item_seed)]`` is one window made from ``item_seed`` alone (the index is not used: items are
    drawn by length), so a ``codec.train.data.StreamSampler`` stream of keys gives the training batches.
    """

    def __init__(self, seqs: list[torch.Tensor], layouts: list[tuple[int, int, int]], start_id: int, seq_len: int):
        self.seqs, self.layouts, self.start_id = seqs, layouts, start_id
        self.seq_len = min(seq_len, max(len(s) for s in seqs))
        self.weights = torch.tensor([float(len(s)) for s in seqs], dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.window(torch.Generator().manual_seed(int(key[1])))

    def window(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs (T,), targets (T,) with -1 as padding, positions (T, 5)), all int64."""
        T = self.seq_len
        i = int(torch.multinomial(self.weights, 1, generator=generator))
        seq, n = self.seqs[i], len(self.seqs[i])
        s = int(torch.randint(max(0, n - T) + 1, (1,), generator=generator))
        m = min(T, n - s)
        inputs = torch.zeros(T, dtype=torch.int64)
        targets = torch.full((T,), -1, dtype=torch.int64)
        targets[:m] = seq[s : s + m]
        # Half the windows that start inside an item begin with the start token, as the entropy coder's
        # chunks do (codec.bitstream.range_coding); the others with the token before them, as sampling continues.
        fresh = s == 0 or bool(torch.randint(2, (1,), generator=generator))
        inputs[0] = self.start_id if fresh else seq[s - 1]
        inputs[1:m] = seq[s : s + m - 1]
        pos = positions(self.layouts[i], s, s + T).clamp(min=0)  # padding positions may run off the grid
        return inputs, targets, pos

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``size`` windows stacked: (B, T), (B, T), (B, T, 5)."""
        return collate_windows([self.window(generator) for _ in range(size)])


def collate_windows(windows: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.stack(parts) for parts in zip(*windows, strict=True))


def _sequences(prior: TokenPrior, tokens: list[torch.Tensor], level_subsets: bool = False):
    """Flat sequences and layouts of items; with ``level_subsets`` (residual tokens only) also every item cut to
    its first 1..L-1 levels."""
    if level_subsets and prior.config.residual:
        tokens = [t[:n] for t in tokens for n in range(1, t.shape[0] + 1)]
    seqs = [prior.flatten(t[None])[0] for t in tokens]
    return seqs, [prior.layout(t.shape) for t in tokens]


# ------------------------------------------------------------------------------------------------- task
def window_bits(model: TokenPrior, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy in nats over the real targets, their count) of a batch of windows."""
    inputs, targets, pos = batch
    logits = model(inputs, pos)
    nats = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-1, reduction="sum")
    count = (targets >= 0).sum()
    return nats / count.clamp_min(1), count


class PriorTask(TrainTask):
    """A TokenPrior trained on tokens (see the module docstring)."""

    kind = "prior"
    stat_names = ("loss", "bits")
    progress_stats = ("bits",)

    def __init__(self, prior_cfg: PriorConfig, cfg: TrainPriorConfig, items, tokens_dir: Path, init_state=None):
        super().__init__(cfg.loop_settings())
        self.prior_cfg, self.cfg, self.items, self.tokens_dir = prior_cfg, cfg, items, tokens_dir
        self.init_state = init_state  # weights to start from (--init), or None

    def build_model(self) -> TokenPrior:
        model = TokenPrior(self.prior_cfg)
        if self.init_state is not None:
            model.load_state_dict(self.init_state)
            self.init_state = None  # free the copy
        return model

    def param_groups(self, model: TokenPrior) -> list[dict]:
        matrices = [p for p in model.parameters() if p.ndim >= 2]
        others = [p for p in model.parameters() if p.ndim < 2]
        return [{"params": matrices, "weight_decay": self.cfg.weight_decay}, {"params": others, "weight_decay": 0.0}]

    def start(self, model: TokenPrior, accelerator) -> None:
        cfg, items = self.cfg, self.items
        self.device = accelerator.device
        train_names, self.val_names = split_files(items.names, cfg.val_fraction)
        by_name = dict(zip(items.names, items.tokens))
        seqs, layouts = _sequences(model, [by_name[n] for n in train_names], cfg.level_subsets)
        start_id = self.prior_cfg.codebook_size
        self.train_windows = self.val_windows = WindowSampler(seqs, layouts, start_id, cfg.seq_len)
        if self.val_names:
            val = _sequences(model, [by_name[n] for n in self.val_names])
            self.val_windows = WindowSampler(*val, start_id, cfg.seq_len)

    def train_loader(self, position: int):
        return stream_loader(self.train_windows, self.cfg.batch_size, self.cfg.seed, position, 0, collate_windows)

    def loss(self, model: TokenPrior, batch) -> tuple[torch.Tensor, torch.Tensor]:
        nats, _ = window_bits(model, batch)
        return nats, torch.stack([nats.detach(), nats.detach() / math.log(2)])

    def evaluate(self, model: TokenPrior, accelerator, step: int) -> dict:
        """Mean bits/token (fp32) over fixed held-out windows (the same ones at every evaluation)."""
        g = torch.Generator().manual_seed(mix_seed(self.cfg.seed, 1))
        nats, count = 0.0, 0
        for _ in range(self.cfg.eval_batches):
            batch = tuple(t.to(accelerator.device) for t in self.val_windows.batch(self.cfg.batch_size, g))
            mean, n = window_bits(model, batch)
            nats, count = nats + float(mean) * int(n), count + int(n)
        log2_k = math.log2(self.prior_cfg.codebook_size)
        return {"val_bits": nats / max(count, 1) / math.log(2), "log2_K": log2_k, "held_out_items": len(self.val_names)}

    def save_model(self, out_dir: Path, model: TokenPrior) -> None:
        save_prior(out_dir, model)

    def state(self) -> dict:
        return {
            "prior_config": config_to_dict(self.prior_cfg),
            "train_config": asdict(self.cfg),
            "tokens_dir": str(self.tokens_dir),
        }


# ------------------------------------------------------------------ checks shared with prior.context_train
def resumed_run(out: Path, kind: str, label: str) -> dict:
    """The checkpoint record of the run in ``out``, which must be a ``kind`` run (CheckpointError otherwise)."""
    saved = read_checkpoint_meta(out)
    if saved.get("kind") != kind:
        raise CheckpointError(f"{out} holds a {saved.get('kind', 'codec')} training run, not a {label} one")
    return saved


def check_unchanged(config, overrides: dict, what: str, when: str) -> None:
    """ValueError unless every override equals the config's value (a resumed run's or an --init model's)."""
    for key, value in overrides.items():
        have = getattr(config, key)
        if have != value:
            raise ValueError(f"cannot change {what} {key!r} {when} (it is {have})")


def check_same_codec(config, meta: dict, out, tokens_dir) -> None:
    """ModelMismatchError unless a resumed run was trained on the tokens' codec."""
    if config.codec_hash != meta["codec_hash"]:
        raise ModelMismatchError(f"{out} was trained on tokens of another codec than those in {tokens_dir}")


def check_init_layout(config, meta: dict, tokens_dir, label: str) -> None:
    """ModelMismatchError unless an --init model has the tokens' layout (any codec with this layout will do)."""
    for key in ("modality", "codebook_size", "levels", "residual"):
        have, want = getattr(config, key), meta[key]
        if have != want:
            raise ModelMismatchError(f"the --init {label} has {key}={have!r}, the tokens in {tokens_dir} {want!r}")


def train_prior(
    tokens_dir: str | Path,
    out_dir: str | Path,
    prior_overrides: dict | None = None,
    train_overrides: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    init=None,
) -> dict:
    """Train (or resume training) a prior on a tokens directory.

    Args:
        tokens_dir: made by ``tokenize_dataset``.
        out_dir: the run directory (created if needed).
        prior_overrides: PriorConfig fields other than the layout, which comes from the tokens (dim, depth, ...).
        train_overrides: TrainPriorConfig fields (steps, batch_size, ...).
        resume: continue the run in ``out_dir`` from its checkpoint (an error when it has none).
        progress: a progress bar on a terminal, or a plain line per log and evaluation step on stderr elsewhere.
        init: a trained prior to start from (a ``TokenPrior``, or a run directory or name for ``load_prior``):
            its config and weights, with a fresh optimizer. Its token layout (modality, codebook size, levels) must
            be the tokens'; its codec may be another (a prior of the codec that a fine-tuned one started from is a
            good start), and the new prior records the tokens' codec. ``prior_overrides`` may not change it.

    Returns:
        {"step", "train_bits" (last logged), "val_bits", "log2_K", "out"}.

    Raises:
        CheckpointError: ``resume`` without a checkpoint, or a fresh run in a directory that holds one.
        ValueError: a bad config, or a prior setting that differs from the resumed run's.
        ModelMismatchError: resuming on tokens of another codec; an ``init`` prior of another token layout.
    """
    if resume and init is not None:
        raise ValueError("--init starts a new run from a prior's weights; --resume continues a run: use one")
    out = Path(out_dir)
    items = load_tokens(tokens_dir)
    if not items.tokens:
        raise ValueError(f"{tokens_dir}: no tokenized items")
    meta = items.meta
    prior_overrides = _check_prior_overrides(prior_overrides or {})
    if resume:
        saved = resumed_run(out, "prior", "prior")
        prior_cfg = config_from_dict(saved["prior_config"])
        check_unchanged(prior_cfg, prior_overrides, "prior setting", "when resuming")
        check_same_codec(prior_cfg, meta, out, tokens_dir)
        train_cfg = train_config_from_dict({**saved["train_config"], **(train_overrides or {})})
    elif init is not None:
        start = init if isinstance(init, TokenPrior) else load_prior(init, device="cpu")
        check_init_layout(start.config, meta, tokens_dir, "prior")
        check_unchanged(start.config, prior_overrides, "prior setting", "of the --init prior")
        prior_cfg = replace(start.config, codec_hash=meta["codec_hash"])  # the new prior belongs to these tokens
        init_state = start.state_dict()
        train_cfg = train_config_from_dict(train_overrides or {})
    else:
        shapes = Counter(tuple(t.shape) for t in items.tokens)
        layout = {k: meta[k] for k in LAYOUT_KEYS}
        prior_cfg = PriorConfig(**{"sample_shape": shapes.most_common(1)[0][0], **prior_overrides, **layout})
        train_cfg = train_config_from_dict(train_overrides or {})
    task = PriorTask(prior_cfg, train_cfg, items, Path(tokens_dir), init_state if init is not None else None)
    result = run_training(task, out, resume=resume, progress=progress)
    return dict(
        step=result["step"],
        train_bits=result["train"].get("bits", float("nan")),
        val_bits=result["eval"].get("val_bits", float("nan")),
        log2_K=math.log2(prior_cfg.codebook_size),
        out=str(out),
    )
