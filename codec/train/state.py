"""The one checkpoint format of every training run (codecs and priors), and the state it holds: optimizer state as
named tensors, every process's RNG states, the learning-rate schedule. Safetensors + JSON only (no pickle).

    train_state.safetensors   "model.*" (weights and buffers), "optim.*" (optimizer tensors), "rng.<rank>.*"
                              (each process's RNG states), and the task's own (e.g. "adversary.*", a
                              discriminator and its optimizer); its metadata holds the JSON state below: one
                              atomic write, so always self-consistent
    train_state.json          the JSON state (step, optimizer groups, scheduler, the task's configs); written
                              last: the commit record that says which step is complete (``read_checkpoint_meta``)
"""

import json
import math
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from codec.errors import CheckpointError
from codec.store.files import atomic_write_bytes, atomic_write_text

STATE_NAME = "train_state.safetensors"
STATE_JSON = "train_state.json"
STATE_FORMAT = "vqcodec-train-state-v1"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (named tensors "optim.<param>.<key>", JSON part: param groups and scalars)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entry in sd["state"].items():
        for key, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{key}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = v
    return tensors, {"param_groups": json.loads(json.dumps(sd["param_groups"])), "scalars": scalars}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict, saved: dict) -> None:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = v
    for pid, entry in saved["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in saved["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _as_bytes(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8).copy())


def rng_state() -> dict[str, torch.Tensor]:
    """This process's torch / numpy / python (/ CUDA) RNG states as uint8 tensors of fixed sizes."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": _as_bytes(np.asarray(keys, dtype="<u4")),
        "numpy_extra": _as_bytes(np.array([pos, has_gauss, cached], dtype="<f8")),
        "python": _as_bytes(np.asarray(internal, dtype="<u4")),
        "python_extra": _as_bytes(np.array([version, gauss is not None, gauss or 0.0], dtype="<f8")),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_extra"].numpy().view("<f8")
    np.random.set_state(("MT19937", state["numpy"].numpy().view("<u4").copy(), int(pos), int(has_gauss), cached))
    version, has, gauss = state["python_extra"].numpy().view("<f8")
    internal = tuple(int(v) for v in state["python"].numpy().view("<u4"))
    random.setstate((int(version), internal, float(gauss) if has else None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------ checkpoint files
def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds (any part of) a training checkpoint."""
    return (Path(run_dir) / STATE_JSON).exists() or (Path(run_dir) / STATE_NAME).exists()


def write_train_state(run_dir: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write a checkpoint: the tensors with ``meta`` in their header, then ``meta`` as the commit record."""
    run_dir = Path(run_dir)
    text = json.dumps({"format": STATE_FORMAT, **meta}, indent=2) + "\n"
    header = {"format": STATE_FORMAT, "step": str(meta["step"]), "state": text}
    atomic_write_bytes(run_dir / STATE_NAME, save(tensors, metadata=header))
    atomic_write_text(run_dir / STATE_JSON, text)  # last: the commit record


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


def restore_model(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load the "model.*" tensors of a training state into ``model`` (weights and buffers, e.g. codebook EMAs)."""
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise CheckpointError(f"{where}: the saved model tensors do not fit the model's config")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
