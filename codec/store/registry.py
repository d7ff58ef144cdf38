"""Where models are found by name: the bundled models shipped inside the package, and run directories.

A bundled model is ``BUNDLED_DIR/NAME`` (a codec: ``config.json`` + ``model.safetensors``) with its default prior
in ``BUNDLED_DIR/NAME/prior``. Every loader (``codec.load``, ``prior.load``, the CLI's ``--model``, ``--codec`` and
``--prior``) resolves names here, so a name works the same from any directory. No torch: the CLI resolves names
before it loads anything heavy.
"""

import json
from pathlib import Path

from codec.errors import CheckpointError

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "models"  # bundled models: BUNDLED_DIR/NAME
CONFIG_NAME = "config.json"
PRIOR_DIR_NAME = "prior"  # a codec run directory may hold its Transformer prior in this subdirectory
CONTEXT_DIR_NAME = "context"  # and its context model (the fast entropy model) in this one


def bundled_models() -> list[str]:
    """Names of the codecs shipped inside the package ("audio", "image")."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CONFIG_NAME).is_file())


def bundled_names() -> set[str]:
    """Every name ``model_dir`` resolves inside the package: each bundled codec, its prior ("image/prior") and its
    context model ("image/context")."""
    names = set(bundled_models())
    subs = {f"{m}/{sub}" for m in names for sub in (PRIOR_DIR_NAME, CONTEXT_DIR_NAME)}
    return names | {s for s in subs if (BUNDLED_DIR / s / CONFIG_NAME).is_file()}


def portable_name(path) -> str:
    """How a ``.vqc`` file records a model directory: a bundled model as its name ("image", "image/prior"), so
    files made with bundled models do not carry (or depend on) where the package is installed; any other
    directory as its absolute path."""
    p = Path(path).resolve()
    for name in bundled_names():
        if p == (BUNDLED_DIR / name).resolve():
            return name
    return str(p)


def model_dir(name_or_path) -> Path:
    """The run directory of a model given as a directory or a bundled name: "image", "audio", or the prior
    shipped with one ("image/prior").

    Raises:
        CheckpointError: neither an existing directory nor a bundled name.
    """
    path = Path(name_or_path)
    if (path / CONFIG_NAME).is_file():
        return path
    # a bundled name wins over a directory of that name that holds no model (say ./image/ of photos)
    if isinstance(name_or_path, str) and name_or_path in bundled_names():
        return BUNDLED_DIR / name_or_path
    if path.is_dir():
        return path  # the loader says what is missing
    names = ", ".join(sorted(bundled_names())) or "none installed"
    raise CheckpointError(f"{name_or_path}: not a model directory, nor a bundled model name (bundled: {names})")


def beside_prior(codec_dir) -> Path | None:
    """The default prior stored with a codec (``RUN_DIR/prior``), or None."""
    return _beside(codec_dir, PRIOR_DIR_NAME)


def beside_context(codec_dir) -> Path | None:
    """The context model stored with a codec (``RUN_DIR/context``), or None."""
    return _beside(codec_dir, CONTEXT_DIR_NAME)


def prior_dir(name_or_path) -> Path:
    """The run directory of a prior given as its directory, a bundled name ("image/prior"), or a codec (directory
    or bundled name, "image") whose default prior is meant.

    Raises:
        CheckpointError: neither an existing directory nor a bundled name, or a codec with no prior stored beside it.
    """
    return _stored_dir(name_or_path, PRIOR_DIR_NAME, "prior")


def context_dir(name_or_path) -> Path:
    """The run directory of a context model given as its directory, a bundled name ("image/context"), or a codec
    whose context model is meant.

    Raises:
        CheckpointError: not found, or a codec with no context model stored beside it.
    """
    return _stored_dir(name_or_path, CONTEXT_DIR_NAME, "context model")


def config_kind(name_or_path) -> str | None:
    """What a model directory (or name) holds, from its config: "codec", "context" (a context model), "prior", or
    None when it cannot be read (the loaders say what is wrong)."""
    try:
        config = json.loads((model_dir(name_or_path) / CONFIG_NAME).read_text())
    except (CheckpointError, OSError, ValueError, TypeError):
        return None
    if not isinstance(config, dict):
        return None
    if "quantizer" in config:
        return "codec"
    return "context" if config.get("kind") == "context" else "prior"


def _beside(codec_dir, sub: str) -> Path | None:
    p = Path(codec_dir) / sub
    return p if (p / CONFIG_NAME).is_file() else None


def _stored_dir(name_or_path, sub: str, what: str) -> Path:
    """A model's own directory, or the one stored in a codec's ``sub`` directory when a codec is named."""
    path = model_dir(name_or_path)
    if _beside(path, sub) is not None:
        return path / sub
    if config_kind(path) == "codec":
        raise CheckpointError(f"{name_or_path}: a codec with no {what} stored beside it ({path / sub})")
    return path
