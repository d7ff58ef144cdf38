"""Which codec and prior code a file: resolved from objects, run directories or bundled names.

A "prior" here is either entropy model a prior-mode file can be coded with: a Transformer ``TokenPrior`` (coder
``integer-1``, one network step per token) or a ``ContextPrior`` (coder ``context-1``, a few dozen network passes
per chunk: many times faster). ``coder_of`` and ``load_named_prior`` tell them apart; the codecs store them in
``RUN_DIR/prior`` and ``RUN_DIR/context``, and "auto" prefers the context model.

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
from codec.store.registry import beside_context, beside_prior, config_kind, model_dir, prior_dir
from prior.checkpoint import check_codec, load_prior
from prior.context import ContextPrior
from prior.context_checkpoint import load_context
from prior.model import TokenPrior

ENTROPY_MODELS = (TokenPrior, ContextPrior)

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
        directory = prior_dir(name) if kind == "prior" else model_dir(name)  # a context model: its own directory
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


def default_prior_dir(model: Codec, kind: str = "auto"):
    """The entropy model stored beside a codec, or None: ``kind`` "context" (``RUN_DIR/context``), "prior"
    (``RUN_DIR/prior``), or "auto": the context model if there is one, else the prior."""
    source = getattr(model, "source", None)
    if source is None:
        return None
    context = beside_context(source) if kind in ("auto", "context") else None
    return context if context is not None else (beside_prior(source) if kind in ("auto", "prior") else None)


def load_named_prior(name_or_path) -> TokenPrior | ContextPrior:
    """An entropy model from a run directory or a name, on the CPU, with ``.name`` set to what a file records;
    loaded once per process (see the module docstring). A context model's directory or name ("image/context")
    gives a ``ContextPrior``; anything else a ``TokenPrior`` ("image/prior", or a codec: its stored prior)."""
    if config_kind(name_or_path) == "context":
        return cached("context", name_or_path, lambda n: load_context(n, device="cpu"), "cpu")
    return cached("prior", name_or_path, lambda n: load_prior(n, device="cpu"), "cpu")


def resolve_prior(prior, model: Codec, codec_hash: str):
    """(prior on the CPU, name) or (None, None); checks that the prior belongs to ``model`` (whose ``model_hash`` is
    ``codec_hash``). "auto": ``default_prior_dir`` (the context model when the codec has one)."""
    if isinstance(prior, str) and prior == "auto":
        prior = default_prior_dir(model)
    if prior is None:
        return None, None
    if not isinstance(prior, ENTROPY_MODELS):
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
