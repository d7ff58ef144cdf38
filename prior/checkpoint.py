"""Prior run directories, like the codec's: ``config.json`` + ``model.safetensors``, written atomically.

The config records ``codec_hash``, the ``codec.model_hash`` of the codec whose tokens the prior was trained on;
``load(path, codec=...)`` refuses any other codec. Weights are read with safetensors only (never pickle).
"""

from pathlib import Path

import torch

from codec.checkpoint import default_device, load_run, save_run, state_hash
from codec.errors import ModelMismatchError
from prior.config import config_from_dict, config_to_dict
from prior.model import TokenPrior


def prior_hash(prior: TokenPrior) -> str:
    """Hex SHA-256 of the prior's config and tensors; independent of device and of how it was saved."""
    return state_hash(config_to_dict(prior.config), prior)


def save_prior(run_dir: str | Path, prior: TokenPrior) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``run_dir`` (created if needed), atomically."""
    save_run(run_dir, prior, config_to_dict(prior.config), "vqcodec-prior")


def check_codec(prior: TokenPrior, codec_model, where: str = "prior", codec_hash: str | None = None) -> None:
    """Raise ModelMismatchError unless ``codec_model`` is the codec the prior was trained on.

    ``codec_hash``: the codec's ``model_hash`` when the caller already has it (it is not computed again).
    """
    from codec import model_hash

    got = codec_hash or model_hash(codec_model)
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
    prior = load_run(run_dir, "prior", lambda cfg: TokenPrior(config_from_dict(cfg)))
    if codec is not None:
        if isinstance(codec, (str, Path)):
            from codec import load_model

            codec = load_model(codec, device="cpu")
        check_codec(prior, codec, where=f"prior {run_dir}")
        device = device or codec.device
    return prior.to(default_device(device)).eval()
