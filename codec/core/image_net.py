"""Convolutional encoder and decoder of the image codec (residual blocks, local GroupNorm, SiLU)."""

import torch
import torch.nn.functional as F
from torch import nn

from codec.core.config import ImageCodecConfig
from codec.core.layers import LocalGroupNorm, ResBlock2d


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
