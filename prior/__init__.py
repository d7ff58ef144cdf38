"""vqcodec's learned prior: a Transformer over a frozen codec's tokens, for entropy coding and generation.

>>> import codec, prior
>>> m = codec.load("runs/image")
>>> p = prior.load("priors/image", codec=m)   # refuses a codec other than the one it was trained on
>>> logits = p.logits(tokens)                 # (B, *shape, K) next-token logits, teacher forced
>>> bits = p.bits_per_token(tokens)           # mean -log2 p(token)
>>> grid = p.sample(16, (32, 32), temperature=1.0, top_k=None, top_p=None, seed=0)
>>> images = m.decode(grid)
"""

from prior.checkpoint import load_prior, prior_hash, save_prior
from prior.config import PriorConfig
from prior.model import PriorState, TokenPrior


def load(path, codec=None, device=None) -> TokenPrior:
    """Load a prior from a run directory; with ``codec``, check it is the codec the prior was trained on.

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
