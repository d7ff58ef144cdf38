"""Which codec and prior code a file: resolved from objects, run directories or bundled names."""

from codec.core.checkpoint import load
from codec.core.model import Codec
from codec.errors import CheckpointError, ModelMismatchError
from codec.store.registry import beside_prior
from prior.checkpoint import check_codec, load_prior
from prior.model import TokenPrior


def resolve_codec(model, device=None) -> tuple[Codec, str]:
    """(codec, name) from a Codec, a run directory or a bundled name."""
    if isinstance(model, Codec):
        return model, getattr(model, "name", "") or ""
    model = load(model, device=device)
    return model, model.name


def default_prior_dir(model: Codec):
    """The prior stored beside a codec (``RUN_DIR/prior``), or None."""
    source = getattr(model, "source", None)
    return None if source is None else beside_prior(source)


def load_named_prior(name_or_path) -> TokenPrior:
    """A prior from a run directory or a name ("image/prior", or a codec whose stored prior is meant), on the CPU,
    with ``.name`` set to what a file records."""
    return load_prior(name_or_path, device="cpu")


def resolve_prior(prior, model: Codec, codec_hash: str):
    """(prior on the CPU, name) or (None, None); checks that the prior belongs to ``model`` (whose ``model_hash`` is
    ``codec_hash``). "auto": ``default_prior_dir``."""
    if isinstance(prior, str) and prior == "auto":
        prior = default_prior_dir(model)
    if prior is None:
        return None, None
    if not isinstance(prior, TokenPrior):
        prior = load_named_prior(prior)
    name = getattr(prior, "name", "") or ""
    check_codec(prior, codec_hash, where=f"the prior {name}".strip())
    return prior, name


def load_recorded(kind: str, ref: dict, loader):
    """The model a file names (``ref``: {"name", "hash"}), loaded by ``loader(name)``.

    Raises:
        ModelMismatchError: it cannot be loaded here (a directory of another machine, a missing bundled model).
    """
    try:
        return loader(ref["name"])
    except (CheckpointError, OSError) as e:
        raise ModelMismatchError(
            f"this file was encoded with the {kind} {ref['name']!r} ({ref['hash'][:12]}), which cannot be loaded "
            f"here ({e}); pass the {kind} it was made with"
        ) from None
