"""Mel filterbank, spectral losses, PSNR and SI-SNR against hand-computed values and known cases."""

import math

import pytest
import torch

from codec.core.spectral import (
    MultiResolutionMelLoss,
    MultiResolutionSTFTLoss,
    hz_to_mel,
    mel_distance,
    mel_filterbank,
    mel_to_hz,
)
from codec.train.losses import CodecLoss, clamp_aware_output
from codec.train.metrics import psnr, si_snr

# ------------------------------------------------------------------------------------------- mel scale


def test_htk_mel_scale_known_points():
    assert hz_to_mel(0.0) == 0.0
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.02)  # 999.986: the HTK scale is anchored near 1 kHz
    assert hz_to_mel(700.0) == pytest.approx(2595 * math.log10(2))
    f = torch.tensor([0.0, 440.0, 1000.0, 8000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f)), f)


def test_mel_filterbank_matches_hand_computation():
    # n_fft=16 at 16 kHz: bins at 0, 1000, ..., 8000 Hz. Two filters need 4 mel points from 0 to mel(8000):
    m_max = 2595 * math.log10(1 + 8000 / 700)  # 2840.02 mel
    edges = [700 * (10 ** (m_max * i / 3 / 2595) - 1) for i in range(4)]  # 0, 921.46, 3055.88, 8000 Hz
    assert edges[1] == pytest.approx(921.46, abs=0.01) and edges[2] == pytest.approx(3055.88, abs=0.01)
    fb = mel_filterbank(16, 2, 16000)
    assert fb.shape == (2, 9) and fb.dtype == torch.float32
    # filter 0 rises 0 -> 921.46 Hz and falls to 3055.88 Hz: bin 1 (1000 Hz) is on the falling edge
    assert fb[0, 1].item() == pytest.approx((edges[2] - 1000) / (edges[2] - edges[1]), abs=1e-6)  # 0.9632
    assert fb[0, 2].item() == pytest.approx((edges[2] - 2000) / (edges[2] - edges[1]), abs=1e-6)  # 0.4947
    assert fb[0, 3].item() == pytest.approx(0.0262, abs=1e-4)
    assert fb[0, [0, 4, 5, 6, 7, 8]].abs().max() == 0
    # filter 1 rises from 921.46 Hz to its peak at 3055.88 Hz, then falls to 0 at 8000 Hz
    assert fb[1, 1].item() == pytest.approx((1000 - edges[1]) / (edges[2] - edges[1]), abs=1e-6)  # 0.0368
    assert fb[1, 3].item() == pytest.approx(0.9738, abs=1e-4)
    assert fb[1, 4].item() == pytest.approx((8000 - 4000) / (8000 - edges[2]), abs=1e-6)  # 0.8090
    assert fb[1, 8].item() == pytest.approx(0.0, abs=1e-6)
    assert fb[1, 0].item() == 0.0


