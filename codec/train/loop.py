"""The one training loop of vqcodec, for codecs and priors alike, on accelerate: CPU, one or many GPUs, many nodes.

What differs between models is a ``TrainTask``: its model, data, loss and per-batch statistics, held-out
evaluation, and the files a user loads. The loop owns everything else, the same for every task: AdamW with
linear warm-up and cosine decay, gradient accumulation and clipping, mixed precision, the progress bar,
``metrics.jsonl``, checkpoints (``codec.train.state``: model, optimizer, scheduler, every process's RNG state and
what the task trains beside the model, e.g. a discriminator: ``extra_tensors``) and resuming. It never asks what
kind of model it trains.

The run directory::

    config.json, model.safetensors   the model as the task saves it for users (``codec.load``, ``prior.load``)
    train_state.safetensors          the checkpoint (see ``codec.train.state``), train_state.json its commit record
    metrics.jsonl                    one JSON object per training log line ("kind": "train") and evaluation ("eval")
    (the task's own files, e.g. samples/)

Resuming: ``resume=True`` continues from the last checkpoint and is an error when the directory holds none;
``resume=False`` is an error when it holds one. A run killed at any moment resumes and ends bitwise identical to
an uninterrupted run (same machine, same seed): the data stream restarts at its position, and every process's RNG
state is restored.

Launch it plainly (one process, GPU when there is one, else CPU) or under ``accelerate launch`` / ``torchrun``
for data parallelism (gloo on CPU).
"""

import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import GradientAccumulationPlugin, set_seed
from safetensors.torch import save
from torch import nn
from tqdm.auto import tqdm

from codec.errors import CheckpointError
from codec.store.files import atomic_write_bytes, atomic_write_text
from codec.store.rundir import model_state
from codec.train.state import (
    STATE_NAME,
    has_checkpoint,
    load_optimizer_tensors,
    load_train_state,
    lr_factor,
    optimizer_tensors,
    restore_model,
    rng_state,
    set_rng_state,
    write_train_state,
)

METRICS_NAME = "metrics.jsonl"
RANK_DUMP_ENV = "VQCODEC_RANK_DUMP"  # tests: every rank saves its final model state to $VQCODEC_RANK_DUMP/rankN


@dataclass
class LoopSettings:
    """What the loop needs from a task's training config (each task maps its own config onto these)."""

    steps: int
    batch_size: int  # per process and micro-batch
    lr: float
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0  # for the parameter groups that do not set their own
    warmup: int = 0  # linear warm-up steps, then cosine decay to min_lr_ratio * lr at ``steps``
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    grad_accum: int = 1  # micro-batches per step
    mixed_precision: str = "no"  # "no", "fp16" (CUDA only), "bf16", or "auto" (bf16 where a CUDA GPU has it)
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    seed: int = 0
    max_minutes: float = 0.0  # > 0: stop (evaluate, checkpoint) once this much wall time has passed in this call


