"""Which codec and prior code a file: resolved from objects, run directories or bundled names.

Models named by a string (a bundled name or a run directory) are loaded once per process and kept (the last
``CACHE_SIZE`` of them): ``decompress`` in a loop reads the weights once, not at every call. A run directory whose
weights file changes (a run that trains on) is loaded again.
"""

import os
from collections import OrderedDict
from pathlib import Path

from codec.core.checkpoint import load
from codec.core.model import Codec
from codec.errors import CheckpointError, ModelMismatchError
from codec.store.registry import beside_prior, model_dir, prior_dir
from prior.checkpoint import check_codec, load_prior
from prior.model import TokenPrior

CACHE_SIZE = 4
_CACHE: "OrderedDict[tuple, object]" = OrderedDict()


def _stamp(directory: Path) -> tuple:
    """(directory, mtime, size) of a run directory's weights: a retrained or replaced model is a new entry."""
    st = os.stat(directory / "model.safetensors")
    return (str(directory.resolve()), st.st_mtime_ns, st.st_size)


def cached(kind: str, name, loader, device=None):
    """``loader(name)``, or the model it gave before for the same directory (``name`` resolved as the loaders
    resolve it), unchanged weights and device."""
    try:
        directory = prior_dir(name) if kind == "prior" else model_dir(name)
        key = (kind, str(device), *_stamp(directory))
    except (CheckpointError, OSError):
        return loader(name)  # the loader says what is wrong
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    model = loader(name)
    _CACHE[key] = model
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return model


def load_codec_cached(name, device=None) -> Codec:
    """A codec by run directory or bundled name, loaded once per process (see the module docstring)."""
    return cached("codec", name, lambda n: load(n, device=device), device)


def resolve_codec(model, device=None) -> tuple[Codec, str]:
    """(codec, name) from a Codec, a run directory or a bundled name."""
    if isinstance(model, Codec):
        return model, getattr(model, "name", "") or ""
    model = load_codec_cached(model, device=device)
    return model, model.name


def default_prior_dir(model: Codec):
    """The prior stored beside a codec (``RUN_DIR/prior``), or None."""
    source = getattr(model, "source", None)
    return None if source is None else beside_prior(source)


def load_named_prior(name_or_path) -> TokenPrior:
    """A prior from a run directory or a name ("image/prior", or a codec whose stored prior is meant), on the CPU,
    with ``.name`` set to what a file records; loaded once per process (see the module docstring)."""
    return cached("prior", name_or_path, lambda n: load_prior(n, device="cpu"), "cpu")


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
