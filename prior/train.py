"""Train a TokenPrior on a tokens directory (``prior.data.tokenize_dataset``) with accelerate.

AdamW (weight decay on matrices only), linear warmup then cosine decay to ``min_lr_ratio * lr``, gradient
clipping, mixed precision (bf16 on a GPU that has it, fp32 on CPU), held-out bits/token every ``eval_every``
steps, atomic checkpoints every ``save_every`` steps, and ``resume``.

A training example is a window of ``seq_len`` consecutive positions of one item's raster sequence, the item
drawn with probability proportional to its length (so every token is equally likely) and the start uniform.
The batch of step s depends only on (seed, s), so a resumed run sees exactly the data it would have seen.

Output directory::

    config.json, model.safetensors   the prior (``prior.load``), rewritten at every checkpoint
    train_state.safetensors          model + optimizer tensors; metadata: step and both configs (JSON)
    train_log.jsonl                  one JSON line per log or eval step
"""

import hashlib
import json
import math
import struct
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from tqdm import tqdm

from codec.data import split_files
from codec.errors import CheckpointError, ModelMismatchError
from codec.fileio import atomic_write_bytes
from codec.train_state import load_optimizer_tensors, lr_factor, optimizer_tensors
from prior.checkpoint import save_prior
from prior.config import PriorConfig, config_from_dict, config_to_dict
from prior.data import load_tokens
from prior.model import TokenPrior, positions

CHECKPOINT_NAME = "train_state.safetensors"  # same name as codec training uses
LOG_NAME = "train_log.jsonl"


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


def _any_late(accelerator, deadline: float) -> bool:
    """Whether any process has passed the wall-clock deadline (a collective: all stop together)."""
    late = torch.tensor(float(time.monotonic() > deadline), device=accelerator.device)
    return bool(accelerator.reduce(late, reduction="sum") > 0)


def train_config_from_dict(data: dict) -> TrainPriorConfig:
    unknown = set(data) - {f.name for f in fields(TrainPriorConfig)}
    if unknown:
        raise ValueError(f"unknown train config keys: {sorted(unknown)}")
    return TrainPriorConfig(**data)


LAYOUT_KEYS = ("modality", "codebook_size", "levels", "residual", "codec_hash")


def _check_prior_overrides(overrides: dict) -> dict:
    unknown = set(overrides) - {f.name for f in fields(PriorConfig)}
    if unknown:
        raise ValueError(f"unknown prior config keys: {sorted(unknown)}")
    fixed = sorted(set(overrides) & set(LAYOUT_KEYS))
    if fixed:
        raise ValueError(f"prior settings {fixed} come from the tokens directory and cannot be set")
    return dict(overrides)


def lr_at(step: int, cfg: TrainPriorConfig) -> float:
    """Learning rate for (0-based) step: linear warmup, then cosine down to lr * min_lr_ratio."""
    return cfg.lr * lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)


