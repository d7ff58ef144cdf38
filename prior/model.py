"""TokenPrior: an autoregressive Transformer (``prior.transformer``) over the code indices of a frozen codec.

Layout. Token grids are (L, H, W), levels x rows x columns, flattened in raster order with the level innermost
(``prior.layout``, the one order the bitstream uses too). The input at position p is token p - 1 (a start token at
p = 0: "unconditional", or one per class) and the output at p is the distribution of token p.

Position information describes the token being predicted, so one prior handles any grid size:
- 2-D rotary embeddings in attention: half of each head's rotary dimensions turn with the row, half with the
  column, so attention sees (d_row, d_col) offsets whatever the width;
- learned embeddings added to the input: the level, and the distance to each edge of the grid (top, left,
  bottom, right) clamped to ``edge_positions - 1`` (the codec pads at the bottom and right edges).

Sliding window. Position p attends to positions p - context + 1 .. p in every layer, so any length is modelled
with bounded memory; a prediction depends on at most ``receptive_field`` earlier positions.

Two computation paths give the same numbers up to float rounding:
- ``forward`` over a window of positions (training; ``logits`` and ``token_bits`` run it over overlapping
  windows that cover every position's receptive field);
- ``start`` / ``append`` / ``feed``: one token at a time through ``prior.incremental.StepDecoder`` (sampling, and
  the entropy coder, which needs bit-identical logits on both sides: the same operations on the same shapes).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prior import layout as L
from prior.config import PriorConfig
from prior.incremental import StepDecoder
from prior.sample import sample
from prior.transformer import EDGES, PriorTransformer

CHUNK = 1024  # target positions per window of the teacher-forced path (bounds attention memory on long inputs)


@dataclass
class PriorState:
    """Incremental decoding state of a batch of sequences (see ``TokenPrior.start``).

    Attributes:
        layout: (L, H, W) of the token grid being decoded.
        start_ids: (B,) int64 start-token ids.
        fed: target positions whose logits have been computed; ``logits`` predicts token ``fed - 1``.
        logits: (B, K) float32 logits of token ``fed - 1`` given all earlier tokens; None once all are known.
        decoder: the ``StepDecoder`` holding the keys and values of the window so far.
    """

    layout: tuple[int, int, int]
    start_ids: torch.Tensor
    fed: int = 0
    logits: torch.Tensor | None = None
    decoder: StepDecoder | None = None

    @property
    def length(self) -> int:
        return math.prod(self.layout)


class TokenPrior(nn.Module):
    """Autoregressive prior p(token_p | tokens < p) over a codec's tokens. See the module docstring."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        c = config
        dim_head = c.dim // c.heads
        self.net = PriorTransformer(
            num_tokens=c.codebook_size + 1 + c.num_classes,  # codes, then the start tokens
            logits_dim=c.codebook_size,
            dim=c.dim,
            depth=c.depth,
            heads=c.heads,
            ff_mult=c.ff_mult,
            dropout=c.dropout,
            window=c.context,  # the sliding window: the position itself and context - 1 before it
            embed_sizes={"level": c.levels, **{e: c.edge_positions for e in EDGES}},
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
        return L.grid_layout(shape, c.modality, c.residual)

    def flatten(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, *shape) -> (B, N) in raster order (``prior.layout.flatten``)."""
        return L.flatten(tokens, self.config.residual)

    def unflatten(self, flat: torch.Tensor, shape) -> torch.Tensor:
        """(B, N, *rest) -> (B, *shape, *rest): the inverse of ``flatten``."""
        return L.unflatten(flat, shape, self.config.residual)

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
    def forward(self, inputs: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits for a window of consecutive positions (no earlier context).

        Args:
            inputs: (B, n) int64 input ids (codes 0..K-1 or start ids): the token before each target position.
            pos: (B or 1, n, 5) int64 ``prior.layout.positions`` of the target positions.

        Returns:
            logits (B, n, K) float.
        """
        edge = self.config.edge_positions - 1
        embed_ids = {"level": pos[..., 2], **{e: pos[..., i].clamp(max=edge) for e, i in zip(EDGES, (0, 1, 3, 4))}}
        angles = (pos[..., :2, None].float() * self.inv_freq).flatten(-2)  # (B, n, dh / 2): row, then column
        return self.net(inputs, embed_ids, angles)

    # ----------------------------------------------------------------------------- incremental (cached)
    def start(self, shape, batch: int = 1, classes=None, device=None) -> PriorState:
        """Begin incremental decoding of ``batch`` items of token shape ``shape``; ``state.logits`` predicts token 0."""
        device = device or self.inv_freq.device
        layout = self.layout(shape)
        state = PriorState(layout, self.start_ids(batch, classes, device))
        state.decoder = StepDecoder(self, layout, torch.zeros(batch, dtype=torch.int64), device=device)
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
        """Feed (B, n) input ids for the next n target positions, one at a time; returns their logits (B, n, K).

        The input for target position p is token p - 1 (the start id for p = 0).
        """
        if state.fed + inputs.shape[1] > state.length:
            raise ValueError(f"all {state.length} tokens have been fed")
        logits = torch.stack([state.decoder.step(inputs[:, i]) for i in range(inputs.shape[1])], dim=1)
        state.fed += inputs.shape[1]
        state.logits = logits[:, -1]
        return logits

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
        """Teacher forcing: yields (a, logits (B, n, K) float32 of flat positions a..a+n-1).

        Each window reaches ``receptive_field`` positions back before its targets, so every target sees all the
        context it would see in one pass over the whole sequence.
        """
        inputs, layout = self._inputs(tokens, classes)
        reach = self.config.receptive_field
        for a in range(0, inputs.shape[1], chunk):
            b = min(inputs.shape[1], a + chunk)
            w = max(0, a - reach)
            logits = self(inputs[:, w:b], L.positions(layout, w, b, inputs.device)[None])
            yield a, logits[:, a - w :].float()

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
        state.decoder = StepDecoder(self, layout, torch.zeros(inputs.shape[0], dtype=torch.int64))
        return self.feed(state, inputs)

    # ---------------------------------------------------------------------------------------- sampling
    def sample(self, batch: int, shape, temperature=1.0, top_k=None, top_p=None, seed=None, **kwargs):
        """New tokens (batch, *shape) int64 that the codec's ``decode`` accepts. See ``prior.sample.sample``."""
        return sample(self, batch, shape, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, **kwargs)
