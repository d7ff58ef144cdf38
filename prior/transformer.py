"""The prior's network: a pre-norm decoder-only Transformer with 2-D rotary attention over a sliding window.

    x = token_emb(input) + level_embed + top/left/bottom/right_embed          (B, n, dim)
    per block:  x = x + Attention(LayerNorm(x))   then   x = x + FeedForward(LayerNorm(x))
    logits = to_logits(LayerNorm(x))                                         (B, n, K)

Attention: q, k, v and the output projection without bias; q and k are rotated pair by pair (dims 2i, 2i + 1) by
angles that the caller computes from each position's (row, col) (``TokenPrior``); position i attends to
i - window + 1 .. i. FeedForward: Linear -> GELU -> dropout -> Linear, with biases. LayerNorm: no bias; its gain
is stored as an offset from one (the gain is 1 + gamma).

The weights' layout is fixed here, and it is the one the files hold. Bundled priors were trained with
x-transformers 2.x (``TransformerWrapper`` + ``Decoder`` of this shape): the parameter names below are its names,
kept so that those files load unchanged and the hashes ``.vqc`` files record stay the same::

    token_emb.emb.weight                                  (K + 1 + classes, dim)
    embeds.{level,top,left,bottom,right}_embed.weight      (levels or edge_positions, dim)
    attn_layers.layers.{2i}.0.0.gamma                      block i: attention pre-norm (gain - 1)
    attn_layers.layers.{2i}.1.to_{q,k,v,out}.weight
    attn_layers.layers.{2i+1}.0.0.gamma                    block i: feed-forward pre-norm
    attn_layers.layers.{2i+1}.1.ff.0.0.{weight,bias}       (inner, dim)
    attn_layers.layers.{2i+1}.1.ff.2.{weight,bias}         (dim, inner)
    attn_layers.final_norm.gamma
    to_logits.weight                                      (K, dim)

``prior.incremental.StepDecoder`` reads the same weights through the accessors here (``blocks``).
"""

import torch
import torch.nn.functional as F
from torch import nn

EDGES = ("top", "left", "bottom", "right")


class LayerNorm(nn.Module):
    """LayerNorm without bias and with a unit-offset gain: ``layer_norm(x) * (1 + gamma)``, gamma starting at 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(dim))

    def gain(self) -> torch.Tensor:
        return self.gamma + 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.gain()


def rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn each pair (2i, 2i + 1) of t's last axis by an angle: ``t * cos + rotate_half(t) * sin``.

    t: (B, H, n, dh); cos, sin: (B or 1, 1, n, dh) with each angle repeated for its pair.
    """
    pairs = t.unflatten(-1, (-1, 2))
    half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return t * cos + half * sin


class Attention(nn.Module):
    """Multi-head self-attention over a sliding window: (B, n, dim) -> (B, n, dim)."""

    def __init__(self, dim: int, heads: int, window: int, dropout: float):
        super().__init__()
        self.heads, self.window, self.dropout = heads, window, dropout
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        q, k, v = (
            proj(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v)
        )
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # (B, H, n, dh)
        i = torch.arange(n, device=x.device)
        dist = i[:, None] - i[None, :]
        allowed = (dist >= 0) & (dist < self.window)  # (n, n): the position itself and window - 1 before it
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        return self.to_out(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    """Linear -> GELU -> dropout -> Linear: (B, n, dim) -> (B, n, dim)."""

    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__()
        inner = dim * mult
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, inner), nn.GELU()), nn.Dropout(dropout), nn.Linear(inner, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class PreNormResidual(nn.ModuleList):
    """``x + branch(norm(x))``, held as ``[[norm], branch]``: the files' parameter names (``layers.j.0.0.gamma``)."""

    def __init__(self, dim: int, branch: nn.Module):
        super().__init__([nn.ModuleList([LayerNorm(dim)]), branch])

    @property
    def norm(self) -> LayerNorm:
        return self[0][0]

    @property
    def branch(self) -> nn.Module:
        return self[1]

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return x + self.branch(self.norm(x), *args)


class AttentionLayers(nn.Module):
    """``depth`` blocks of attention then feed-forward, and the final norm."""

    def __init__(self, dim: int, depth: int, heads: int, ff_mult: int, window: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            self.layers.append(PreNormResidual(dim, Attention(dim, heads, window, dropout)))
            self.layers.append(PreNormResidual(dim, FeedForward(dim, ff_mult, dropout)))
        self.final_norm = LayerNorm(dim)

    def blocks(self) -> list[tuple[PreNormResidual, PreNormResidual]]:
        """(attention, feed-forward) of every block, in order."""
        return list(zip(self.layers[0::2], self.layers[1::2]))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.blocks():
            x = ff(attn(x, cos, sin))
        return self.final_norm(x)


class TokenEmbedding(nn.Module):
    def __init__(self, dim: int, num_tokens: int):
        super().__init__()
        self.emb = nn.Embedding(num_tokens, dim)
        nn.init.kaiming_normal_(self.emb.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)


class PriorTransformer(nn.Module):
    """Token ids (B, n) with position embeddings and rotary angles -> logits (B, n, logits_dim).

    Args:
        num_tokens: input vocabulary (codes, then start tokens).
        logits_dim: K, the codes predicted.
        dim, depth, heads, ff_mult, dropout: the Transformer's size.
        window: positions each one attends to (itself included).
        embed_sizes: {"level": L, "top": E, ...}: one learned embedding table per position feature.
    """

    def __init__(self, num_tokens, logits_dim, dim, depth, heads, ff_mult, dropout, window, embed_sizes: dict):
        super().__init__()
        self.token_emb = TokenEmbedding(dim, num_tokens)
        self.embeds = nn.ModuleDict({f"{name}_embed": nn.Embedding(n, dim) for name, n in embed_sizes.items()})
        self.emb_dropout = nn.Dropout(dropout)
        self.attn_layers = AttentionLayers(dim, depth, heads, ff_mult, window, dropout)
        self.to_logits = nn.Linear(dim, logits_dim, bias=False)

    def forward(self, ids: torch.Tensor, embed_ids: dict, angles: torch.Tensor) -> torch.Tensor:
        """
        Args:
            ids: (B, n) int64 input ids.
            embed_ids: {name: (B or 1, n) int64} for every table of ``embed_sizes``, in its order.
            angles: (B or 1, n, dim_head / 2) float rotary angle of every pair of each head's dimensions.
        """
        x = self.token_emb(ids)
        for name, idx in embed_ids.items():
            x = x + self.embeds[f"{name}_embed"](idx)
        x = self.emb_dropout(x)
        turn = angles.repeat_interleave(2, dim=-1)[:, None]  # (B, 1, n, dh): one angle per pair of dims
        return self.to_logits(self.attn_layers(x, turn.cos(), turn.sin()))