class TrainTask:
    """What the loop trains. Subclasses set ``kind`` and ``stat_names`` and implement the methods below.

    Attributes:
        settings: the loop's settings.
        out_dir: the run directory (set by ``run_training``).
        step: optimizer steps done before the current one (set by the loop before every step).
    """

    kind = "model"  # the progress bar's label; recorded in the checkpoint, checked on resume
    stat_names: tuple[str, ...] = ("loss",)  # the values ``loss`` returns per micro-batch, logged as means
    progress_stats: tuple[str, ...] = ("loss",)  # those shown on the progress bar

    def __init__(self, settings: LoopSettings):
        self.settings = settings
        self.out_dir = Path()
        self.step = 0

    def build_model(self) -> nn.Module:
        """A fresh model (the loop seeds the RNGs first, so every process builds the same one)."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module):
        """What AdamW optimises: parameters, or groups of them (a group may set its own weight_decay)."""
        return model.parameters()

    def start(self, model: nn.Module, accelerator: Accelerator) -> None:
        """Called once the model holds its starting (or resumed) weights, before data is drawn: set up datasets."""

    def train_loader(self, position: int) -> torch.utils.data.DataLoader:
        """An endless DataLoader of training batches whose first item is item ``position`` of the data stream."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(scalar loss to minimise, (len(stat_names),) float tensor of this micro-batch's statistics)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, accelerator: Accelerator, step: int) -> dict:
        """Held-out metrics (main process, eval mode, no gradients); written to metrics.jsonl."""
        return {}

    def save_model(self, out_dir: Path, model: nn.Module) -> None:
        """Write the model a user loads (main process, at every checkpoint)."""
        raise NotImplementedError

    def state(self) -> dict:
        """JSON the run needs to resume (configs, data), stored in every checkpoint."""
        return {}

    def log_extras(self) -> dict:
        """Fields added to every training log line."""
        return {}

    def extra_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """State the task trains beside the model (e.g. a discriminator and its optimizer), for the checkpoint:
        (named CPU tensors, whose names must not start with "model.", "optim." or "rng."; their JSON part)."""
        return {}, {}

    def restore_extra(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore what ``extra_tensors`` saved (called after ``start`` on resume); ``meta`` as it returned it."""


def make_accelerator(settings: LoopSettings) -> Accelerator:
    cpu = not torch.cuda.is_available()  # also makes torchrun / accelerate launch use gloo on CPU
    precision = settings.mixed_precision
    if precision == "auto":
        precision = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
    if precision == "fp16" and cpu:
        warnings.warn("fp16 mixed precision needs a CUDA GPU; training in fp32 (bf16 works on CPU)", stacklevel=3)
        precision = "no"
    return Accelerator(
        mixed_precision=precision,
        cpu=cpu,
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=settings.grad_accum, sync_with_dataloader=False
        ),
        step_scheduler_with_optimizer=False,
    )


class Trainer:
    """One run of the loop; ``run_training`` is the entry point."""

    def __init__(self, task: TrainTask, out_dir: Path, saved: tuple[dict, dict] | None, progress: bool = True):
        self.task, self.out_dir, self.progress, s = task, out_dir, progress, task.settings
        self.lines = False  # plain progress lines instead of a bar (set by run: stderr is not a terminal)
        self.accelerator = acc = make_accelerator(s)
        self.main = acc.is_main_process
        set_seed(s.seed)  # identical model initialisation on every process
        model = task.build_model()
        optimizer = torch.optim.AdamW(task.param_groups(model), lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
        self.clock: tuple[float, float] | None = None  # (start, deadline) of a max_minutes budget, set by run()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        self.step, self.position = 0, 0  # optimizer steps done, items consumed from the data stream
        if saved is not None:
            meta, tensors = saved
            restore_model(model, tensors, str(out_dir / STATE_NAME))
            load_optimizer_tensors(optimizer, tensors, meta["optimizer"])
            self.scheduler.load_state_dict(meta["scheduler"])
            self.step, self.position = meta["step"], meta["stream_position"]
        task.step = self.step
        task.start(model, acc)
        if saved is not None:
            task.restore_extra(saved[1], saved[0].get("task_extra", {}))
        loader = task.train_loader(self.position)
        self.model, self.optimizer, loader = acc.prepare(model, optimizer, loader)
        self.batches = iter(loader)
        self.per_step = s.grad_accum * s.batch_size * acc.num_processes
        if saved is not None:
            self._restore_rng_and_scaler(*saved)
        else:
            set_seed(s.seed, device_specific=True)  # different random choices on every process from here
        self.last_train: dict = {}
        self.last_eval: dict = {}

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
            set_seed(self.task.settings.seed + self.step, device_specific=True)
        if acc.scaler is not None and meta.get("scaler"):
            acc.scaler.load_state_dict(meta["scaler"])

    # ------------------------------------------------------------------------------------------ loop
    def run(self) -> dict:
        s = self.task.settings
        if self.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._trim_metrics()
        # a bar on a terminal; elsewhere (a log file, a pipe) one plain line per log and evaluation step
        show = self.main and self.progress
        self.lines = show and not sys.stderr.isatty()
        bar = tqdm(
            total=s.steps, initial=self.step, disable=not show or self.lines, dynamic_ncols=True, desc=self.task.kind
        )
        window: list[torch.Tensor] = []
        started_at = self.step
        saved_at = evaluated_at = self.step if self.step else -1
        deadline = time.monotonic() + 60 * s.max_minutes if s.max_minutes else None
        self.clock = (time.monotonic(), deadline) if deadline is not None else None
        try:
            while self.step < s.steps:
                self.task.step = self.step
                window.append(self._train_step())
                self.step += 1
                self.position += self.per_step
                bar.update(1)
                if self.step % s.log_every == 0 or self.step == s.steps:
                    self._log(torch.stack(window).mean(dim=0), bar)
                    window = []
                    if deadline is not None and self._out_of_time(deadline):
                        break
                if self.step % s.eval_every == 0 or self.step == s.steps:
                    self.evaluate()
                    evaluated_at = self.step
                if self.step % s.checkpoint_every == 0 or self.step == s.steps:
                    self.save_checkpoint()
                    saved_at = self.step
        finally:
            bar.close()  # finishes the bar's line before any message that follows
        if evaluated_at != self.step:
            self.evaluate()
        elif self.step == started_at and not self.last_eval:  # nothing left to train: evaluate for the report
            self.evaluate(write=False)
        if saved_at != self.step:
            self.save_checkpoint()
        self._dump_rank_state()
        return {"step": self.step, "train": self.last_train, "eval": self.last_eval}

    def _lr_factor(self, step: int) -> float:
        """Warm-up then cosine over ``steps``; under a max_minutes budget the cosine follows whichever of the steps
        or the minutes is further along, so the rate has decayed when the time is up."""
        s = self.task.settings
        if self.clock is not None:
            start, deadline = self.clock
            step = max(step, int(s.steps * min(1.0, (time.monotonic() - start) / (deadline - start))))
        return lr_factor(step, s.warmup, s.steps, s.min_lr_ratio)

    def _out_of_time(self, deadline: float) -> bool:
        """Whether any process has passed the wall-clock deadline (a collective: all stop together)."""
        late = torch.tensor(float(time.monotonic() > deadline), device=self.accelerator.device)
        return bool(self.accelerator.reduce(late, reduction="sum") > 0)

    def _train_step(self) -> torch.Tensor:
        """One optimizer step over grad_accum micro-batches; returns this process's mean statistics (K,)."""
        acc, s = self.accelerator, self.task.settings
        self.model.train()
        stats = []
        for _ in range(s.grad_accum):
            batch = next(self.batches)
            with acc.accumulate(self.model):
                total, values = self.task.loss(self.model, batch)
                acc.backward(total)
                if acc.sync_gradients:
                    if s.grad_clip > 0:
                        acc.clip_grad_norm_(self.model.parameters(), s.grad_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
            stats.append(values.detach().float().to(acc.device))
        return torch.stack(stats).mean(dim=0)

    def _log(self, local_means: torch.Tensor, bar) -> None:
        means = self.accelerator.reduce(local_means, reduction="mean")  # collective: every process logs
        row = {"step": self.step, "kind": "train"}
        row.update({k: round(float(v), 6) for k, v in zip(self.task.stat_names, means, strict=True)})
        row["lr"] = self.scheduler.get_last_lr()[0]
        row.update(self.task.log_extras())
        self.last_train = row
        if self.main:
            shown = {k: f"{row[k]:.4g}" for k in self.task.progress_stats}
            bar.set_postfix(shown)
            if self.lines:
                total = self.task.settings.steps
                print(f"{self.task.kind} step {self.step}/{total}: " + ", ".join(f"{k} {v}" for k, v in shown.items()),
                      file=sys.stderr, flush=True)  # fmt: skip
            self._append_metrics(row)

    @torch.no_grad()
    def evaluate(self, write: bool = True) -> None:
        """The task's held-out metrics on the main process, appended to metrics.jsonl."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.main:
            model = acc.unwrap_model(self.model)
            model.eval()
            try:
                row = self.task.evaluate(model, acc, self.step)
            finally:
                model.train()
            self.last_eval = {"step": self.step, "kind": "eval", **row}
            if write:
                self._append_metrics(self.last_eval)
            if self.lines:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
                print(f"{self.task.kind} step {self.step} held-out: {shown}", file=sys.stderr, flush=True)
        acc.wait_for_everyone()

    # ------------------------------------------------------------------------------------------ files
    def save_checkpoint(self) -> None:
        """The model and the training state, atomically, by the main process; every process takes part."""
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
            extra_tensors, extra_meta = self.task.extra_tensors()
            meta = {
                "kind": self.task.kind,
                "step": self.step,
                "world_size": acc.num_processes,
                "stream_position": self.position,
                "optimizer": opt_meta,
                "scheduler": json.loads(json.dumps(self.scheduler.state_dict())),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                **self.task.state(),
            }
            if extra_tensors or extra_meta:
                meta["task_extra"] = extra_meta
            tensors = {f"model.{k}": v for k, v in model_state(model).items()}
            tensors.update(opt_tensors)
            tensors.update(extra_tensors)
            for key, stacked in rng.items():
                tensors.update({f"rng.{r}.{key}": stacked[r].contiguous() for r in range(stacked.shape[0])})
            self.task.save_model(self.out_dir, model)  # the model for users; resuming reads the state file
            write_train_state(self.out_dir, meta, tensors)
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


def load_checkpoint_for(task_kind: str, out_dir: Path, resume: bool) -> tuple[dict, dict] | None:
    """The checkpoint to resume from (None for a fresh run), after the checks every task shares.

    Raises:
        CheckpointError: ``resume`` without a checkpoint, an unreadable one, one of another kind of run, or a fresh
            run in a directory that holds one.
    """
    if not resume:
        if has_checkpoint(out_dir):
            raise CheckpointError(f"{out_dir} already holds a training run; resume it (--resume) or pick another --out")
        return None
    saved = load_train_state(out_dir)
    kind = saved[0].get("kind", "codec")  # checkpoints from before priors shared the loop were all codecs'
    if kind != task_kind:
        raise CheckpointError(f"{out_dir} holds a {kind} training run, not a {task_kind} one")
    return saved


def run_training(task: TrainTask, out_dir: str | os.PathLike, resume: bool = False, progress: bool = True) -> dict:
    """Train ``task`` into ``out_dir`` (see the module docstring); returns {"step", "train": last log row, "eval":
    last evaluation}. ``progress``: show the progress bar (main process).

    Raises:
        CheckpointError: see ``load_checkpoint_for``.
    """
    out_dir = task.out_dir = Path(out_dir)
    saved = load_checkpoint_for(task.kind, out_dir, resume)
    owns_group = not (dist.is_available() and dist.is_initialized())
    owns_state = not AcceleratorState._shared_state  # a caller's own Accelerator is left alone
    trainer = None
    try:
        trainer = Trainer(task, out_dir, saved, progress)
        saved = None  # free the loaded tensors
        return trainer.run()
    finally:
        if trainer is not None and trainer.accelerator.num_processes > 1:
            if owns_group and dist.is_initialized():
                dist.destroy_process_group()
        elif owns_state:  # let a later run in this process pick other accelerate settings
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
