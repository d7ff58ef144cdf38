"""Sampling from a TokenPrior: temperature, top-k and top-p (nucleus) filtering, seeded and batched.

Randomness: item i of a call with seed s has its own CPU ``torch.Generator``, seeded from (s, i). Each step draws
one uniform number per item and picks the token whose cumulative probability first exceeds it (inverse CDF).
So a sample depends only on (seed, item index): not on the batch size it was drawn in, and not on the device
or the cache (up to float rounding of the logits).
"""

import hashlib
import secrets
import struct

import torch
from tqdm.auto import tqdm

from prior.layout import positions


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k=None, top_p=None) -> torch.Tensor:
    """Scaled logits with the excluded tokens set to -inf.

    Args:
        logits: (B, K) float.
        temperature: > 0; logits are divided by it.
        top_k: keep the tokens whose logit is at least the k-th largest (ties at the k-th are all kept).
        top_p: keep the most probable tokens whose probabilities, taken in decreasing order, first reach
            ``top_p`` (always at least the most probable one); in (0, 1].

    Returns:
        (B, K) float32.
    """
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(int(top_k), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs  # probability mass of the more probable tokens
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(logits: torch.Tensor, u: torch.Tensor, temperature=1.0, top_k=None, top_p=None) -> torch.Tensor:
    """One token per row of (B, K) logits, by inverse CDF at (B,) uniforms u in [0, 1).

    Returns:
        (B,) int64 on the logits' device. temperature 0 takes the argmax (u unused).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, temperature, top_k, top_p).softmax(dim=-1).double()
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:]
    # The first token whose cdf exceeds v, with v kept below the total: a token of probability 0 adds nothing
    # to the cdf, so it is never the first to exceed v, even for u rounding up to 1.
    v = torch.minimum(u.to(cdf.device, torch.float64)[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, v, right=True).squeeze(1)


def item_generators(seed: int | None, batch: int, first_index: int = 0) -> list[torch.Generator]:
    """One CPU generator per item, seeded from (seed, first_index + b); seed None picks a random seed."""
    if seed is None:
        seed = secrets.randbits(62)
    gens = []
    for b in range(batch):
        digest = hashlib.blake2b(struct.pack("<qq", seed, first_index + b), digest_size=8).digest()
        gens.append(torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1))
    return gens


def _uniforms(generators: list[torch.Generator]) -> torch.Tensor:
    return torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])


def _check(temperature, top_k, top_p) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


@torch.inference_mode()
def sample(
    prior,
    batch: int,
    shape,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    classes=None,
    use_cache: bool = True,
    device=None,
    first_index: int = 0,
    progress=False,
) -> torch.Tensor:
    """Sample ``batch`` token grids of token shape ``shape``.

    Args:
        prior: the ``TokenPrior`` (its device is used unless ``device`` is given).
        batch: items to sample at once.
        shape: the token shape of one item as the codec's ``encode`` gives it: (h, w) or (n_q, h, w) for images,
            (n_q, t) for audio.
        temperature, top_k, top_p: see ``filter_logits``; temperature 0 is greedy.
        seed: with ``first_index``, fixes the samples (None: a random seed).
        classes: None (unconditional), or an int or (batch,) class ids for a class-conditional prior.
        use_cache: False recomputes the whole prefix at every step (slow; the reference for tests and benchmarks).
        device: where to compute (default: the prior's device).
        first_index: index of the first item: item b is drawn with a generator seeded from
            (seed, first_index + b), so sampling 16 items in one batch or in batches of 4 gives the same items.
        progress: False; True for a tqdm bar over the token positions on stderr; or a tqdm-like object with
            ``update(n)`` that is advanced by one per position (the caller owns it, e.g. one bar over batches).

    Returns:
        (batch, *shape) int64 tokens in [0, K), on the prior's device.
    """
    _check(temperature, top_k, top_p)
    generators = item_generators(seed, batch, first_index)
    device = device or prior.inv_freq.device
    layout = prior.layout(shape)
    n = layout[0] * layout[1] * layout[2]
    out = torch.zeros(batch, n, dtype=torch.int64, device=device)
    bar = progress if hasattr(progress, "update") else tqdm(total=n, desc="sample", unit="tok", disable=not progress)
    try:
        if use_cache:
            state = prior.start(shape, batch, classes, device)
            for p in range(n):
                out[:, p] = draw(state.logits, _uniforms(generators), temperature, top_k, top_p)
                prior.append(state, out[:, p])
                bar.update(1)
        else:
            start = prior.start_ids(batch, classes, device)
            for p in range(n):
                inputs = torch.cat([start[:, None], out[:, :p]], dim=1)  # inputs for target positions 0..p
                logits = prior(inputs, positions(layout, 0, p + 1, device)[None])
                out[:, p] = draw(logits[:, -1], _uniforms(generators), temperature, top_k, top_p)
                bar.update(1)
    finally:
        if bar is not progress:
            bar.close()
    return prior.unflatten(out, shape)
