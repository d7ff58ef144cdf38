"""Spectral losses and distances for audio, in plain torch (no torchaudio): what training (``codec.train.losses``),
the encoder-side search (``codec.core.refine``) and evaluation (``codec.eval``) measure audio by.

- ``mel_filterbank``: triangular filters on the HTK mel scale, ``mel = 2595 log10(1 + f / 700)``.
- ``MultiResolutionSTFTLoss``: spectral convergence + log-magnitude L1 at several STFT resolutions
  (Yamamoto et al. 2020, Parallel WaveGAN).
- ``MultiResolutionMelLoss``: L1 between log-mel spectrograms at several resolutions (as in DAC / EnCodec).
- ``compress_spectrum``: |X|^c e^{i angle X}, the power-law compression of a complex spectrum.
- ``CompressedSTFTLoss``: MSE between power-law compressed complex spectra (phase-aware).
- ``FramePeriodicLoss``: the same error on the part of a signal that repeats every hop (a frame-rate comb).
- ``mel_distance``: the same log-mel L1, per item, as an evaluation metric; ``mel_l1_by_frame`` splits it into each
  codec frame's share (the encoder-side search keeps its best step per block of frames).

Every spectrum is computed in float32 with autocast disabled, whatever the caller's precision.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# (n_fft, hop, win) per resolution: long windows resolve pitch, short ones resolve transients.
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((2048, 512, 2048), (1024, 256, 1024), (512, 128, 512))
# (n_fft, hop, n_mels): fewer mel bands at short windows, so no band falls between two FFT bins.
MEL_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((2048, 512, 128), (1024, 256, 64), (512, 128, 32), (256, 64, 16))
COMPRESSION = 0.3  # the exponent c of the compressed spectra the losses compare, |X|^c e^{i angle X}
MAG_FLOOR = 1e-5  # magnitudes are clamped to this before the log (about -100 dB re full scale)


def hz_to_mel(f: float | torch.Tensor) -> float | torch.Tensor:
    """HTK mel of a frequency in Hz: 2595 log10(1 + f / 700) (1000 Hz -> 1000 mel)."""
    if isinstance(f, torch.Tensor):
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_to_hz(m: float | torch.Tensor) -> float | torch.Tensor:
    """Inverse of ``hz_to_mel``: 700 (10^(m / 2595) - 1)."""
    if isinstance(m, torch.Tensor):
        return 700.0 * (torch.pow(10.0, m / 2595.0) - 1.0)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular mel filters (HTK scale, peak 1, no area normalisation), like torchaudio's ``norm=None``.

    Filter m rises linearly from 0 at f[m] to 1 at f[m+1] and falls back to 0 at f[m+2], where f holds
    n_mels + 2 frequencies equally spaced in mel between f_min and f_max. FFT bin k sits at k * sr / n_fft.

    Args:
        n_fft: FFT size; the spectrum has n_fft // 2 + 1 bins.
        n_mels: number of filters.
        sample_rate: in Hz.
        f_min: lowest edge in Hz.
        f_max: highest edge in Hz; None = sample_rate / 2.

    Returns:
        (n_mels, n_fft // 2 + 1) float32; multiply a magnitude or power spectrum (..., n_fft // 2 + 1, frames)
        by it to get (..., n_mels, frames).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if n_fft < 2 or n_mels < 1 or sample_rate <= 0:
        raise ValueError(f"need n_fft >= 2, n_mels >= 1, sample_rate > 0; got {n_fft}, {n_mels}, {sample_rate}")
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # (F,)
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    edges = mel_to_hz(mels)  # (n_mels + 2,)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1) each
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    return torch.minimum(rising, falling).clamp_min(0.0).float()  # (n_mels, F)


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int | None = None) -> torch.Tensor:
    """|STFT| with a periodic Hann window, frames centred (zero padding at the ends, as librosa).

    Args:
        x: (..., T) float waveform.
        n_fft, hop, win: FFT size, hop and window length in samples (win <= n_fft; None = n_fft).

    Returns:
        (..., n_fft // 2 + 1, frames) float32 magnitudes, frames = T // hop + 1.
    """
    win = n_fft if win is None else win
    lead = x.shape[:-1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        flat = x.reshape(-1, x.shape[-1]).float()  # (N, T)
        window = torch.hann_window(win, device=x.device, dtype=torch.float32)
        spec = torch.stft(
            flat, n_fft, hop, win, window=window, center=True, pad_mode="constant", return_complex=True
        )  # (N, F, frames)
        mag = spec.abs()
    return mag.reshape(*lead, *mag.shape[-2:])


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions.

    For each resolution: ``||S_y - S_x||_F / ||S_y||_F + mean |log S_y - log S_x|`` with S the magnitude
    (clamped at MAG_FLOOR), x the estimate and y the reference. Zero only when the magnitudes agree.

    Args:
        resolutions: (n_fft, hop, win) triples.
    """

    def __init__(self, resolutions: Sequence[tuple[int, int, int]] = STFT_RESOLUTIONS):
        super().__init__()
        self.resolutions = tuple(tuple(r) for r in resolutions)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar loss of estimate x against reference y, both (B, C, T) (or any (..., T))."""
        total = x.new_zeros((), dtype=torch.float32)
        for n_fft, hop, win in self.resolutions:
            sx = stft_magnitude(x, n_fft, hop, win).clamp_min(MAG_FLOOR)
            sy = stft_magnitude(y, n_fft, hop, win).clamp_min(MAG_FLOOR)
            sc = torch.linalg.vector_norm(sy - sx) / torch.linalg.vector_norm(sy).clamp_min(MAG_FLOOR)
            total = total + sc + F.l1_loss(sx.log(), sy.log())
        return total / len(self.resolutions)


class MultiResolutionMelLoss(nn.Module):
    """L1 between natural-log mel magnitude spectrograms, averaged over resolutions.

    Args:
        sample_rate: in Hz.
        resolutions: (n_fft, hop, n_mels) triples; the window length is n_fft.
    """

    def __init__(self, sample_rate: int, resolutions: Sequence[tuple[int, int, int]] = MEL_RESOLUTIONS):
        super().__init__()
        self.sample_rate = sample_rate
        self.resolutions = tuple(tuple(r) for r in resolutions)
        for i, (n_fft, _, n_mels) in enumerate(self.resolutions):
            self.register_buffer(f"fb{i}", mel_filterbank(n_fft, n_mels, sample_rate), persistent=False)

    def log_mels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Log-mel spectrograms of x (..., T): one (..., n_mels, frames) float32 tensor per resolution."""
        out = []
        for i, (n_fft, hop, _) in enumerate(self.resolutions):
            fb = getattr(self, f"fb{i}").to(x.device)
            mel = torch.matmul(fb, stft_magnitude(x, n_fft, hop))  # (n_mels, F) @ (..., F, frames)
            out.append(mel.clamp_min(MAG_FLOOR).log())
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar loss of estimate x against reference y, both (B, C, T) (or any (..., T))."""
        pairs = zip(self.log_mels(x), self.log_mels(y), strict=True)
        return torch.stack([F.l1_loss(a, b) for a, b in pairs]).mean()


def compress_spectrum(spec: torch.Tensor, power: float) -> torch.Tensor:
    """Power-law compression of a complex spectrum, |X|^c e^{i angle X} (any shape, complex64): loud bins shrink,
    quiet ones grow, the phase stays. A floor of 1e-8 under |X|^2 keeps the value and its gradient finite at
    silent bins."""
    return spec * (spec.abs().square() + 1e-8) ** ((power - 1) / 2)


class CompressedSTFTLoss(nn.Module):
    """Mean squared error between power-law compressed complex spectra, |X|^c e^{i angle X} (c = 0.3).

    Unlike magnitude losses it asks for the right phase, while the compression keeps quiet bins in play (as in
    the Efficient Speech Codec and MP-SENet). Hann window, centred frames.

    Args:
        n_fft, hop: STFT size and hop in samples.
        power: the compression exponent c.
    """

    def __init__(self, n_fft: int = 1024, hop: int = 256, power: float = COMPRESSION):
        super().__init__()
        self.n_fft, self.hop, self.power = n_fft, hop, power

    def compressed(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T) -> (..., bins, frames) complex64: each bin scaled to magnitude |X|^c, phase kept."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.reshape(-1, x.shape[-1]).float()
            window = torch.hann_window(self.n_fft, device=x.device)
            spec = torch.stft(flat, self.n_fft, self.hop, window=window, center=True, return_complex=True)
            return compress_spectrum(spec, self.power)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar loss of estimate x against reference y, both (B, C, T) (or any (..., T))."""
        return (self.compressed(x) - self.compressed(y)).abs().square().mean()


class FramePeriodicLoss(nn.Module):
    """Squared error between the power-law compressed frame-periodic components of estimate and reference.

    A signal of F whole frames of ``period`` samples, averaged over the frames, keeps exactly the part that
    repeats every ``period`` samples: the DFT of the mean is 1/F times the whole signal's DFT at the multiples of
    ``sample_rate / period``. A frame-rate decoder (one inverse-STFT frame per hop) whose phases do not advance
    from frame to frame puts fixed tones there, a comb at the frame rate; in speech that part is small, so the
    loss asks for it to stay small. Each of its ``period // 2 + 1`` bins X is compressed to |X|^c e^{i angle X}
    as in ``CompressedSTFTLoss``. Where the cut starts does not matter (a repeating part averaged from another
    start is the same period rotated) as long as estimate and reference are cut alike. The part of a signal
    that does not repeat shrinks in the mean like 1 / sqrt(F), so the loss's size, and the weight to give it,
    depend on the segment length.

    Args:
        period: the frame length in samples (the codec's hop).
        power: the compression exponent c.
    """

    def __init__(self, period: int, power: float = COMPRESSION):
        super().__init__()
        if period < 2:
            raise ValueError(f"period must be >= 2 samples, got {period}")
        self.period, self.power = period, power

    def component(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T) with T >= period -> (N, period // 2 + 1) complex64: the compressed spectrum of the mean of
        the T // period whole frames (N = the product of the leading dims); a tail shorter than a frame is left
        out."""
        frames = x.shape[-1] // self.period
        if frames < 1:
            raise ValueError(f"the signal ({x.shape[-1]} samples) is shorter than one period ({self.period})")
        with torch.autocast(device_type=x.device.type, enabled=False):
            p = x[..., : frames * self.period].float().reshape(-1, frames, self.period).mean(1)
            return compress_spectrum(torch.fft.rfft(p, dim=-1), self.power)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar loss of estimate x against reference y, both (B, C, T) (or any (..., T))."""
        return (self.component(x) - self.component(y)).abs().square().mean()


_MEL_CACHE: dict[tuple[int, str], MultiResolutionMelLoss] = {}


@torch.no_grad()
def mel_distance(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Per-item log-mel L1 distance over MEL_RESOLUTIONS (lower is better; 0 for identical signals).

    Args:
        x: (B, C, T) estimate.
        y: (B, C, T) reference, same shape.
        sample_rate: of both signals, in Hz.

    Returns:
        (B,) float32: for each item, the mean over resolutions of the mean |log mel(x) - log mel(y)|.
    """
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"x and y must have the same (B, ..., T) shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    return per_item_mel_l1(x, y, sample_rate)


def _mel_for(sample_rate: int, device: torch.device) -> MultiResolutionMelLoss:
    key = (sample_rate, str(device))
    if key not in _MEL_CACHE:
        _MEL_CACHE[key] = MultiResolutionMelLoss(sample_rate).to(device)
    return _MEL_CACHE[key]


def per_item_mel_l1(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``mel_distance`` with gradients (the encoder-side search's objective): (B, ...) signals -> (B,)."""
    mel = _mel_for(sample_rate, x.device)
    per_res = [(a - b).abs().flatten(1).mean(dim=1) for a, b in zip(mel.log_mels(x), mel.log_mels(y), strict=True)]
    return torch.stack(per_res).mean(dim=0)


def frame_shares(err: torch.Tensor, hop: int, frame: int, frames: int) -> torch.Tensor:
    """Each of ``frames`` frames' share of the mean of ``err``: spectrogram frame j (centred on sample j * hop) goes to
    frame ``min(j * hop // frame, frames - 1)``, so the shares sum to ``err``'s mean over all but the first axis.

    Args:
        err: (B, ..., J) non-negative errors of J spectrogram frames.
        hop: the spectrogram's hop in samples.
        frame: samples per frame.
        frames: how many frames.

    Returns:
        (B, frames) float32.
    """
    per_j = err.flatten(1, -2).sum(1) / err[0].numel()  # (B, J)
    owner = (torch.arange(err.shape[-1], device=err.device) * hop // frame).clamp_max(frames - 1)
    return per_j.new_zeros(err.shape[0], frames).index_add_(1, owner, per_j)


def mel_l1_by_frame(x: torch.Tensor, y: torch.Tensor, sample_rate: int, frame: int) -> torch.Tensor:
    """``per_item_mel_l1`` split into each frame's share: (B, C, T) signals, T a multiple of ``frame`` samples ->
    (B, T // frame) whose sum over frames is ``per_item_mel_l1(x, y, sample_rate)`` (see ``frame_shares``)."""
    mel, frames = _mel_for(sample_rate, x.device), x.shape[-1] // frame
    shares = [
        frame_shares((a - b).abs(), hop, frame, frames)
        for (_, hop, _), a, b in zip(mel.resolutions, mel.log_mels(x), mel.log_mels(y), strict=True)
    ]
    return torch.stack(shares).mean(dim=0)
