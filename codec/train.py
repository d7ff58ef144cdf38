"""Training of a codec with accelerate: CPU, one or many GPUs, many nodes; checkpoints that resume.

    metrics = train("image", "data/photos", "runs/img", ImageCodecConfig(), TrainConfig(steps=20_000))

Launch it plainly (one process, GPU when there is one, else CPU) or under ``accelerate launch`` /
``torchrun`` for data parallelism (gloo on CPU). The quantizer all-reduces its own EMA statistics in the
forward pass, so its codebooks stay identical on every rank (DDP's buffer broadcast from rank 0 before
each forward is then a no-op; it is kept because torch deprecates turning it off).

The run directory::

    config.json, model.safetensors   the model (codec.checkpoint.save_model), loadable with codec.load
    train_state.safetensors          model + optimizer tensors + every process's RNG state, and the JSON
                                     state below in its metadata: one atomic write, so always self-consistent
    train_state.json                 step, optimizer param groups, scheduler, configs, data dir; written last
    metrics.jsonl                    one JSON object per training log line and per evaluation
    samples/                         per evaluation: a PNG grid (originals above reconstructions) or WAVs

Every file is written atomically (temporary file, fsync, rename). A run killed at any moment resumes from
``train_state.safetensors`` and loses at most the steps since that checkpoint; ``train_state.json`` is
the commit record that says which step is complete (see ``read_checkpoint_meta``).
"""

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields, is_dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import GradientAccumulationPlugin, set_seed
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from codec.audio_io import write_audio
from codec.checkpoint import model_state, save_model
from codec.config import AudioCodecConfig, CodecConfig, ImageCodecConfig, config_from_dict, config_to_dict
from codec.data import AudioFolderDataset, ImageFolderDataset, find_files, split_files, stream_loader
from codec.errors import CheckpointError
from codec.fileio import atomic_write_bytes, atomic_write_text
from codec.image_io import write_image
from codec.losses import CodecLoss, mel_distance
from codec.metrics import psnr, si_snr
from codec.model import Codec
from codec.train_state import load_optimizer_tensors, lr_factor, optimizer_tensors, rng_state, set_rng_state

STATE_NAME = "train_state.safetensors"
STATE_JSON = "train_state.json"
METRICS_NAME = "metrics.jsonl"
SAMPLES_DIR = "samples"
STATE_FORMAT = "vqcodec-train-state-v1"
RANK_DUMP_ENV = "VQCODEC_RANK_DUMP"  # tests: every rank saves its final model state to $VQCODEC_RANK_DUMP/rankN


@dataclass
class TrainConfig:
    """Optimisation, data and bookkeeping settings. A "step" is one optimizer update."""

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
    saturation_jitter: float = 0.0  # images: scale each training crop's saturation by 1 + U(-s, s), clamped
    recon_weight: float = 1.0  # image L1/L2, or audio time-domain L1
    stft_weight: float = 1.0  # audio multi-resolution STFT loss
    mel_weight: float = 1.0  # audio multi-resolution log-mel L1
    cstft_weight: float = 0.0  # audio: MSE of the power-law compressed complex STFT (phase-aware)
    # > 0: stop (evaluate, checkpoint) once this much wall time has passed in this call; the cosine then follows
    # the time or the steps, whichever is further along
    max_minutes: float = 0.0
    vq_weight: float = 1.0  # quantizer commitment loss

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
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


# Settings that may differ when a run is resumed; any other difference is an error.
RESUMABLE_CHANGES = frozenset(
    {"steps", "eval_every", "eval_items", "sample_items", "checkpoint_every", "log_every", "num_workers"}
    | {"mixed_precision", "max_minutes"}
)


def train_config_from_dict(data: dict) -> TrainConfig:
    """A TrainConfig from a (possibly partial) dict; unknown keys are an error."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown train config keys: {unknown}")
    return TrainConfig(**data)


def default_codec_config(modality: str) -> CodecConfig:
    if modality == "image":
        return ImageCodecConfig()
    if modality == "audio":
        return AudioCodecConfig()
    raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")


def _plain(obj):
    """A dataclass, dict or list -> its JSON form (tuples become lists)."""
    return json.loads(json.dumps(asdict(obj) if is_dataclass(obj) else obj))


def _merge(base: dict, override: dict) -> dict:
    """Recursive dict update: nested dicts are merged, anything else replaced."""
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """'key (a -> b)' for every leaf that differs."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k} ({va!r} -> {vb!r})")
    return out


