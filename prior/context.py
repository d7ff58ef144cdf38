"""ContextPrior: an entropy model that predicts many tokens per network pass (fast parallel range coding).

The Transformer prior (``prior.model``) predicts one token per step, so coding an image of 500,000 tokens takes
500,000 sequential steps. The context model instead codes a grid of tokens (L, H, W) (see ``prior.layout``) in a
fixed, small number of *passes*: level by level, coarse to fine, and within each level a few interleaved groups of
positions (a checkerboard, or a multi-scale pattern of five groups for the first level, which has no coarser level
to lean on). Every token of one pass is predicted at once, by a small convolutional network, from what the
earlier passes coded:

- every token of the lower levels, at the position and around it (all positions are known by then);
- the tokens of the same level in the groups already coded, around the position;
- nothing else. The inputs are the tokens' embeddings times a "known" mask, plus the masks themselves, so edges
  of the grid, of a coded window and the pass pattern are all seen the same way: as unknown.

Schedules (``group_ids``), with (r, c) a token's absolute row and column:

    "cb"   2 groups: (r + c) mod 2 = 0, then 1 (checkerboard)
    "ms5"  5 groups, coarse to fine: r, c = 0 mod 4; r, c = 2 mod 4; the rest of r, c even; r, c both odd; the
           remaining half (r + c odd)
    "cb" on audio (one row) is frames even then odd; "ms5" is frames 0 mod 4, 2 mod 4, then odd (groups 1 and 3
    are empty).

The network, per pass (the pass's index selects a learned bias):

    x   (L (E + 1), H, W)  embeddings E per level times known, and the L known masks
    h   = relu(conv_k(x) + bias[pass])                    (hidden, H, W)
    h   = h + relu(conv_k(h))          depth times
    h   = relu(conv_1(h))
    logits = head[level] h             (K,) at each position of the pass

Convolutions are "same"-padded with zeros (k x k for images, 1 x k for audio). The receptive field is
(depth + 1) (k - 1) + 1 positions across. Every operation has an exact integer counterpart
(``prior.context_integer``), which is what the range coder uses.
"""

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from prior.config import codec_layout
from prior.layout import grid_layout

SCHEDULES = {"cb": 2, "ms5": 5}  # name -> number of groups


