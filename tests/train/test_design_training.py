"""Training options of the CPU-efficient designs: the compressed complex STFT loss and saturation jitter."""

import math

import numpy as np
import torch

from codec.core.spectral import CompressedSTFTLoss
from codec.train.data import ImageFolderDataset


def test_compressed_stft_loss_values():
    loss = CompressedSTFTLoss(n_fft=64, hop=16)
    x = torch.randn(2, 1, 800)
    assert float(loss(x, x)) == 0.0
    # y = a x scales every compressed bin by a^0.3 (up to the tiny floor): loss = (a^0.3 - 1)^2 mean |C(x)|^2
    a = 3.0
    cx = loss.compressed(x)
    want = (a**0.3 - 1) ** 2 * float(cx.abs().square().mean())
    assert math.isclose(float(loss(a * x, x)), want, rel_tol=1e-3)
    # a phase change costs, a magnitude loss would not see it: a half-period delay of a pure tone
    t = torch.arange(4000.0)
    tone = torch.sin(2 * math.pi * t / 32)
    shifted = torch.sin(2 * math.pi * (t - 16) / 32)
    assert float(loss(shifted, tone)) > 0.5 * float(loss.compressed(tone).abs().square().mean())


def test_saturation_jitter_keeps_grays_and_scales_colour(tmp_path):
    from PIL import Image

    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:, :8] = (200, 40, 40)  # red
    pixels[:, 8:] = (90, 90, 90)  # gray
    Image.fromarray(pixels).save(tmp_path / "a.png")
    plain = ImageFolderDataset(tmp_path, 16, train=True, saturation=0.0)
    jit = ImageFolderDataset(tmp_path, 16, train=True, saturation=0.9)
    changed = False
    for i in range(8):
        a, b = plain[(0, i)]["x"], jit[(0, i)]["x"]
        # grays are fixed points of a saturation change
        gray_cols = (a[0] - a[1]).abs() < 1e-6
        torch.testing.assert_close(b[:, gray_cols], a[:, gray_cols], rtol=0, atol=1e-6)
        lum = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        torch.testing.assert_close((b * lum).sum(0)[~gray_cols], (a * lum).sum(0)[~gray_cols], rtol=0, atol=2e-2)
        changed |= not torch.allclose(a, b)
    assert changed
