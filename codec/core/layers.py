"""Building blocks shared by the image and audio networks."""

import torch
import torch.nn.functional as F
from torch import nn


class LocalGroupNorm(nn.Module):
    """GroupNorm whose statistics are taken per position over each group of channels.

    torch's GroupNorm also averages over the spatial axes, which couples every output to the whole input;
    this version keeps every layer local, so an image encoded in tiles (or audio in chunks) gives the same
    codes as one encoded whole, and the model behaves the same at any resolution.

    At most ``groups`` groups of at least 8 channels each. Input (B, C, *spatial) -> same shape.
    """

    MIN_GROUP_CHANNELS = 8  # statistics over fewer channels per position are degenerate (2 channels: +-1)

    def __init__(self, groups: int, channels: int, eps: float = 1e-5):
        super().__init__()
        groups = max(1, min(groups, channels // self.MIN_GROUP_CHANNELS))
        while channels % groups:
            groups -= 1
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        xg = x.reshape(b, self.groups, c // self.groups, *x.shape[2:])
        var, mean = torch.var_mean(xg, dim=2, unbiased=False, keepdim=True)
        xg = (xg - mean) * torch.rsqrt(var + self.eps)
        shape = (1, c) + (1,) * (x.ndim - 2)
        return xg.reshape_as(x) * self.weight.view(shape) + self.bias.view(shape)


class ResBlock2d(nn.Module):
    """Norm-SiLU-conv3x3 twice with a skip; (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = LocalGroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = LocalGroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class ResUnit1d(nn.Module):
    """SEANet residual unit: SiLU-conv(k=7, dilation)-SiLU-conv(k=1) with a skip; (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels // 2, 7, dilation=dilation, padding=3 * dilation)
        self.conv2 = nn.Conv1d(channels // 2, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class PlainResBlock2d(nn.Module):
    """SiLU-conv3x3 twice with a skip and no normalisation; (B, C, H, W) -> (B, C, H, W).

    The second convolution starts at zero, so every block starts as the identity and a deep stack trains
    without normalisation (the per-position norm is memory-bound on a CPU and costs more than the convs).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))