@dataclass
class ContextConfig:
    """A ContextPrior: the codec's token layout (as ``PriorConfig``) and the network's size."""

    modality: str = "image"
    codebook_size: int = 1024
    levels: int = 1
    residual: bool = False
    codec_hash: str = ""
    embed: int = 16  # embedding width per level
    hidden: int = 96
    depth: int = 2  # residual k x k convolutions after the first
    kernel: int = 3  # k: k x k on images, 1 x k on audio
    first_schedule: str = "ms5"  # level 0
    schedule: str = "cb"  # levels 1..L-1

    def __post_init__(self):
        if self.modality not in ("image", "audio"):
            raise ValueError(f"modality must be 'image' or 'audio', got {self.modality!r}")
        if (
            self.levels < 1
            or (not self.residual and self.levels != 1)
            or (self.modality == "audio" and not self.residual)
        ):
            raise ValueError(f"levels must be >= 1 (1 for non-residual tokens; audio is residual), got {self.levels}")
        if self.codebook_size < 2 or min(self.embed, self.hidden) < 1 or self.depth < 0:
            raise ValueError("codebook_size must be >= 2, embed and hidden >= 1, depth >= 0")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")
        for s in (self.first_schedule, self.schedule):
            if s not in SCHEDULES:
                raise ValueError(f"unknown schedule {s!r}; known: {', '.join(SCHEDULES)}")

    @classmethod
    def for_codec(cls, codec_model, **overrides) -> "ContextConfig":
        """The layout fields (and codec_hash) taken from a codec (``prior.config.codec_layout``); the rest from
        ``overrides``."""
        return cls(**{**overrides, **codec_layout(codec_model)})

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return (1, self.kernel) if self.modality == "audio" else (self.kernel, self.kernel)

    @property
    def reach(self) -> int:
        """How many positions away (along a row or column) a prediction can look."""
        return (self.depth + 1) * (self.kernel // 2)

    def level_schedule(self, level: int) -> str:
        return self.first_schedule if level == 0 else self.schedule

    def passes(self, levels: int | None = None) -> list[tuple[int, int]]:
        """(level, group) of every pass in coding order, for the first ``levels`` levels (default all)."""
        n = self.levels if levels is None else levels
        return [(lv, g) for lv in range(n) for g in range(SCHEDULES[self.level_schedule(lv)])]

    def pass_index(self, level: int, group: int) -> int:
        """The pass's row in the learned per-pass bias."""
        return sum(SCHEDULES[self.level_schedule(lv)] for lv in range(level)) + group

    @property
    def num_passes(self) -> int:
        return len(self.passes())


def context_config_to_dict(config: ContextConfig) -> dict:
    return {"kind": "context", **asdict(config)}


def context_config_from_dict(data: dict) -> ContextConfig:
    """The config from its dict form (``kind`` "context"); unknown keys are an error."""
    data = {k: v for k, v in data.items() if k != "kind"}
    unknown = set(data) - {f.name for f in fields(ContextConfig)}
    if unknown:
        raise ValueError(f"unknown context model config keys: {sorted(unknown)}")
    return ContextConfig(**data)


def group_ids(schedule: str, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Group of each position (broadcast of ``rows`` and ``cols``, absolute grid coordinates), int64."""
    r, c = torch.broadcast_tensors(rows, cols)
    if schedule == "cb":
        return (r + c) % 2
    if schedule == "ms5":
        g = torch.full(r.shape, 4, dtype=torch.int64, device=r.device)
        even = (r % 2 == 0) & (c % 2 == 0)
        g[(r % 2 == 1) & (c % 2 == 1)] = 3
        g[even] = 2
        g[(r % 4 == 2) & (c % 4 == 2)] = 1
        g[(r % 4 == 0) & (c % 4 == 0)] = 0
        return g
    raise ValueError(f"unknown schedule {schedule!r}")


def pass_masks(
    config: ContextConfig, rows: torch.Tensor, cols: torch.Tensor, inside: torch.Tensor, level: int, group: int
):
    """(known (..., L, H, W) bool, target (..., H, W) bool) of one pass over a grid window (or a batch of them).

    Args:
        rows, cols: (H, 1) and (1, W) absolute coordinates of the window's rows and columns.
        inside: (..., L, H, W) bool: the tokens that belong to what is coded (a chunk of a file, or a crop).
    """
    g = group_ids(config.level_schedule(level), rows, cols)
    known = inside.clone()
    known[..., level + 1 :, :, :] = False
    known[..., level, :, :] &= g < group
    return known, inside[..., level, :, :] & (g == group)


def pad_levels(tokens: torch.Tensor, inside: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A window of the first l < ``levels`` levels (a file coded at a lower rate) padded with unknown levels, as the
    network's input has a place for every level: (L', H, W) tokens and inside -> (levels, H, W)."""
    missing = levels - tokens.shape[0]
    if missing <= 0:
        return tokens, inside
    pad = (0, 0, 0, 0, 0, missing)
    return F.pad(tokens, pad), F.pad(inside, pad)


class ContextPrior(nn.Module):
    """Level-parallel convolutional context model over a codec's tokens (see the module docstring)."""

    def __init__(self, config: ContextConfig):
        super().__init__()
        self.config = c = config
        L, K = c.levels, c.codebook_size
        kh, kw = c.kernel_hw
        pad = (kh // 2, kw // 2)
        self.embed = nn.Parameter(torch.randn(L, K, c.embed) * 0.5)
        self.conv_in = nn.Conv2d(L * (c.embed + 1), c.hidden, (kh, kw), padding=pad)
        self.pass_bias = nn.Parameter(torch.zeros(c.num_passes, c.hidden))
        self.convs = nn.ModuleList([nn.Conv2d(c.hidden, c.hidden, (kh, kw), padding=pad) for _ in range(c.depth)])
        self.proj = nn.Conv2d(c.hidden, c.hidden, 1)
        self.head = nn.Parameter(torch.randn(L, K, c.hidden) / math.sqrt(c.hidden))
        self.head_bias = nn.Parameter(torch.zeros(L, K))

    def layout(self, shape) -> tuple[int, int, int]:
        """(L, H, W) grid of one item's token shape (``prior.layout.grid_layout``)."""
        return grid_layout(shape, self.config.modality, self.config.residual)

    def inputs(self, tokens: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """(B, L, H, W) tokens (any value where unknown) and known masks -> (B, L (E + 1), H, W) network input."""
        B, L, H, W = tokens.shape
        emb = torch.stack([self.embed[j][tokens[:, j].clamp(0, self.config.codebook_size - 1)] for j in range(L)], 1)
        k = known.to(emb.dtype)
        x = torch.cat([emb * k[..., None], k[..., None]], dim=-1)  # B L H W (E + 1)
        return x.permute(0, 1, 4, 2, 3).reshape(B, -1, H, W)

    def features(self, x: torch.Tensor, pass_index: torch.Tensor) -> torch.Tensor:
        """Network input (B, L (E + 1), H, W) and pass indices (B,) -> features (B, hidden, H, W)."""
        h = F.relu(self.conv_in(x) + self.pass_bias[pass_index][:, :, None, None])
        for conv in self.convs:
            h = h + F.relu(conv(h))
        return F.relu(self.proj(h))

    def head_logits(self, feats: torch.Tensor, level: int) -> torch.Tensor:
        """Features (..., hidden) -> logits (..., K) of ``level``."""
        return feats @ self.head[level].T + self.head_bias[level]

    def pass_logits(
        self, tokens: torch.Tensor, inside: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, level, group
    ):
        """Logits (n, K) of the targets of one pass over one window (L, H, W), in raster order of the window."""
        tokens, inside = pad_levels(tokens, inside, self.config.levels)
        known, target = pass_masks(self.config, rows, cols, inside, level, group)
        x = self.inputs(tokens[None], known[None])
        f = self.features(x, torch.tensor([self.config.pass_index(level, group)], device=x.device))[0]
        return self.head_logits(f.permute(1, 2, 0)[target], level)

    def loss_nats(self, tokens: torch.Tensor, inside: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss on windows (B, L, H, W) whose tokens ``inside`` (B, L, H, W) bool (default: all) are
        coded: (summed nats, per-level summed nats (L,)), every inside token counted once. All passes of a batch
        run as one batch of B x passes."""
        c = self.config
        B, L, H, W = tokens.shape
        dev = tokens.device
        rows, cols = torch.arange(H, device=dev)[:, None], torch.arange(W, device=dev)[None]
        if inside is None:
            inside = torch.ones(B, L, H, W, dtype=torch.bool, device=dev)
        passes = c.passes(L)
        known, targets = zip(*(pass_masks(c, rows, cols, inside, lv, g) for lv, g in passes))
        x = self.inputs(tokens.repeat(len(passes), 1, 1, 1), torch.cat(known))
        idx = torch.tensor([c.pass_index(lv, g) for lv, g in passes], device=dev).repeat_interleave(B)
        f = self.features(x, idx).reshape(len(passes), B, c.hidden, H, W).permute(0, 1, 3, 4, 2)
        per_level = torch.zeros(L, device=dev)
        total = f.new_zeros(())
        for i, (lv, _) in enumerate(passes):
            logits = self.head_logits(f[i][targets[i]], lv).float()
            nats = F.cross_entropy(logits, tokens[:, lv][targets[i]], reduction="sum")
            total = total + nats
            per_level[lv] = per_level[lv] + nats.detach()
        return total, per_level