def resolve_configs(
    modality: str,
    out_dir: str | Path,
    *,
    resume: bool = False,
    codec_overrides: dict | None = None,
    train_overrides: dict | None = None,
    init=None,
) -> tuple[CodecConfig, TrainConfig]:
    """The configs of a run: defaults (or, with ``resume``, the run's saved configs; with ``init``, that model's
    codec config) with overrides on top.

    Args:
        modality: "image" or "audio".
        out_dir: the run directory (read only when resuming).
        resume: start from the configs saved in ``out_dir``.
        codec_overrides: partial codec config dict (nested "quantizer" dict allowed).
        train_overrides: partial TrainConfig dict.
        init: a trained codec to start from (a ``Codec``, run directory or bundled name): its codec config is
            the base (overrides may change the training knobs in ``INIT_CHANGEABLE``, such as the quantizer's
            decay or dead-code threshold; ``train`` refuses any other change).

    Raises:
        CheckpointError: resume without a checkpoint; an ``init`` model that cannot be loaded.
        ValueError: unknown keys, bad values, or a "modality" override that contradicts ``modality``.
    """
    codec_overrides, train_overrides = dict(codec_overrides or {}), dict(train_overrides or {})
    if codec_overrides.get("modality", modality) != modality:
        raise ValueError(f"the codec config is for {codec_overrides['modality']!r} but --modality is {modality!r}")
    if resume and init is not None:
        raise ValueError("--init starts a new run from a model's weights; --resume continues a run: use one")
    if resume:
        meta = read_checkpoint_meta(out_dir)
        if meta["modality"] != modality:
            raise ValueError(f"{out_dir} holds a {meta['modality']} codec; cannot resume it as {modality}")
        base_codec, base_train = meta["codec_config"], meta["train_config"]
    elif init is not None:
        start = _init_model(init)
        if start.modality != modality:
            name = getattr(start, "name", "") or init
            raise ValueError(f"--init {name}: a codec for {start.modality}, not {modality}")
        base_codec, base_train = _plain(start.config), _plain(TrainConfig())
    else:
        base_codec, base_train = _plain(default_codec_config(modality)), _plain(TrainConfig())
    codec_config = config_from_dict(_merge(base_codec, {**codec_overrides, "modality": modality}))
    return codec_config, train_config_from_dict(_merge(base_train, train_overrides))


# what a fine-tuning run (init=) may change in the start model's config: training knobs, not the architecture
INIT_CHANGEABLE = {
    "tile", "tile_overlap", "chunk_frames", "chunk_context",
    "quantizer.decay", "quantizer.dead_code_threshold", "quantizer.commitment_weight",
    "quantizer.quantizer_dropout", "quantizer.kmeans_init",
}  # fmt: skip


def _init_model(init) -> Codec:
    """The codec a run starts from: a ``Codec`` as it is, else loaded (run directory or bundled name) on the CPU."""
    if isinstance(init, Codec):
        return init
    from codec import load

    return load(init, device="cpu")


