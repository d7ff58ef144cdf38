"""The CPU-efficient designs: the frame-rate audio network's STFT framing and inverse, the shuffle image network's
layout, and the configs that choose them (their losses and data options: tests/train/test_design_training.py)."""

import math

import numpy as np
import pytest
import torch

from codec import AudioCodecConfig, ImageCodecConfig
from codec.core.audio_stft_net import STFTEncoder, istft_same
from codec.core.image_net import ShuffleEncoder


@pytest.mark.parametrize("n_fft,hop", [(1280, 320), (16, 4), (12, 6)])
@pytest.mark.parametrize("frames", [1, 2, 9])
def test_istft_inverts_the_encoder_framing(n_fft, hop, frames):
    """Every one of the t * hop samples comes back (float64), the first and last included."""
    cfg = AudioCodecConfig(arch="stft", ratios=(hop,), n_fft=n_fft)
    enc = STFTEncoder(cfg).double()
    x = torch.randn(3, frames * hop, dtype=torch.float64)
    pad = (n_fft - hop) // 2
    spec = torch.stft(
        torch.nn.functional.pad(x, (pad, pad)), n_fft, hop, window=enc.window, center=False, return_complex=True
    )
    assert spec.shape[-1] == frames
    y = istft_same(spec, n_fft, hop, enc.window, pad)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-10)


def test_encoder_spectrum_is_the_compressed_stft():
    """Bin k of frame j equals |X|^0.3 e^{i angle X} of the padded frame, computed here with a naive DFT."""
    cfg = AudioCodecConfig(arch="stft", ratios=(4,), n_fft=8)
    enc = STFTEncoder(cfg).double()
    x = torch.randn(1, 1, 12, dtype=torch.float64)
    feats = enc.spectrum(x)[0].double()  # (2 * 5, 3) real then imaginary parts
    padded = np.pad(x[0, 0].numpy(), (2, 2))
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(8) / 8)  # periodic Hann
    for j in range(3):
        frame = padded[4 * j : 4 * j + 8] * w
        for k in range(5):
            X = sum(frame[n] * np.exp(-2j * np.pi * k * n / 8) for n in range(8))
            want = X * (abs(X) ** 2 + 1e-8) ** ((0.3 - 1) / 2)
            assert math.isclose(feats[k, j], want.real, abs_tol=1e-5)
            assert math.isclose(feats[5 + k, j], want.imag, abs_tol=1e-5)


def test_shuffle_encoder_never_convolves_at_full_resolution():
    cfg = ImageCodecConfig(arch="shuffle", stem=4, base_channels=8, max_channels=16, norm_groups=0, latent_dim=8)
    enc = ShuffleEncoder(cfg)
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
        for m in enc.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    assert enc(torch.rand(1, 3, 64, 64)).shape == (1, 8, 8, 8)
    for h in hooks:
        h.remove()
    assert seen and max(seen) == 16  # 64 / stem


@pytest.mark.parametrize("bad", [dict(arch="nope"), dict(arch="shuffle", stem=3), dict(arch="shuffle", stem=16)])
def test_image_config_rejects_bad_designs(bad):
    with pytest.raises(ValueError):
        ImageCodecConfig(**bad)


def test_audio_config_rejects_bad_stft_sizes():
    with pytest.raises(ValueError, match="n_fft"):
        AudioCodecConfig(arch="stft", n_fft=300)  # below the hop of 320
    with pytest.raises(ValueError, match="arch"):
        AudioCodecConfig(arch="wavenet")
