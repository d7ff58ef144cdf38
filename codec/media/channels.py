"""Channel conversion between what a file holds and what a model takes: one place for training, tokenizing,
coding and evaluation."""

import torch

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights: RGB -> gray for a one-channel image model


def to_image_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, H, W) with C in {1, 3} -> (channels, H, W): replicate gray to RGB, or RGB to BT.601 luma."""
    if x.shape[0] == channels:
        return x
    if channels == 3:
        return x.expand(3, -1, -1)
    weights = torch.tensor(LUMA, dtype=x.dtype).view(3, 1, 1)
    return (x * weights).sum(dim=0, keepdim=True)


def to_audio_channels(y: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, T) -> (channels, T): duplicate mono, average to mono, or keep the first two channels."""
    if y.shape[0] == channels:
        return y
    if channels == 1:
        return y.mean(dim=0, keepdim=True)
    return y.expand(2, -1) if y.shape[0] == 1 else y[:2]
