"""Convolutional encoder and decoder of the image codec (residual blocks, local GroupNorm, SiLU)."""

import torch
import torch.nn.functional as F
from torch import nn

from codec.core.config import ImageCodecConfig
from codec.core.layers import LocalGroupNorm, PlainResBlock2d, ResBlock2d


def _widths(cfg: ImageCodecConfig) -> list[int]:
    return [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.levels + 1)]


class ImageEncoder(nn.Module):
    """(B, C, H, W) with H, W multiples of f -> (B, latent_dim, H/f, W/f)."""

    def __init__(self, cfg: ImageCodecConfig):
        super().__init__()
        w, g = _widths(cfg), cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.channels, w[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i in range(cfg.levels):
            layers += [ResBlock2d(w[i], w[i], g) for _ in range(cfg.num_res_blocks)]
            layers.append(nn.Conv2d(w[i], w[i + 1], 4, stride=2, padding=1))  # halves H and W
        layers += [ResBlock2d(w[-1], w[-1], g) for _ in range(cfg.num_res_blocks)]
        self.blocks = nn.Sequential(*layers)
        self.norm_out = LocalGroupNorm(g, w[-1])
        self.conv_out = nn.Conv2d(w[-1], cfg.latent_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(x))
        return self.conv_out(F.silu(self.norm_out(h)))


class ImageDecoder(nn.Module):
    """(B, latent_dim, h, w) -> (B, C, h*f, w*f), unbounded values (the codec clamps to [0, 1])."""

    def __init__(self, cfg: ImageCodecConfig):
        super().__init__()
        w, g = _widths(cfg), cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.latent_dim, w[-1], 3, padding=1)
        layers: list[nn.Module] = [ResBlock2d(w[-1], w[-1], g) for _ in range(cfg.num_res_blocks)]
        for i in reversed(range(cfg.levels)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w[i + 1], w[i], 3, padding=1)]
            layers += [ResBlock2d(w[i], w[i], g) for _ in range(cfg.num_res_blocks)]
        self.blocks = nn.Sequential(*layers)
        self.norm_out = LocalGroupNorm(g, w[0])
        self.conv_out = nn.Conv2d(w[0], cfg.channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(z))
        return self.conv_out(F.silu(self.norm_out(h)))


def _set_padding(net: nn.Module, mode: str) -> None:
    """Make every padded convolution of ``net`` pad with ``mode`` ("zeros" or "replicate")."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and any(m.padding):
            m.padding_mode = mode


def _block(c: int, groups: int) -> nn.Module:
    return ResBlock2d(c, c, groups) if groups else PlainResBlock2d(c)


class ShuffleEncoder(nn.Module):
    """Pixel-unshuffle stem, then residual blocks at 1/stem resolution and below; nothing at full resolution.

    (B, C, H, W) in [0, 1], H and W multiples of f -> (B, latent_dim, H/f, W/f). The stem folds each
    stem x stem patch into channels (space-to-depth); each further level halves H and W with a 2x2 stride-2
    convolution.
    """

    def __init__(self, cfg: ImageCodecConfig):
        super().__init__()
        w, g, s = _widths(cfg), cfg.norm_groups, cfg.stem
        layers: list[nn.Module] = [nn.PixelUnshuffle(s), nn.Conv2d(cfg.channels * s * s, w[0], 3, padding=1)]
        for i in range(cfg.levels):
            layers += [_block(w[i], g) for _ in range(cfg.num_res_blocks)]
            layers.append(nn.Conv2d(w[i], w[i + 1], 2, stride=2))
        layers += [_block(w[-1], g) for _ in range(cfg.num_res_blocks)]
        layers += [nn.SiLU(), nn.Conv2d(w[-1], cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)
        _set_padding(self.net, cfg.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)  # centred input: saturated colours sit at the ends of a symmetric range


class ShuffleDecoder(nn.Module):
    """Mirror of ShuffleEncoder: (B, latent_dim, h, w) -> (B, C, h*f, w*f), unbounded values.

    Each level doubles H and W with a 1x1 convolution to 4x the channels and a pixel shuffle; the head predicts
    every stem x stem patch from its low-resolution position (depth-to-space). A decoder deeper than the encoder
    (``decoder_res_blocks``) keeps the first ``num_res_blocks`` blocks of each stage in ``net`` and the rest in
    ``grow`` (keyed by the index in ``net`` they follow), so a grown decoder holds the start model's tensors under
    their own names.
    """

    def __init__(self, cfg: ImageCodecConfig):
        super().__init__()
        w, g, s = _widths(cfg), cfg.norm_groups, cfg.stem
        n, depth = cfg.num_res_blocks, cfg.decoder_stage_blocks  # depth[k]: blocks of the stage at 1/(f / 2^k)
        grow: dict[str, nn.Module] = {}
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, w[-1], 3, padding=1)]
        for k, i in enumerate(reversed(range(cfg.levels + 1))):  # stage k at width w[i], i = levels - k
            if k:
                layers += [nn.Conv2d(w[i + 1], 4 * w[i], 1), nn.PixelShuffle(2)]
            layers += [_block(w[i], g) for _ in range(n)]
            if depth[k] > n:
                grow[str(len(layers) - 1)] = nn.Sequential(*[_block(w[i], g) for _ in range(depth[k] - n)])
        layers += [nn.SiLU(), nn.Conv2d(w[0], cfg.channels * s * s, 3, padding=1), nn.PixelShuffle(s)]
        self.net = nn.Sequential(*layers)
        self.grow = nn.ModuleDict(grow)
        _set_padding(self, cfg.padding)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.net):
            h = layer(h)
            if str(i) in self.grow:
                h = self.grow[str(i)](h)
        return (h + 1) / 2