def test_mel_filterbank_peaks_at_centre_bins_and_covers_the_band():
    n_fft, sr, n_mels = 512, 16000, 40
    fb = mel_filterbank(n_fft, n_mels, sr)
    assert fb.shape == (n_mels, n_fft // 2 + 1)
    assert fb.min() >= 0 and fb.max() <= 1
    m = torch.linspace(0, hz_to_mel(sr / 2), n_mels + 2, dtype=torch.float64)
    centres = mel_to_hz(m[1:-1]) * n_fft / sr  # fractional bin of each filter's peak
    peaks = fb.argmax(dim=1).double()
    assert (peaks - centres).abs().max() <= 1.0  # the peak is at a bin next to the centre frequency
    assert (fb.sum(dim=1) > 0).all()  # no empty filter
    assert (torch.diff(peaks) >= 0).all()
    # between the first and last centre, every bin is covered by two overlapping triangles summing to 1
    inner = slice(int(centres[0].ceil()), int(centres[-1].floor()) + 1)
    assert torch.allclose(fb[:, inner].sum(dim=0), torch.ones(1), atol=1e-5)


def test_mel_filterbank_respects_f_min_f_max():
    fb = mel_filterbank(1024, 20, 24000, f_min=300.0, f_max=4000.0)
    bins = torch.arange(513) * 24000 / 1024
    assert fb[:, bins <= 300].abs().max() == 0 and fb[:, bins >= 4000].abs().max() < 1e-6
    with pytest.raises(ValueError):
        mel_filterbank(1024, 20, 24000, f_max=13000.0)


# ---------------------------------------------------------------------------------------------- losses


def _signals(b=2, c=1, t=4096):
    g = torch.Generator().manual_seed(0)
    time = torch.arange(t) / 16000
    tone = 0.5 * torch.sin(2 * math.pi * 440 * time)
    return (tone + 0.05 * torch.randn(b, c, t, generator=g)).clamp(-1, 1)


def test_stft_loss_zero_for_identical_and_positive_otherwise():
    loss = MultiResolutionSTFTLoss()
    x = _signals()
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    noisy = x + 0.1 * torch.randn_like(x)
    worse = x + 0.3 * torch.randn_like(x)
    assert 0 < loss(noisy, x).item() < loss(worse, x).item()
    assert loss(0.5 * x, x).item() > 0.1  # magnitude errors count (it is not scale invariant)


def test_mel_loss_and_distance():
    x = _signals(b=3)
    mel = MultiResolutionMelLoss(16000)
    assert mel(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert mel(x + 0.1 * torch.randn_like(x), x).item() > 0
    noise = torch.randn_like(x)
    est = x + noise * torch.tensor([0.0, 0.05, 0.3]).view(3, 1, 1)
    d = mel_distance(est, x, 16000)
    assert d.shape == (3,)
    assert d[0].item() == pytest.approx(0.0, abs=1e-6) and d[0] < d[1] < d[2]


def test_losses_work_on_short_signals_and_under_bf16_autocast():
    x = _signals(t=600)  # shorter than half the longest window: zero-padded frames
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = MultiResolutionSTFTLoss()(x.bfloat16(), x)
    assert v.dtype == torch.float32 and torch.isfinite(v)


def test_codec_loss_terms():
    x = torch.rand(2, 3, 8, 8)
    vq = torch.tensor(0.5)
    l1 = CodecLoss("image", image_loss="l1", vq_weight=2.0)
    total, terms = l1(x + 0.1, x, vq)
    assert terms["recon"].item() == pytest.approx(0.1, abs=1e-6)
    assert total.item() == pytest.approx(0.1 + 2 * 0.5, abs=1e-6)
    total, terms = CodecLoss("image", image_loss="l2")(x + 0.1, x, vq)
    assert terms["recon"].item() == pytest.approx(0.01, abs=1e-6)
    a = _signals()
    total, terms = CodecLoss("audio", sample_rate=16000)(a, a, torch.tensor(0.0))
    assert set(terms) == {"recon", "stft", "mel", "vq"} and total.item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError):
        CodecLoss("audio")


def test_clamp_aware_loss_hand_computed():
    # targets on the bounds and inside; overshoot past a bound the target sits on is free, nothing else is
    x = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.5, 0.5, 1.0, 0.0]).view(1, 1, 1, 8)
    y = torch.tensor([1.3, 0.8, -0.4, 0.1, 1.3, -0.2, -0.1, 1.2]).view(1, 1, 1, 8).requires_grad_(True)
    errors = [0.0, 0.2, 0.0, 0.1, 0.8, 0.7, 1.1, 1.2]  # by hand
    total, terms = CodecLoss("image", image_loss="l1", clamp_aware=True, vq_weight=0.0)(y, x, torch.tensor(0.0))
    assert terms["recon"].item() == pytest.approx(sum(errors) / 8, abs=1e-6)
    total.backward()
    sign = [0, -1, 0, 1, 1, -1, -1, 1]  # d|y - x| / dy where counted, 0 where free
    assert torch.allclose(y.grad.view(-1), torch.tensor(sign, dtype=torch.float32) / 8)
    # on targets at the bounds, short of the opposite bound, it is the error of the clamped (decoded) image
    x = torch.rand(2, 3, 9, 7).round()  # 0 or 1 everywhere
    y = x + (0.5 * torch.randn_like(x)).clamp(-0.9, 0.9)
    l2 = CodecLoss("image", image_loss="l2", clamp_aware=True)(y, x, torch.tensor(0.0))[1]["recon"]
    assert l2.item() == pytest.approx(((y.clamp(0, 1) - x) ** 2).mean().item(), rel=1e-6)
    # off by default; the output itself is untouched where the target is inside (0, 1)
    x = torch.full((1, 3, 4, 4), 0.5)
    assert torch.equal(clamp_aware_output(x + 2, x), x + 2)
    assert CodecLoss("image")(x * 0 + 1.5, x * 0 + 1, torch.tensor(0.0))[1]["recon"].item() == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------- metrics