def _seed(*values: int) -> int:
    """A 63-bit seed from integers, stable across runs and machines."""
    digest = hashlib.blake2b(struct.pack(f"<{len(values)}q", *values), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ------------------------------------------------------------------------------------------------- data
class WindowSampler:
    """Random training windows over items given as flat raster sequences (prior order) with their layouts."""

    def __init__(self, seqs: list[torch.Tensor], layouts: list[tuple[int, int, int]], start_id: int, seq_len: int):
        self.seqs, self.layouts, self.start_id = seqs, layouts, start_id
        self.seq_len = min(seq_len, max(len(s) for s in seqs))
        self.weights = torch.tensor([float(len(s)) for s in seqs], dtype=torch.float64)

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs (B, T), targets (B, T) with -1 as padding, positions (B, T, 5)), all int64."""
        T = self.seq_len
        inputs = torch.zeros(size, T, dtype=torch.int64)
        targets = torch.full((size, T), -1, dtype=torch.int64)
        pos = torch.zeros(size, T, 5, dtype=torch.int64)
        items = torch.multinomial(self.weights, size, replacement=True, generator=generator).tolist()
        for b, i in enumerate(items):
            seq, n = self.seqs[i], len(self.seqs[i])
            s = int(torch.randint(max(0, n - T) + 1, (1,), generator=generator))
            m = min(T, n - s)
            targets[b, :m] = seq[s : s + m]
            # Half the windows that start inside an item begin with the start token, as the entropy coder's
            # chunks do (codec.entropy); the others with the token before them, as sampling continues.
            fresh = s == 0 or bool(torch.randint(2, (1,), generator=generator))
            inputs[b, 0] = self.start_id if fresh else seq[s - 1]
            inputs[b, 1:m] = seq[s : s + m - 1]
            pos[b] = positions(self.layouts[i], s, s + T).clamp(min=0)  # padding positions may run off the grid
        return inputs, targets, pos


def _sequences(prior: TokenPrior, tokens: list[torch.Tensor], level_subsets: bool = False):
    """Flat sequences and layouts of items; with ``level_subsets`` (residual tokens only) also every item cut to
    its first 1..L-1 levels."""
    if level_subsets and prior.config.residual:
        tokens = [t[:n] for t in tokens for n in range(1, t.shape[0] + 1)]
    seqs = [prior.flatten(t[None])[0] for t in tokens]
    return seqs, [prior.layout(t.shape) for t in tokens]


# ------------------------------------------------------------------------------------------- checkpoint
def _save_checkpoint(out: Path, model: TokenPrior, optimizer, step: int, prior_cfg, train_cfg) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_json = optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    meta = dict(
        format="vqcodec-prior-train",
        step=str(step),
        prior_config=json.dumps(config_to_dict(prior_cfg)),
        train_config=json.dumps(asdict(train_cfg)),
        optimizer=json.dumps(opt_json),
    )
    atomic_write_bytes(out / CHECKPOINT_NAME, save(tensors, metadata=meta))
    save_prior(out, model)


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a training checkpoint."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint: {e}") from None
    if meta.get("format") != "vqcodec-prior-train":
        raise CheckpointError(f"{path}: not a prior training checkpoint")
    return tensors, meta


# --------------------------------------------------------------------------------------------- training
@torch.no_grad()
def evaluate(model: TokenPrior, sampler: WindowSampler, batches: int, batch_size: int, seed: int) -> float:
    """Mean bits/token (fp32) over fixed windows (the same ones at every call for a given seed)."""
    was, device = model.training, next(model.parameters()).device
    model.eval()
    g = torch.Generator().manual_seed(_seed(seed, 1))
    nats, count = 0.0, 0
    for _ in range(batches):
        inputs, targets, pos = (t.to(device) for t in sampler.batch(batch_size, g))
        logits, _ = model(inputs, pos)
        loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-1, reduction="sum")
        nats, count = nats + float(loss), count + int((targets >= 0).sum())
    model.train(was)
    return nats / max(count, 1) / math.log(2)


def train_prior(
    tokens_dir: str | Path,
    out_dir: str | Path,
    prior_overrides: dict | None = None,
    train_overrides: dict | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train (or resume training) a prior on a tokens directory.

    Args:
        tokens_dir: made by ``tokenize_dataset``.
        out_dir: the run directory (created if needed).
        prior_overrides: PriorConfig fields other than the layout, which comes from the tokens (dim, depth, ...).
        train_overrides: TrainPriorConfig fields (steps, batch_size, ...).
        resume: continue the run in ``out_dir`` from its checkpoint (a fresh run when there is none).
        progress: show a tqdm progress bar.

    Returns:
        {"step", "train_bits" (last logged), "val_bits", "log2_K", "out"}.

    Raises:
        ValueError: ``out_dir`` already holds a run and ``resume`` is False, or a bad config.
        ModelMismatchError: resuming on tokens of another codec.
    """
    out = Path(out_dir)
    items = load_tokens(tokens_dir)
    if not items.tokens:
        raise ValueError(f"{tokens_dir}: no tokenized items")
    meta = items.meta
    prior_overrides = _check_prior_overrides(prior_overrides or {})
    ckpt_path = out / CHECKPOINT_NAME
    ckpt = None
    if ckpt_path.exists() and not resume:
        raise ValueError(f"{out} already holds a training run; pass --resume to continue it or use a new --out")
    if resume and ckpt_path.exists():
        ckpt = _read_checkpoint(ckpt_path)
        prior_cfg = config_from_dict(json.loads(ckpt[1]["prior_config"]))
        for key, value in prior_overrides.items():
            if getattr(prior_cfg, key) != value:
                raise ValueError(f"cannot change prior setting {key!r} when resuming (it is {getattr(prior_cfg, key)})")
        if prior_cfg.codec_hash != meta["codec_hash"]:
            raise ModelMismatchError(f"{out} was trained on tokens of another codec than those in {tokens_dir}")
        train_cfg = train_config_from_dict({**json.loads(ckpt[1]["train_config"]), **(train_overrides or {})})
    else:
        shapes = Counter(tuple(t.shape) for t in items.tokens)
        layout = {k: meta[k] for k in LAYOUT_KEYS}
        prior_cfg = PriorConfig(**{"sample_shape": shapes.most_common(1)[0][0], **prior_overrides, **layout})
        train_cfg = train_config_from_dict(train_overrides or {})

    mp = train_cfg.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(mixed_precision=mp)
    torch.manual_seed(train_cfg.seed)
    model = TokenPrior(prior_cfg)
    train_names, val_names = split_files(items.names, train_cfg.val_fraction)
    by_name = dict(zip(items.names, items.tokens))
    seqs, layouts = _sequences(model, [by_name[n] for n in train_names], train_cfg.level_subsets)
    start_id = prior_cfg.codebook_size
    train_sampler = WindowSampler(seqs, layouts, start_id, train_cfg.seq_len)
    val_sampler = train_sampler
    if val_names:
        val_sampler = WindowSampler(*_sequences(model, [by_name[n] for n in val_names]), start_id, train_cfg.seq_len)

    matrices = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": train_cfg.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=train_cfg.lr,
        betas=(train_cfg.beta1, train_cfg.beta2),
    )
    step = 0
    if ckpt is not None:
        tensors, ckpt_meta = ckpt
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        load_optimizer_tensors(optimizer, tensors, json.loads(ckpt_meta["optimizer"]))
        step = int(ckpt_meta["step"])
    model, optimizer = accelerator.prepare(model, optimizer)
    out.mkdir(parents=True, exist_ok=True)
    main = accelerator.is_main_process

    def log(record: dict) -> None:
        if main:
            with open(out / LOG_NAME, "a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint() -> None:
        accelerator.wait_for_everyone()
        if main:
            _save_checkpoint(out, accelerator.unwrap_model(model), optimizer, step, prior_cfg, train_cfg)

    log2_k = math.log2(prior_cfg.codebook_size)
    train_bits = val_bits = float("nan")
    model.train()
    bar = tqdm(total=train_cfg.steps, initial=step, desc="train-prior", disable=not (progress and main))
    start = time.monotonic()
    deadline = start + 60 * train_cfg.max_minutes if train_cfg.max_minutes > 0 else None
    while step < train_cfg.steps:
        g = torch.Generator().manual_seed(_seed(train_cfg.seed, step, accelerator.process_index))
        torch.manual_seed(_seed(train_cfg.seed, step, accelerator.process_index, 1))  # dropout
        inputs, targets, pos = (t.to(accelerator.device) for t in train_sampler.batch(train_cfg.batch_size, g))
        # under a time budget the cosine follows the time or the steps, whichever is further along
        lr_step = step
        if deadline is not None:
            lr_step = max(step, int(train_cfg.steps * min(1.0, (time.monotonic() - start) / (deadline - start))))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(lr_step, train_cfg)
        with accelerator.autocast():
            logits, _ = model(inputs, pos)
        loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-1)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % train_cfg.log_every == 0 or step == train_cfg.steps:
            train_bits = loss.item() / math.log(2)
            bar.set_postfix(bits=f"{train_bits:.3f}", lr=f"{lr_at(step - 1, train_cfg):.2e}")
            log(dict(step=step, train_bits=train_bits, lr=lr_at(step - 1, train_cfg)))
        if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
            unwrapped = accelerator.unwrap_model(model)
            val_bits = evaluate(unwrapped, val_sampler, train_cfg.eval_batches, train_cfg.batch_size, train_cfg.seed)
            log(dict(step=step, val_bits=val_bits, log2_K=log2_k, held_out_items=len(val_names)))
            if main:
                bar.write(f"step {step}: held-out {val_bits:.4f} bits/token (log2 K = {log2_k:g})")
        if step % train_cfg.save_every == 0 or step == train_cfg.steps:
            checkpoint()
        if deadline is not None and step % train_cfg.log_every == 0 and _any_late(accelerator, deadline):
            if step % train_cfg.eval_every:
                unwrapped = accelerator.unwrap_model(model)
                cfg = train_cfg
                val_bits = evaluate(unwrapped, val_sampler, cfg.eval_batches, cfg.batch_size, cfg.seed)
                log(dict(step=step, val_bits=val_bits, log2_K=log2_k, held_out_items=len(val_names)))
            if step % train_cfg.save_every:
                checkpoint()
            break
    bar.close()
    if ckpt is not None and step == int(ckpt[1]["step"]):  # nothing left to do: still report
        unwrapped = accelerator.unwrap_model(model)
        val_bits = evaluate(unwrapped, val_sampler, train_cfg.eval_batches, train_cfg.batch_size, train_cfg.seed)
    return dict(step=step, train_bits=train_bits, val_bits=val_bits, log2_K=log2_k, out=str(out))