# ------------------------------------------------------------------------------------------ checkpoints
def read_checkpoint_meta(run_dir: str | Path) -> dict:
    """The JSON state of the run's last complete checkpoint, after checking its files agree.

    ``train_state.safetensors`` carries its own copy of the JSON state and is written in one atomic step,
    so it is complete by construction; ``train_state.json`` is written after it. If the JSON is older (the
    run stopped between the two writes) the safetensors file is newer and complete: it is used, with a
    warning. A JSON newer than the safetensors file cannot happen in a normal run and is an error.

    Raises:
        CheckpointError: no checkpoint, a missing or unreadable state file, or files that disagree.
    """
    run_dir = Path(run_dir)
    st_path, js_path = run_dir / STATE_NAME, run_dir / STATE_JSON
    if not st_path.is_file():
        if js_path.is_file():
            raise CheckpointError(f"{st_path}: missing, but {STATE_JSON} exists: the checkpoint is incomplete")
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from ({STATE_NAME} and {STATE_JSON} missing)")
    try:
        with safe_open(st_path, framework="pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header["state"])
        if header.get("format") != STATE_FORMAT or meta.get("format") != STATE_FORMAT:
            raise ValueError(f"format is {header.get('format')!r}, expected {STATE_FORMAT!r}")
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{st_path}: unreadable training state ({e})") from None
    try:
        js_step = json.loads(js_path.read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"{js_path}: unreadable ({e}); using the state stored in {STATE_NAME}", stacklevel=2)
        return meta
    if js_step > meta["step"]:
        raise CheckpointError(
            f"{st_path}: holds step {meta['step']} but {STATE_JSON} says step {js_step}: {STATE_NAME} is "
            "inconsistent (older than the record of its own checkpoint); the checkpoint cannot be trusted"
        )
    if js_step < meta["step"]:
        warnings.warn(
            f"{js_path} (step {js_step}) is older than {STATE_NAME} (step {meta['step']}): the run stopped "
            f"while checkpointing; resuming from the complete state at step {meta['step']}",
            stacklevel=2,
        )
    return meta


def load_train_state(run_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The last checkpoint: (JSON state, named CPU tensors: "model.*", "optim.*", "rng.*")."""
    meta = read_checkpoint_meta(run_dir)
    path = Path(run_dir) / STATE_NAME
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable training state ({e})") from None
    return meta, tensors


def restore_model(model: Codec, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load the "model.*" tensors of a training state into ``model`` (weights and codebook EMA buffers)."""
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise CheckpointError(f"{where}: the saved model tensors do not fit the codec config")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


# ------------------------------------------------------------------------------------------ the trainer
class Trainer:
    """One training run; ``train()`` is the public entry point."""

    def __init__(
        self,
        modality: str,
        data_dir: Path,
        out_dir: Path,
        codec_config: CodecConfig,
        cfg: TrainConfig,
        saved: tuple[dict, dict] | None,
        init_state: dict | None = None,
    ):
        self.modality, self.data_dir, self.out_dir, self.cfg = modality, data_dir, out_dir, cfg
        self.accelerator = acc = _make_accelerator(cfg)
        self.main = acc.is_main_process
        set_seed(cfg.seed)  # identical model initialisation on every process
        model = Codec(codec_config)
        if init_state is not None:
            try:
                model.load_state_dict(init_state)
            except RuntimeError as e:
                first = str(e).strip().splitlines()[-1].strip()
                raise ValueError(f"the init model's weights do not fit the codec config: {first}") from None
        self.loss = CodecLoss(
            modality,
            image_loss=cfg.image_loss,
            sample_rate=model.sample_rate,
            recon_weight=cfg.recon_weight,
            stft_weight=cfg.stft_weight,
            mel_weight=cfg.mel_weight,
            cstft_weight=cfg.cstft_weight,
            vq_weight=cfg.vq_weight,
        ).to(acc.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.clock: tuple[float, float] | None = None  # (start, deadline) of a max_minutes budget, set by run()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        self.step, self.position = 0, 0  # optimizer steps done, items consumed from the stream
        if saved is not None:
            meta, tensors = saved
            restore_model(model, tensors, str(out_dir / STATE_NAME))
            load_optimizer_tensors(optimizer, tensors, meta["optimizer"])
            self.scheduler.load_state_dict(meta["scheduler"])
            self.step, self.position = meta["step"], meta["stream_position"]
        self.train_ds, self.eval_ds, self.eval_on = self._datasets(model)
        loader = stream_loader(self.train_ds, cfg.batch_size, cfg.seed, self.position, cfg.num_workers)
        self.model, self.optimizer, loader = acc.prepare(model, optimizer, loader)
        self.batches = iter(loader)
        self.per_step = cfg.grad_accum * cfg.batch_size * acc.num_processes
        if self.main:
            _check_dead_code_threshold(codec_config, cfg, acc.num_processes)
        if saved is not None:
            self._restore_rng_and_scaler(saved[0], saved[1])
        else:
            set_seed(cfg.seed, device_specific=True)  # different random choices on every process from here
        self.last_train: dict = {}
        self.last_eval: dict = {}

    # ------------------------------------------------------------------------------------------ setup
    def _datasets(self, model: Codec):
        files = find_files(self.data_dir, self.modality)
        train_files, val_files = split_files(files, self.cfg.val_fraction)
        eval_on = "val"
        if not val_files:
            if self.main:
                warnings.warn(f"{self.data_dir}: no held-out files; evaluating on training files", stacklevel=3)
            val_files, eval_on = train_files, "train"
        root, c, m = self.data_dir, self.cfg, model
        if self.modality == "image":
            make = partial(ImageFolderDataset, root, c.crop, m.downsample, m.channels, saturation=c.saturation_jitter)
        else:
            make = partial(AudioFolderDataset, root, c.segment_samples, m.sample_rate, m.channels, m.downsample)
        train_ds, eval_ds = make(files=train_files, train=True), make(files=val_files, train=False)
        if eval_on == "train":
            eval_ds.share_skips(train_ds)  # one warning per bad file, counted once
        return train_ds, eval_ds, eval_on

    def _restore_rng_and_scaler(self, meta: dict, tensors: dict) -> None:
        acc = self.accelerator
        if meta["world_size"] == acc.num_processes:
            prefix = f"rng.{acc.process_index}."
            set_rng_state({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        else:
            if self.main:
                warnings.warn(
                    f"resuming with {acc.num_processes} processes instead of {meta['world_size']}: "
                    "random streams are re-seeded",
                    stacklevel=3,
                )
            set_seed(self.cfg.seed + self.step, device_specific=True)
        if acc.scaler is not None and meta.get("scaler"):
            acc.scaler.load_state_dict(meta["scaler"])

    # ------------------------------------------------------------------------------------------ loop
    def run(self) -> dict:
        cfg = self.cfg
        if self.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._trim_metrics()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.main, dynamic_ncols=True, desc="train")
        window: list[torch.Tensor] = []
        saved_at = evaluated_at = self.step if self.step else -1
        deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else None
        self.clock = (time.monotonic(), deadline) if deadline is not None else None
        try:
            while self.step < cfg.steps:
                window.append(self._train_step())
                self.step += 1
                self.position += self.per_step
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self._log(torch.stack(window).mean(dim=0), bar)
                    window = []
                    if deadline is not None and self._out_of_time(deadline):
                        break
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    self.evaluate()
                    evaluated_at = self.step
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
                    saved_at = self.step
        finally:
            bar.close()  # finishes the bar's line before any message that follows
        if evaluated_at != self.step:
            self.evaluate()
        if saved_at != self.step:
            self.save_checkpoint()
        self._dump_rank_state()
        skipped = {**self.train_ds.skipped_files, **self.eval_ds.skipped_files}
        result = {"step": self.step, "skipped_files": len(skipped)}
        result.update({f"train_{k}": v for k, v in self.last_train.items() if k not in ("step", "kind")})
        result.update(
            {k if k == "eval_on" else f"eval_{k}": v for k, v in self.last_eval.items() if k not in ("step", "kind")}
        )
        return result

    def _lr_factor(self, step: int) -> float:
        """Warm-up then cosine over ``steps``; under a max_minutes budget the cosine follows whichever of the steps
        or the minutes is further along, so the rate has decayed when the time is up."""
        cfg = self.cfg
        if self.clock is not None:
            start, deadline = self.clock
            step = max(step, int(cfg.steps * min(1.0, (time.monotonic() - start) / (deadline - start))))
        return lr_factor(step, cfg.warmup, cfg.steps, cfg.min_lr_ratio)

    def _out_of_time(self, deadline: float) -> bool:
        """Whether any process has passed the wall-clock deadline (a collective: all stop together)."""
        late = torch.tensor(float(time.monotonic() > deadline), device=self.accelerator.device)
        return bool(self.accelerator.reduce(late, reduction="sum") > 0)

    def _train_step(self) -> torch.Tensor:
        """One optimizer step over grad_accum micro-batches; returns this process's mean statistics (K,)."""
        acc, cfg = self.accelerator, self.cfg
        self.model.train()
        stats = []
        for _ in range(cfg.grad_accum):
            batch = next(self.batches)
            self.train_ds.report(batch["bad"])
            x = batch["x"]
            with acc.accumulate(self.model):
                out = self.model(x)
                total, terms = self.loss(out.x_hat, x, out.vq.loss)
                acc.backward(total)
                if acc.sync_gradients:
                    if cfg.grad_clip > 0:
                        acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
            stats.append(self._batch_stats(total, terms, out, x))
        return torch.stack(stats).mean(dim=0)

    def _batch_stats(self, total, terms, out, x) -> torch.Tensor:
        quality = self._quality(out.x_hat.detach(), x).mean()
        values = [total.detach().float(), *[terms.get(k, torch.zeros(())).float() for k in self._term_names()]]
        values += [quality, out.vq.usage.float().mean(), out.vq.perplexity.float().mean()]
        return torch.stack([v.to(x.device) for v in values])

    def _term_names(self) -> list[str]:
        return ["recon", "vq"] if self.modality == "image" else ["recon", "stft", "mel", "cstft", "vq"]

    def _stat_names(self) -> list[str]:
        return ["loss", *self._term_names(), self._quality_name(), "usage", "perplexity"]

    def _quality_name(self) -> str:
        return "psnr" if self.modality == "image" else "si_snr"

    def _quality(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.modality == "image":
            return psnr(x_hat.float().clamp(0, 1), x)
        return si_snr(x_hat.float().clamp(-1, 1), x)

    def _log(self, local_means: torch.Tensor, bar) -> None:
        means = self.accelerator.reduce(local_means, reduction="mean")  # collective: every process logs
        row = {"step": self.step, "kind": "train"}
        row.update({k: round(float(v), 6) for k, v in zip(self._stat_names(), means, strict=True)})
        row["lr"] = self.scheduler.get_last_lr()[0]
        row["skipped"] = self.train_ds.skipped
        self.last_train = row
        if self.main:
            q = self._quality_name()
            bar.set_postfix(loss=f"{row['loss']:.4f}", **{q: f"{row[q]:.2f}"}, usage=f"{row['usage']:.2f}")
            self._append_metrics(row)

    # ------------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> None:
        """Held-out metrics, written to metrics.jsonl, and reconstructions into samples/ (main process)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.main:
            self.last_eval = self._evaluate_main()
            self._append_metrics(self.last_eval)
        acc.wait_for_everyone()

    def _evaluate_main(self) -> dict:
        acc, cfg = self.accelerator, self.cfg
        model = acc.unwrap_model(self.model)
        n = min(cfg.eval_items, len(self.eval_ds))
        items = [self.eval_ds[i] for i in range(n)]
        self.eval_ds.report([b for it in items for b in it["bad"]])
        xs, x_hats, tokens, losses = [], [], [], []
        model.eval()
        try:
            for i in range(0, n, cfg.batch_size):
                x = torch.stack([it["x"] for it in items[i : i + cfg.batch_size]]).to(acc.device)
                with acc.autocast():
                    out = model(x)
                losses.append(self.loss(out.x_hat, x, out.vq.loss)[0].float() * x.shape[0])
                xs.append(x)
                x_hats.append(out.x_hat.float().clamp(0 if self.modality == "image" else -1, 1))
                tokens.append(out.tokens)
        finally:
            model.train()
        x, x_hat, tok = torch.cat(xs), torch.cat(x_hats), torch.cat(tokens)
        row = {"step": self.step, "kind": "eval", "eval_on": self.eval_on, "items": n}
        row["loss"] = round(float(torch.stack(losses).sum() / n), 6)
        if self.modality == "image":
            row["psnr"] = round(float(psnr(x_hat, x).mean()), 4)
        else:
            row["si_snr"] = round(float(si_snr(x_hat, x).mean()), 4)
            row["mel_distance"] = round(float(mel_distance(x_hat, x, model.sample_rate).mean()), 6)
        row["usage"] = round(_code_usage(tok, model.residual, model.codebook_size), 6)
        self._write_samples(x, x_hat, model)
        return row

    def _write_samples(self, x: torch.Tensor, x_hat: torch.Tensor, model: Codec) -> None:
        k = min(self.cfg.sample_items, x.shape[0])
        if k == 0:
            return
        folder = self.out_dir / SAMPLES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"step{self.step:07d}"
        if self.modality == "image":
            top = torch.cat(list(x[:k].float().cpu()), dim=-1)  # (C, H, k*W)
            bottom = torch.cat(list(x_hat[:k].cpu()), dim=-1)
            write_image(folder / f"{stem}.png", torch.cat([top, bottom], dim=-2))
            return
        for i in range(k):
            write_audio(folder / f"{stem}_{i}_original.wav", x[i].float().cpu(), model.sample_rate)
            write_audio(folder / f"{stem}_{i}_reconstruction.wav", x_hat[i].cpu(), model.sample_rate)

    # ------------------------------------------------------------------------------------------ files
    def save_checkpoint(self) -> None:
        """Model + training state, atomically, by the main process; every process takes part."""
        acc = self.accelerator
        rng = rng_state()
        if acc.num_processes > 1:  # gather every process's RNG (fixed-size uint8 tensors, no pickling)
            rng = {k: acc.gather(v.to(acc.device)[None]).cpu() for k, v in rng.items()}
        else:
            rng = {k: v[None] for k, v in rng.items()}
        acc.wait_for_everyone()
        if self.main:
            model = acc.unwrap_model(self.model)
            opt_tensors, opt_meta = optimizer_tensors(self.optimizer)
            meta = {
                "format": STATE_FORMAT,
                "step": self.step,
                "modality": self.modality,
                "data_dir": str(self.data_dir.resolve()),
                "world_size": acc.num_processes,
                "stream_position": self.position,
                "codec_config": _plain(config_to_dict(model.config)),
                "train_config": _plain(self.cfg),
                "optimizer": opt_meta,
                "scheduler": _plain(self.scheduler.state_dict()),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "skipped_files": self.train_ds.skipped_files,
            }
            tensors = {f"model.{k}": v for k, v in model_state(model).items()}
            tensors.update(opt_tensors)
            for key, stacked in rng.items():
                tensors.update({f"rng.{r}.{key}": stacked[r].contiguous() for r in range(stacked.shape[0])})
            text = json.dumps(meta, indent=2) + "\n"
            save_model(self.out_dir, model)  # the model for users; resuming reads the state file below
            header = {"format": STATE_FORMAT, "step": str(self.step), "state": text}
            atomic_write_bytes(self.out_dir / STATE_NAME, save(tensors, metadata=header))
            atomic_write_text(self.out_dir / STATE_JSON, text)  # last: the commit record
        acc.wait_for_everyone()

    def _append_metrics(self, row: dict) -> None:
        with open(self.out_dir / METRICS_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def _trim_metrics(self) -> None:
        """On resume, drop rows logged after the checkpoint (those steps are trained again)."""
        path = self.out_dir / METRICS_NAME
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))

    def _dump_rank_state(self) -> None:
        folder = os.environ.get(RANK_DUMP_ENV)
        if folder:
            model = self.accelerator.unwrap_model(self.model)
            data = save(model_state(model), metadata={"step": str(self.step)})
            atomic_write_bytes(Path(folder) / f"rank{self.accelerator.process_index}.safetensors", data)


def _code_usage(tokens: torch.Tensor, residual: bool, codebook_size: int) -> float:
    """Mean over quantizer stages of the fraction of codes used at least once in ``tokens``."""
    per_stage = tokens.movedim(1, 0).reshape(tokens.shape[1], -1) if residual else tokens.reshape(1, -1)
    return float(np.mean([row.unique().numel() / codebook_size for row in per_stage]))


def _make_accelerator(cfg: TrainConfig) -> Accelerator:
    cpu = not torch.cuda.is_available()  # also makes torchrun / accelerate launch use gloo on CPU
    precision = cfg.mixed_precision
    if precision == "fp16" and cpu:
        warnings.warn("fp16 mixed precision needs a CUDA GPU; training in fp32 (bf16 works on CPU)", stacklevel=3)
        precision = "no"
    return Accelerator(
        mixed_precision=precision,
        cpu=cpu,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=cfg.grad_accum, sync_with_dataloader=False),
        step_scheduler_with_optimizer=False,
    )


def _check_dead_code_threshold(codec_config: CodecConfig, cfg: TrainConfig, processes: int) -> None:
    """Warn when codes cannot stay alive: a code's EMA count settles near (vectors per update) / K when every
    code is used equally, so a dead-code threshold above that resets healthy codes at every step."""
    q, f = codec_config.quantizer, (codec_config.downsample if codec_config.modality == "image" else None)
    per_item = (cfg.crop // f) ** 2 if f else cfg.segment_samples // codec_config.hop
    mean_count = cfg.batch_size * processes * per_item / q.codebook_size
    if q.dead_code_threshold > 0.5 * mean_count:
        warnings.warn(
            f"dead_code_threshold {q.dead_code_threshold} is high for {cfg.batch_size * processes * per_item} "
            f"vectors per update and {q.codebook_size} codes (about {mean_count:.2f} per code): healthy codes will "
            f"be reset as dead; keep it under {0.5 * mean_count:.2g} (about {0.2 * mean_count:.2g} leaves a margin) "
            "or use a larger batch",
            stacklevel=3,
        )


def train(
    modality: str,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    codec_config: CodecConfig | None = None,
    train_config: TrainConfig | None = None,
    resume: bool = False,
    init=None,
) -> dict:
    """Train a codec on a folder of images or audio files.

    Args:
        modality: "image" or "audio".
        data_dir: the folder, scanned recursively; a hash of each path holds out ``val_fraction`` of the files.
        out_dir: the run directory (see the module docstring); created if needed.
        codec_config: the model; None = the defaults (or, with ``resume``, the run's saved config).
        train_config: None = the defaults (or, with ``resume``, the run's saved config).
        resume: continue from the run's last checkpoint. The codec config and the train config (apart from
            RESUMABLE_CHANGES such as ``steps``) must equal the saved ones.
        init: start from a trained codec's weights (a ``Codec``, run directory or bundled name such as "image"),
            with a fresh optimizer and schedule: fine-tuning, e.g. the bundled model on your own data. Its
            codebooks are already initialised (no k-means); ``codec_config`` None means the model's own.

    Returns:
        Final metrics: "step", "skipped_files", the last training log as "train_*" (loss, psnr or si_snr,
        usage, ...) and the last evaluation as "eval_*" (psnr, or si_snr and mel_distance, usage, ...).

    Raises:
        CheckpointError: ``resume`` without a checkpoint, an unreadable one, or a fresh run in a directory
            that holds one.
        ValueError: configs that do not fit the modality or the saved run; bad settings; ``init`` together with
            ``resume``, or an ``init`` model whose weights do not fit ``codec_config``.
        FileNotFoundError: no data directory.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if modality not in ("image", "audio"):
        raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")
    if resume and init is not None:
        raise ValueError("init starts a new run from a model's weights; resume continues a run: use one")
    init_state = None
    if init is not None:
        start = _init_model(init)
        if start.modality != modality:
            raise ValueError(f"init: a codec for {start.modality}, not {modality}")
        codec_config = codec_config or start.config
        changed = [
            d
            for d in _differences(_plain(start.config), _plain(codec_config))
            if d.split(" ")[0] not in INIT_CHANGEABLE
        ]
        if changed:
            raise ValueError(
                f"init: the codec config changes the start model's architecture ({'; '.join(changed)}); only "
                f"{', '.join(sorted(INIT_CHANGEABLE))} may change"
            )
        init_state = {k: v.detach().cpu().clone() for k, v in start.state_dict().items()}
        del start
    saved = None
    if resume:
        saved = load_train_state(out_dir)
        codec_config, train_config = _check_resume(saved[0], modality, data_dir, codec_config, train_config)
    elif (out_dir / STATE_JSON).exists() or (out_dir / STATE_NAME).exists():
        raise CheckpointError(f"{out_dir} already holds a training run; resume it (--resume) or pick another --out")
    codec_config = codec_config or default_codec_config(modality)
    train_config = train_config or TrainConfig()
    if codec_config.modality != modality:
        raise ValueError(f"the codec config is for {codec_config.modality!r} data, not {modality!r}")
    owns_group = not (dist.is_available() and dist.is_initialized())
    owns_state = not AcceleratorState._shared_state  # a caller's own Accelerator is left alone
    trainer = None
    try:
        trainer = Trainer(modality, data_dir, out_dir, codec_config, train_config, saved, init_state)
        saved = init_state = None  # free the loaded tensors
        return trainer.run()
    finally:
        if trainer is not None and trainer.accelerator.num_processes > 1:
            if owns_group and dist.is_initialized():
                dist.destroy_process_group()
        elif owns_state:  # let a later train() in this process pick other accelerate settings
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()


def _check_resume(meta, modality, data_dir, codec_config, train_config) -> tuple[CodecConfig, TrainConfig]:
    if meta["modality"] != modality:
        raise ValueError(f"the run holds a {meta['modality']} codec; cannot resume it as {modality}")
    given = _plain(config_to_dict(codec_config)) if codec_config is not None else meta["codec_config"]
    diff = _differences(meta["codec_config"], given)
    if diff:
        raise ValueError(f"cannot resume with another codec config; it differs in {', '.join(diff)}")
    given = _plain(train_config) if train_config is not None else meta["train_config"]
    diff = [d for d in _differences(meta["train_config"], given) if d.split(" ")[0] not in RESUMABLE_CHANGES]
    if diff:
        raise ValueError(
            f"cannot resume with another train config; it differs in {', '.join(diff)} "
            f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change)"
        )
    if str(Path(data_dir).resolve()) != meta["data_dir"]:
        warnings.warn(f"resuming on {data_dir}; the run was trained on {meta['data_dir']}", stacklevel=3)
    return config_from_dict(meta["codec_config"]), train_config_from_dict(given)