def test_psnr_hand_computed():
    y = torch.zeros(2, 3, 4, 4)
    x = y.clone()
    x[0] += 0.1  # MSE 0.01 -> 20 dB
    x[1, :, :2] += 0.2  # half the pixels off by 0.2: MSE 0.02 -> 10 log10(50) = 16.99 dB
    p = psnr(x, y)
    assert p.shape == (2,)
    assert p[0].item() == pytest.approx(20.0, abs=1e-4)
    assert p[1].item() == pytest.approx(10 * math.log10(50), abs=1e-4)
    assert psnr(x, y, max_val=2.0)[0].item() == pytest.approx(10 * math.log10(4 / 0.01), abs=1e-4)
    assert psnr(y, y)[0].item() == pytest.approx(100.0)  # MSE floored, not inf


def test_si_snr_hand_computed():
    ref = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    # est = ref + e with e = [1, 1, -1, -1] orthogonal to ref and of equal energy: 0 dB
    assert si_snr(torch.tensor([[2.0, 0.0, 0.0, -2.0]]), ref).item() == pytest.approx(0.0, abs=1e-5)
    # est = [3, -1, 1, -3]: projection 2 ref (energy 16), residual [1, 1, -1, -1] (energy 4): 10 log10(4)
    est = torch.tensor([[3.0, -1.0, 1.0, -3.0]])
    assert si_snr(est, ref).item() == pytest.approx(10 * math.log10(4), abs=1e-5)
    # invariant to scale and to a DC offset
    assert si_snr(5 * est + 0.7, ref).item() == pytest.approx(10 * math.log10(4), abs=1e-4)


def test_si_snr_known_cases():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(4, 1, 16000, generator=g)
    assert (si_snr(2 * ref, ref) > 60).all()  # a scaled copy is perfect
    noise = torch.randn(4, 1, 16000, generator=g)
    for snr_db in (0.0, 10.0, 20.0):
        scale = ref.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() / 10 ** (snr_db / 20)
        est = ref + noise / noise.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() * scale
        assert si_snr(est, ref) == pytest.approx(torch.full((4,), snr_db), abs=0.3)
    # exactly orthogonal noise at 10 dB gives exactly 10 dB
    r = ref[0].flatten() - ref[0].mean()
    n = noise[0].flatten() - noise[0].mean()
    n = n - (n @ r) / (r @ r) * r
    n = n * (r.norm() / n.norm()) / math.sqrt(10)
    assert si_snr((r + n)[None], r[None]).item() == pytest.approx(10.0, abs=1e-3)
    assert si_snr(torch.zeros(1, 100), ref[0, :, :100]).item() < -60  # silence is a terrible estimate


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError):
        psnr(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        si_snr(torch.zeros(2, 3), torch.zeros(3, 3))
