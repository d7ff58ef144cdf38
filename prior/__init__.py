"""vqcodec's learned prior: a Transformer over a frozen codec's tokens, for entropy coding and generation.

>>> import codec, prior
>>> m = codec.load("image")
>>> p = prior.load("image", codec=m)           # the prior stored with the bundled codec; refuses another codec
>>> logits = p.logits(tokens)                 # (B, *shape, K) next-token logits, teacher forced
>>> bits = p.bits_per_token(tokens)           # mean -log2 p(token)
>>> grid = p.sample(4, p.config.sample_shape, temperature=1.0, top_k=None, top_p=None, seed=0)
>>> images = m.decode(grid)

Layer: above the codec's model core, media and training (``codec.core``, ``codec.media``, ``codec.train``), below
the bitstream; the codec a prior belongs to is given to it as data (its hash).
"""

from prior.checkpoint import load_prior, prior_hash, save_prior
from prior.config import PriorConfig
from prior.model import PriorState, TokenPrior


def load(path, codec=None, device=None) -> TokenPrior:
    """Load a prior from its run directory or a name: "image/prior", or a codec ("image", a codec run directory)
    whose stored prior is meant; with ``codec``, check it is the codec the prior was trained on.

    See ``prior.checkpoint.load_prior``.
    """
    return load_prior(path, codec=codec, device=device)


__all__ = [
    "PriorConfig",
    "PriorState",
    "TokenPrior",
    "load",
    "load_prior",
    "prior_hash",
    "save_prior",
]
