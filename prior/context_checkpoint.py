"""Context model run directories: ``config.json`` (with ``"kind": "context"``) + ``model.safetensors``.

A codec's context model is stored beside it in ``RUN_DIR/context`` (bundled: "image/context"); ``load_context``
takes that directory, its bundled name, or the codec ("image").
"""

from pathlib import Path

import torch

from codec.core.checkpoint import load as load_codec
from codec.store.device import resolve_device
from codec.store.registry import context_dir, portable_name
from codec.store.rundir import load_run, model_hash, save_run
from prior.checkpoint import check_codec
from prior.context import ContextPrior, context_config_from_dict, context_config_to_dict


def save_context(run_dir: str | Path, model: ContextPrior, compact: bool = False) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``run_dir`` (created if needed), atomically.

    ``compact``: the weights as the integer network reads them (``prior.context_integer.compact_state``: 8-bit rows,
    about half the bytes of float16), from which coding derives exactly the same network; bundled models are
    stored so. Training continues from them as from any weights.
    """
    from prior.context_integer import compact_state  # the integer network is needed only here

    state = compact_state(model) if compact else None
    save_run(run_dir, model, context_config_to_dict(model.config), "vqcodec-context", state=state)


def _build(cfg: dict) -> ContextPrior:
    if cfg.get("kind") != "context":
        raise ValueError('not a context model (its config has no "kind": "context")')
    return ContextPrior(context_config_from_dict(cfg))


def load_context(path, codec=None, device: str | torch.device | None = None) -> ContextPrior:
    """Load a context model (see the module docstring); with ``codec``, check it was trained on that codec.

    Raises:
        CheckpointError: missing or unreadable files, or not a context model.
        ModelMismatchError: ``codec`` is not the codec it was trained on.
    """
    run_dir = context_dir(path)
    model = load_run(run_dir, "context model", _build)
    model.name = portable_name(run_dir)
    if codec is not None:
        if isinstance(codec, (str, Path)):
            codec = load_codec(codec, device="cpu")
        check_codec(model, model_hash(codec), where=f"context model {run_dir}")
    return model.to(resolve_device(device or "cpu")).eval()
