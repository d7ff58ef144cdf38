"""Model run directories: ``config.json`` + ``model.safetensors``, written atomically, loaded safely.

Weights are read with safetensors only (never pickle). A model's identity is ``model_hash``: a SHA-256 over
its config and every tensor (name, dtype, shape, bytes), so two models hash equal only if they decode alike.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from codec.config import config_from_dict, config_to_dict
from codec.errors import CheckpointError
from codec.fileio import atomic_write_bytes, atomic_write_text
from codec.model import Codec

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, ready for safetensors (bool buffers kept as bool)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def model_hash(model: Codec) -> str:
    """Hex SHA-256 of the model's config and tensors; independent of device and of how it was saved."""
    h = hashlib.sha256()
    h.update(json.dumps(config_to_dict(model.config), sort_keys=True).encode())
    for name, t in sorted(model_state(model).items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_model(run_dir: str | Path, model: Codec) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``run_dir`` (created if needed), atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / WEIGHTS_NAME, save(model_state(model), metadata={"format": "vqcodec"}))
    atomic_write_text(run_dir / CONFIG_NAME, json.dumps(config_to_dict(model.config), indent=2) + "\n")


def load_model(path: str | Path, device: str | torch.device | None = None) -> Codec:
    """Load a codec from a run directory.

    Args:
        path: a directory holding ``config.json`` and ``model.safetensors``.
        device: where to put the model; None picks CUDA when available, else CPU.

    Raises:
        CheckpointError: missing directory or files, unreadable JSON, or weights that do not fit the config.
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a model directory (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    cfg_path, w_path = run_dir / CONFIG_NAME, run_dir / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{run_dir}: missing {p.name}")
    try:
        config = config_from_dict(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid codec config: {e}") from None
    model = Codec(config)
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
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()
