"""Training options of the CPU-efficient designs: the compressed complex STFT loss, the frame-periodic loss and
saturation jitter."""

import math

import numpy as np
import pytest
import torch

from codec.core.spectral import CompressedSTFTLoss, FramePeriodicLoss
from codec.train.data import ImageFolderDataset
from codec.train.losses import CodecLoss


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


def _periodic_reference(x: np.ndarray, period: int, power: float = 0.3) -> np.ndarray:
    """float64 numpy: the compressed spectrum of the mean of the whole frames of a 1-D signal."""
    n = len(x) // period
    spec = np.fft.rfft(x[: n * period].reshape(n, period).mean(0))
    return spec * (np.abs(spec) ** 2 + 1e-8) ** ((power - 1) / 2)


@pytest.mark.parametrize("period", [7, 20, 33])
def test_frame_periodic_loss_against_a_float64_reference(period):
    g = torch.Generator().manual_seed(period)
    loss = FramePeriodicLoss(period)
    x = torch.randn(2, 3, 11 * period + period // 2, generator=g, dtype=torch.float64)  # a partial last frame
    y = torch.randn(x.shape, generator=g, dtype=torch.float64)
    got = loss.component(x)
    assert got.shape == (6, period // 2 + 1) and got.dtype == torch.complex64
    want = np.stack([_periodic_reference(row, period) for row in x.reshape(6, -1).numpy()])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    diff = want - np.stack([_periodic_reference(row, period) for row in y.reshape(6, -1).numpy()])
    assert math.isclose(float(loss(x.float(), y.float())), float(np.mean(np.abs(diff) ** 2)), rel_tol=1e-4)
    assert float(loss(x, x)) == 0.0


def test_frame_periodic_loss_sees_the_repeating_part_only():
    period, frames = 16, 40
    loss = FramePeriodicLoss(period)
    f = torch.randn(period, generator=torch.Generator().manual_seed(0))
    repeating = f.repeat(frames)  # the same frame over and over: a comb of tones at multiples of the frame rate
    alternating = torch.cat([f, -f]).repeat(frames // 2)  # same energy and frame spectra, nothing repeats
    silence = torch.zeros(period * frames)
    assert float(loss(alternating, silence)) < 1e-9
    # the whole frame is the repeating part: its compressed spectrum, hand-computed
    spec = torch.fft.rfft(f)
    want = (spec.abs() ** 0.3).square().mean()
    assert math.isclose(float(loss(repeating, silence)), float(want), rel_tol=1e-4)
    with pytest.raises(ValueError, match="shorter than one period"):
        loss(f[:5], f[:5])
    with pytest.raises(ValueError, match="period"):
        FramePeriodicLoss(1)


def test_codec_loss_adds_the_frame_periodic_term():
    x = torch.randn(2, 1, 16 * 40, generator=torch.Generator().manual_seed(1))
    comb = 0.1 * torch.randn(40, generator=torch.Generator().manual_seed(2)).repeat(16)
    base = CodecLoss("audio", sample_rate=16000, cstft_weight=1.0)
    plus = CodecLoss("audio", sample_rate=16000, cstft_weight=1.0, periodic_weight=2.0, hop=40)
    total0, terms0 = base(x + comb, x, torch.tensor(0.0))
    total1, terms1 = plus(x + comb, x, torch.tensor(0.0))
    assert "periodic" not in terms0
    assert math.isclose(float(terms1["periodic"]), float(FramePeriodicLoss(40)(x + comb, x)), rel_tol=1e-6)
    assert math.isclose(float(total1), float(total0) + 2.0 * float(terms1["periodic"]), rel_tol=1e-5)
    with pytest.raises(ValueError, match="hop"):
        CodecLoss("audio", sample_rate=16000, periodic_weight=1.0)


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
