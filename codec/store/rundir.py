"""Run directories: ``config.json`` + ``model.safetensors``, written atomically, loaded safely.

Model-agnostic: codecs (``codec.core.checkpoint``) and priors (``prior.checkpoint``) both store themselves
here, each passing its own config dict and builder. Weights are read with safetensors only (never pickle).
A model's identity (``model_hash``) is a SHA-256 over its config and every tensor (name, dtype, shape,
bytes), so two models hash equal only if they compute alike.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from codec.errors import CheckpointError
from codec.store.files import atomic_write_bytes, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, ready for safetensors (bool buffers kept as bool)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def state_hash(config: dict, model: torch.nn.Module) -> str:
    """Hex SHA-256 of a config dict and a module's tensors; independent of device and of how it was saved."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    for name, t in sorted(model_state(model).items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_run(run_dir: str | Path, model: torch.nn.Module, config: dict, fmt: str) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``run_dir`` (created if needed), atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / WEIGHTS_NAME, save(model_state(model), metadata={"format": fmt}))
    atomic_write_text(run_dir / CONFIG_NAME, json.dumps(config, indent=2) + "\n")


def load_run(path: str | Path, kind: str, build: Callable[[dict], torch.nn.Module]) -> torch.nn.Module:
    """Build a module from a run directory's config and load its weights, on the CPU.

    Args:
        path: a directory holding ``config.json`` and ``model.safetensors``.
        kind: what it should hold ("codec", "prior"), for messages.
        build: config dict -> module; raises ValueError / TypeError on a bad config.

    Raises:
        CheckpointError: missing directory or files, unreadable JSON, or weights that do not fit the config.
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a {kind} directory (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    cfg_path, w_path = run_dir / CONFIG_NAME, run_dir / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{run_dir}: missing {p.name}")
    try:
        model = build(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid {kind} config: {e}") from None
    try:
        state = load_file(w_path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path}: unreadable weights: {e}") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{w_path}: weights do not match {CONFIG_NAME} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    wrong = [k for k in expected if expected[k].shape != state[k].shape]
    if wrong:
        raise CheckpointError(
            f"{w_path}: tensor {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
            f"config expects {tuple(expected[wrong[0]].shape)}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model


def model_hash(model: torch.nn.Module) -> str:
    """Hex SHA-256 identity of a model whose ``config`` is a dataclass (a codec or a prior): config + tensors.

    A config with an ``identity()`` method is hashed as that dict (fields added later, left out while they hold the
    values that reproduce older models: their hashes stay the same); otherwise as all its fields.
    """
    identity = getattr(model.config, "identity", None)
    return state_hash(identity() if identity is not None else asdict(model.config), model)
