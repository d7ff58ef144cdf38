"""Codec run directories: ``save_model`` / ``load_model`` on ``codec.store.rundir``, and ``load`` by name."""

from pathlib import Path

import torch

from codec.core.config import config_from_dict, config_to_dict
from codec.core.model import Codec
from codec.store.device import resolve_device
from codec.store.registry import model_dir, portable_name
from codec.store.rundir import load_run, model_hash, save_run

__all__ = ["load", "load_model", "model_hash", "save_model"]


def save_model(run_dir: str | Path, model: Codec) -> None:
    """Write a codec's ``config.json`` and ``model.safetensors`` into ``run_dir``, atomically."""
    save_run(run_dir, model, config_to_dict(model.config), "vqcodec")


def load_model(path: str | Path, device: str | torch.device | None = None) -> Codec:
    """Load a codec from a run directory (see ``codec.store.rundir.load_run``); device None picks CUDA when
    available."""
    model = load_run(path, "codec", lambda cfg: Codec(config_from_dict(cfg)))
    return model.to(resolve_device(device)).eval()


def load(name_or_path, device=None) -> Codec:
    """Load a codec from a run directory or a bundled model name ("image", "audio"). See ``load_model``.

    The model remembers where it came from (``model.name``, ``model.source``), so that ``compress`` can record it
    in files and find the prior stored beside it (``RUN_DIR/prior``).
    """
    path = model_dir(name_or_path)
    model = load_model(path, device=device)
    model.name = portable_name(path)
    model.source = str(path)
    return model
