"""TokenPrior: a decoder-only Transformer (x-transformers) over the code indices of a frozen codec.

Layout. Every token grid is handled as (L, H, W), levels x rows x columns:

    image (h, w)         -> (1, h, w)
    image (n_q, h, w)    -> (n_q, h, w)
    audio (n_q, t)       -> (n_q, 1, t)       a one-row image whose columns are frames

and flattened in raster order with the level innermost: position p = (row * W + col) * L + level. So the
residual levels of one position (one audio frame) are predicted in order, coarse to fine, before the next
position: the "flattened with level embeddings" design (measured against a per-frame depth model; see the
issue-4 report). The input at position p is token p - 1 (a start token at p = 0: "unconditional", or one per
class) and the output at p is the distribution of token p.

Position information describes the token being predicted, so one prior handles any grid size:
- 2-D rotary embeddings in attention: half of each head's rotary dimensions turn with the row, half with the
  column, so attention sees (d_row, d_col) offsets whatever the width;
- learned embeddings added to the input: the level, and the distance to each edge of the grid (top, left,
  bottom, right) clamped to ``edge_positions - 1`` (the codec pads at the bottom and right edges).

Sliding window. Position p attends to positions p - context + 1 .. p in every layer (x-transformers'
``attn_max_attend_past``), so any length is modelled with bounded memory. With the key/value cache, the
cache keeps the last context - 1 keys of each layer: it holds unrotated keys and the rotary angles are
recomputed from absolute (row, col) every step, so trimming changes nothing else.

Two computation paths give the same numbers up to float rounding:
- ``forward`` over a whole sequence, no cache (training, and the "recomputation" reference);
- ``start`` / ``append`` / ``feed``: the cached, incremental path. ``logits`` and ``token_bits`` feed known
  tokens through it in chunks; sampling feeds one token at a time.

Entropy coding must use the incremental path one token at a time on BOTH sides: ``state = p.start(shape)``,
then for each position ``state.logits`` (B, K) float32 and ``p.append(state, token)`` (``incremental_logits``
does exactly this for known tokens). The decoder can only work token by token, and the same operations on the
same shapes give bit-identical logits on the same machine, which chunked or batched paths do not promise.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from x_transformers import Decoder, TransformerWrapper

from prior.config import PriorConfig

EDGES = ("top", "left", "bottom", "right")
CHUNK = 1024  # tokens fed per step by the teacher-forced path (bounds attention memory on long inputs)


@dataclass
class PriorState:
    """Incremental decoding state of a batch of sequences (see ``TokenPrior.start``).

    Attributes:
        layout: (L, H, W) of the token grid being decoded.
        start_ids: (B,) int64 start-token ids.
        fed: target positions whose logits have been computed; ``logits`` predicts token ``fed - 1``.
        logits: (B, K) float32 logits of token ``fed - 1`` given all earlier tokens; None once all are known.
        cache: x-transformers' key/value cache, trimmed to the last context - 1 positions.
    """

    layout: tuple[int, int, int]
    start_ids: torch.Tensor
    fed: int = 0
    logits: torch.Tensor | None = None
    cache: object | None = None

    @property
    def length(self) -> int:
        return math.prod(self.layout)


def positions(layout: tuple[int, int, int], start: int, stop: int, device=None) -> torch.Tensor:
    """Position features of flat positions start..stop-1 of a grid: (n, 5) int64 (row, col, level, down, right).

    ``down`` and ``right`` count the rows below and the columns to the right of the position.
    """
    return flat_positions(layout, torch.arange(start, stop, device=device))


def flat_positions(layout: tuple[int, int, int], flat: torch.Tensor) -> torch.Tensor:
    """Position features (..., 5) int64 (row, col, level, down, right) of flat raster positions ``flat`` (...)."""
    levels, height, width = layout
    level, cell = flat % levels, flat // levels
    row, col = cell // width, cell % width
    return torch.stack([row, col, level, height - 1 - row, width - 1 - col], dim=-1)


class TokenPrior(nn.Module):
    """Autoregressive prior p(token_p | tokens < p) over a codec's tokens. See the module docstring."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        c = config
        dim_head = c.dim // c.heads
        self.net = TransformerWrapper(
            num_tokens=c.codebook_size + 1 + c.num_classes,  # codes, then the start tokens
            logits_dim=c.codebook_size,
            max_seq_len=0,  # no absolute positions: rotary (row, col) + edge and level embeddings
            embed_num_tokens={"level": c.levels, **{e: c.edge_positions for e in EDGES}},
            emb_dropout=c.dropout,
            attn_layers=Decoder(
                dim=c.dim,
                depth=c.depth,
                heads=c.heads,
                attn_dim_head=dim_head,
                ff_mult=c.ff_mult,
                attn_dropout=c.dropout,
                ff_dropout=c.dropout,
                attn_max_attend_past=c.context - 1,  # the sliding window
                attn_flash=True,  # torch's scaled_dot_product_attention
            ),
        )
        quarter = dim_head // 4  # frequencies per axis: each rotates a pair of dimensions
        inv_freq = c.rotary_base ** (-torch.arange(quarter, dtype=torch.float32) / quarter)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    # ------------------------------------------------------------------------------------------ layout
    def layout(self, shape) -> tuple[int, int, int]:
        """(L, H, W) for the token shape of one item, exactly as the codec's ``encode`` gives it (no batch axis).

        Raises:
            ValueError: a shape this prior's codec cannot produce.
        """
        c = self.config
        shape = tuple(int(s) for s in shape)
        want = "(n_q, t)" if c.modality == "audio" else "(n_q, h, w)" if c.residual else "(h, w)"
        if len(shape) != want.count(",") + 1 or min(shape, default=0) < 1:
            raise ValueError(f"token shape must be {want} with every size >= 1, got {shape}")
        if c.residual and shape[0] > c.levels:
            raise ValueError(f"tokens have {shape[0]} levels; this prior models at most {c.levels}")
        if c.modality == "audio":
            return (shape[0], 1, shape[1])
        return shape if c.residual else (1, *shape)

    def flatten(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, *shape) -> (B, N) in the prior's raster order (level innermost)."""
        if self.config.residual:  # (B, L, ...) -> (B, ..., L)
            tokens = tokens.movedim(1, -1)
        return tokens.reshape(tokens.shape[0], -1)

    def unflatten(self, flat: torch.Tensor, shape) -> torch.Tensor:
        """(B, N, *rest) -> (B, *shape, *rest): the inverse of ``flatten``."""
        shape, rest = tuple(int(s) for s in shape), flat.shape[2:]
        if not self.config.residual:
            return flat.reshape(flat.shape[0], *shape, *rest)
        return flat.reshape(flat.shape[0], *shape[1:], shape[0], *rest).movedim(len(shape), 1)

    def start_ids(self, batch: int, classes=None, device=None) -> torch.Tensor:
        """(B,) int64 start-token ids: the unconditional one, or one per class when ``classes`` is given."""
        K, n = self.config.codebook_size, self.config.num_classes
        if classes is None:
            return torch.full((batch,), K, dtype=torch.int64, device=device)
        classes = torch.as_tensor(classes, dtype=torch.int64, device=device).expand(batch)
        if n == 0 or int(classes.min()) < 0 or int(classes.max()) >= n:
            raise ValueError(f"classes must lie in [0, {n}) for this prior, got {classes.tolist()}")
        return K + 1 + classes

    # ----------------------------------------------------------------------------------------- network
    def forward(self, inputs: torch.Tensor, pos: torch.Tensor, cache=None):
        """Logits for the last n positions of a window.

        Args:
            inputs: (B, n) int64 input ids (codes 0..K-1 or start ids): the token before each target position.
            pos: (B or 1, m, 5) int64 ``positions`` of the target positions of every key, m >= n: the cached
                positions (m - n of them, contiguous) followed by the n new ones.
            cache: x-transformers' cache holding the m - n earlier keys, or None (then m == n).

        Returns:
            logits (B, n, K) float, and the new cache (all m keys of every layer).
        """
        n, edge = inputs.shape[1], self.config.edge_positions - 1
        new = pos[:, -n:]
        embed_ids = {"level": new[..., 2], **{e: new[..., i].clamp(max=edge) for e, i in zip(EDGES, (0, 1, 3, 4))}}
        angles = pos[..., :2, None].float() * self.inv_freq  # (B, m, 2, quarter): row and column angles
        freqs = angles.flatten(-2).repeat_interleave(2, dim=-1)  # (B, m, dim_head) as x-transformers pairs dims
        return self.net(
            inputs,
            embed_ids=embed_ids,
            rotary_pos_emb=(freqs, 1.0),
            cache=cache,
            cache_age=n,
            return_intermediates=True,
        )

    def _trim(self, cache) -> None:
        """Keep the last context - 1 keys of every layer: all the next position may attend to."""
        keep = self.config.context - 1
        for inter in cache.attn_intermediates:
            inter.cached_kv = tuple(t[..., max(0, t.shape[-2] - keep) :, :] for t in inter.cached_kv)
        cache.cache_length = min(cache.cache_length, keep)

    # ----------------------------------------------------------------------------- incremental (cached)
    def start(self, shape, batch: int = 1, classes=None, device=None) -> PriorState:
        """Begin incremental decoding of ``batch`` items of token shape ``shape``; ``state.logits`` predicts token 0."""
        device = device or self.inv_freq.device
        state = PriorState(self.layout(shape), self.start_ids(batch, classes, device))
        self.feed(state, state.start_ids[:, None])
        return state

    def append(self, state: PriorState, token: torch.Tensor) -> None:
        """Record token ``state.fed - 1`` ((B,) int64) and compute ``state.logits`` for the next one."""
        if state.logits is None:
            raise ValueError(f"all {state.length} tokens have been appended")
        if state.fed < state.length:
            self.feed(state, token.reshape(-1, 1))
        else:
            state.logits = None

    @torch.inference_mode()
    def feed(self, state: PriorState, inputs: torch.Tensor) -> torch.Tensor:
        """Feed (B, n) input ids for the next n target positions; returns their logits (B, n, K) float32.

        The input for target position p is token p - 1 (the start id for p = 0).
        """
        if state.fed >= state.length:
            raise ValueError(f"all {state.length} tokens have been fed")
        n = inputs.shape[1]
        first = state.fed - (state.cache.cache_length if state.cache is not None else 0)
        pos = positions(state.layout, first, state.fed + n, inputs.device)[None]
        logits, cache = self(inputs.to(device=pos.device, dtype=torch.int64), pos, state.cache)
        self._trim(cache)
        state.cache, state.fed = cache, state.fed + n
        state.logits = logits[:, -1].float()
        return logits.float()

    # --------------------------------------------------------------------------------- teacher forcing
    def _inputs(self, tokens: torch.Tensor, classes) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Validate tokens (B, *shape); return the (B, N) input ids (start, tokens[:-1]) and the layout."""
        if not isinstance(tokens, torch.Tensor) or tokens.is_floating_point() or tokens.ndim < 2:
            raise ValueError(f"tokens must be an integer tensor (B, *shape), got {getattr(tokens, 'shape', tokens)}")
        layout = self.layout(tokens.shape[1:])
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.config.codebook_size:
            raise ValueError(f"token values must lie in [0, {self.config.codebook_size})")
        device = self.inv_freq.device
        flat = self.flatten(tokens.to(device, torch.int64))
        start = self.start_ids(flat.shape[0], classes, device)
        return torch.cat([start[:, None], flat[:, :-1]], dim=1), layout

    def _chunks(self, tokens: torch.Tensor, classes, chunk: int):
        """Teacher forcing through the cached path: yields (a, logits (B, n, K) of flat positions a..a+n-1)."""
        inputs, layout = self._inputs(tokens, classes)
        state = PriorState(layout, inputs[:, 0])
        for a in range(0, inputs.shape[1], chunk):
            yield a, self.feed(state, inputs[:, a : a + chunk])

    def _logits_flat(self, tokens: torch.Tensor, classes=None, chunk: int = CHUNK) -> torch.Tensor:
        """Teacher-forced logits (B, N, K) float32 in raster order."""
        return torch.cat([logits for _, logits in self._chunks(tokens, classes, chunk)], dim=1)

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor, classes=None) -> torch.Tensor:
        """Next-token logits for every position, teacher forced.

        Args:
            tokens: (B, *shape) int tokens as the codec's ``encode`` returns them.
            classes: None (unconditional start token), or an int or (B,) class ids when num_classes > 0.

        Returns:
            (B, *shape, K) float32: ``logits[b, ..., k]`` scores value k for ``tokens[b, ...]`` given the tokens
            before it in raster order (level innermost).
        """
        return self.unflatten(self._logits_flat(tokens, classes), tokens.shape[1:])

    @torch.inference_mode()
    def token_bits(self, tokens: torch.Tensor, classes=None) -> torch.Tensor:
        """-log2 p(token) for every token: (B, *shape) float32. Memory stays bounded on long inputs."""
        target = self.flatten(tokens.to(self.inv_freq.device, torch.int64))
        nats = [
            F.cross_entropy(logits.movedim(-1, 1), target[:, a : a + logits.shape[1]], reduction="none")
            for a, logits in self._chunks(tokens, classes, CHUNK)
        ]
        return self.unflatten(torch.cat(nats, dim=1) / math.log(2), tokens.shape[1:])

    def bits_per_token(self, tokens: torch.Tensor, classes=None) -> float:
        """Mean -log2 p(token) over all the given tokens (B, *shape)."""
        return float(self.token_bits(tokens, classes).mean())

    @torch.inference_mode()
    def incremental_logits(self, tokens: torch.Tensor, classes=None) -> torch.Tensor:
        """Logits (B, N, K) float32 in raster order computed one token at a time: the entropy coder's path."""
        inputs, layout = self._inputs(tokens, classes)
        state = PriorState(layout, inputs[:, 0])
        return torch.cat([self.feed(state, inputs[:, p : p + 1]) for p in range(inputs.shape[1])], dim=1)

    # ---------------------------------------------------------------------------------------- sampling
    def sample(self, batch: int, shape, temperature=1.0, top_k=None, top_p=None, seed=None, **kwargs):
        """New tokens (batch, *shape) int64 that the codec's ``decode`` accepts. See ``prior.sample.sample``."""
        from prior.sample import sample

        return sample(self, batch, shape, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, **kwargs)
