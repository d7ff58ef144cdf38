"""Prior run directories, like the codec's: ``config.json`` + ``model.safetensors`` (``codec.store.rundir``).

The config records ``codec_hash``, the ``model_hash`` of the codec whose tokens the prior was trained on;
``load(path, codec=...)`` refuses any other codec. A prior is named by its directory, by a bundled name
("image/prior"), or by its codec ("image": the prior stored with it), from any working directory.
"""

from pathlib import Path

import torch

from codec.core.checkpoint import load as load_codec
from codec.errors import ModelMismatchError
from codec.store.device import resolve_device
from codec.store.registry import portable_name, prior_dir
from codec.store.rundir import load_run, model_hash, save_run
from prior.config import config_from_dict, config_to_dict
from prior.model import TokenPrior


def prior_hash(prior: TokenPrior) -> str:
    """Hex SHA-256 of the prior's config and tensors; independent of device and of how it was saved."""
    return model_hash(prior)


def save_prior(run_dir: str | Path, prior: TokenPrior) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``run_dir`` (created if needed), atomically."""
    save_run(run_dir, prior, config_to_dict(prior.config), "vqcodec-prior")


def check_codec(prior: TokenPrior, codec_hash: str, where: str = "prior") -> None:
    """Raise ModelMismatchError unless ``codec_hash`` (a codec's ``model_hash``) is the one the prior was trained on."""
    if codec_hash != prior.config.codec_hash:
        raise ModelMismatchError(
            f"{where} was trained on codec {prior.config.codec_hash[:12] or '(none recorded)'}, "
            f"not on this codec ({codec_hash[:12]}); use the codec it was trained with or train a new prior"
        )


def load_prior(path, codec=None, device: str | torch.device | None = None) -> TokenPrior:
    """Load a prior from its run directory or a name (see the module docstring).

    Args:
        path: a prior run directory, a bundled name ("image/prior"), or a codec whose stored prior is meant
            (a codec run directory holding ``prior/``, or a bundled codec name: "image").
        codec: optional: the codec the prior will be used with: a model, or its run directory or bundled name.
        device: where to put the prior; None: the codec model's device if one is given, else CUDA when available.

    Returns:
        The prior in eval mode, with ``.name`` set to how a ``.vqc`` file records it (``portable_name``).

    Raises:
        CheckpointError: missing directory or files, unreadable JSON, or weights that do not fit the config.
        ModelMismatchError: ``codec`` is not the codec the prior was trained on.
    """
    run_dir = prior_dir(path)
    prior = load_run(run_dir, "prior", lambda cfg: TokenPrior(config_from_dict(cfg)))
    prior.name = portable_name(run_dir)
    if codec is not None:
        if isinstance(codec, (str, Path)):
            codec = load_codec(codec, device="cpu")
        check_codec(prior, model_hash(codec), where=f"prior {run_dir}")
        device = device or codec.device
    return prior.to(resolve_device(device)).eval()
