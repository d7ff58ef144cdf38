"""Prior run directories, like the codec's: ``config.json`` + ``model.safetensors``, written atomically.

The config records ``codec_hash``, the ``codec.model_hash`` of the codec whose tokens the prior was trained on;
``load(path, codec=...)`` refuses any other codec. Weights are read with safetensors only (never pickle).
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from codec.checkpoint import model_state
from codec.errors import CheckpointError, ModelMismatchError
from codec.fileio import atomic_write_bytes, atomic_write_text
from prior.config import config_from_dict, config_to_dict
from prior.model import TokenPrior

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def prior_hash(prior: TokenPrior) -> str:
    """Hex SHA-256 of the prior's config and tensors; independent of device and of how it was saved."""
    h = hashlib.sha256()
    h.update(json.dumps(config_to_dict(prior.config), sort_keys=True).encode())
    for name, t in sorted(model_state(prior).items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_prior(run_dir: str | Path, prior: TokenPrior) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``run_dir`` (created if needed), atomically."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / WEIGHTS_NAME, save(model_state(prior), metadata={"format": "vqcodec-prior"}))
    atomic_write_text(run_dir / CONFIG_NAME, json.dumps(config_to_dict(prior.config), indent=2) + "\n")


def check_codec(prior: TokenPrior, codec_model, where: str = "prior") -> None:
    """Raise ModelMismatchError unless ``codec_model`` is the codec the prior was trained on."""
    from codec import model_hash

    got = model_hash(codec_model)
    if got != prior.config.codec_hash:
        raise ModelMismatchError(
            f"{where} was trained on codec {prior.config.codec_hash[:12] or '(none recorded)'}, "
            f"not on this codec ({got[:12]}); use the codec it was trained with or train a new prior"
        )


def load_prior(path: str | Path, codec=None, device: str | torch.device | None = None) -> TokenPrior:
    """Load a prior from a run directory.

    Args:
        path: a directory holding ``config.json`` and ``model.safetensors``.
        codec: optional: the codec (a ``codec.Codec`` or its run directory) the prior will be used with.
        device: where to put the prior; None: the codec's device if one is given, else CUDA when available.

    Raises:
        CheckpointError: missing directory or files, unreadable JSON, or weights that do not fit the config.
        ModelMismatchError: ``codec`` is not the codec the prior was trained on.
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a prior directory (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    cfg_path, w_path = run_dir / CONFIG_NAME, run_dir / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{run_dir}: missing {p.name}")
    try:
        config = config_from_dict(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid prior config: {e}") from None
    prior = TokenPrior(config)
    try:
        state = load_file(w_path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path}: unreadable weights: {e}") from None
    expected = prior.state_dict()
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
    prior.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    if codec is not None:
        if isinstance(codec, (str, Path)):
            from codec import load_model

            codec = load_model(codec, device="cpu")
        check_codec(prior, codec, where=f"prior {run_dir}")
        device = device or codec.device
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return prior.to(device).eval()
