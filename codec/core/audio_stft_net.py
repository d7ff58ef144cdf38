"""Frame-rate audio encoder and decoder: ConvNeXt blocks on the compressed complex STFT, inverse-STFT head.

The STFT hop is the codec hop, so every layer runs at the frame rate (75 frames/s at 24 kHz, hop 320) instead of
the sample rate, as in Vocos and the Efficient Speech Codec; that makes wide networks cheap. Every layer is local
in time (depthwise convolutions, per-frame LayerNorm), so long signals can be processed in overlapping chunks.

Frame j of a (B, C, T) signal covers samples [j*hop - p, j*hop - p + n_fft) with p = (n_fft - hop) / 2 (zero
padding beyond the ends), so T = t * hop samples give exactly t frames and the decoder's overlap-add of t frames,
trimmed by p at each end, gives T samples back.
"""

import torch
import torch.nn.functional as F
from torch import nn

from codec.core.config import AudioCodecConfig
from codec.core.spectral import compress_spectrum

COMPRESS = 0.3  # magnitude exponent of the encoder's input spectrum (|X|^0.3 e^{i angle X})
LOG_MAG_MAX = 8.0  # the decoder's log-magnitudes are clamped here (exp(8) ~ 3000, far above any real bin)


class ConvNeXtBlock1d(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm over channels -> Linear(4x) -> GELU -> Linear, scaled skip.

    (B, C, t) -> (B, C, t). The layer scale starts small so that a deep stack starts near the identity.
    """

    def __init__(self, dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).transpose(1, 2)  # (B, t, C)
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


def _pad(cfg: AudioCodecConfig) -> int:
    return (cfg.n_fft - cfg.hop) // 2


class STFTEncoder(nn.Module):
    """(B, C, T) with T a multiple of the hop -> (B, latent_dim, T / hop)."""

    def __init__(self, cfg: AudioCodecConfig):
        super().__init__()
        self.n_fft, self.hop, self.pad = cfg.n_fft, cfg.hop, _pad(cfg)
        bins = cfg.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.conv_in = nn.Conv1d(2 * bins * cfg.channels, cfg.width, 1)  # frames already overlap 4x
        depth = cfg.encoder_depth
        self.blocks = nn.Sequential(*[ConvNeXtBlock1d(cfg.width, 1.0 / depth) for _ in range(depth)])
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.proj = nn.Linear(cfg.width, cfg.latent_dim)

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> compressed complex spectrum as real channels (B, C * 2 * bins, T / hop), float32."""
        b, c, t = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = F.pad(x.float().reshape(b * c, t), (self.pad, self.pad))
            spec = torch.stft(flat, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
            spec = compress_spectrum(spec, COMPRESS)  # |X|^0.3 e^{i angle X}
            feats = torch.cat([spec.real, spec.imag], dim=1)  # (B*C, 2*bins, frames)
        return feats.reshape(b, -1, feats.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(self.spectrum(x))).transpose(1, 2)  # (B, t, width)
        return self.proj(self.norm(h)).transpose(1, 2)


def istft_same(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, pad: int) -> torch.Tensor:
    """Inverse STFT matching STFTEncoder's framing: (N, bins, t) complex -> (N, t * hop) float32.

    Windowed overlap-add divided by the summed squared window (least-squares inverse), trimmed by ``pad`` at
    each end. Unlike ``torch.istft(center=False)`` it accepts the low window sum at the ends, which the trim
    removes anyway.
    """
    n, _, t = spec.shape
    frames = torch.fft.irfft(spec, n=n_fft, dim=1) * window[None, :, None]  # (N, n_fft, t)
    length = (t - 1) * hop + n_fft
    y = F.fold(frames, (1, length), (1, n_fft), stride=(1, hop)).reshape(n, length)
    env = F.fold(window.square()[None, :, None].expand(1, n_fft, t), (1, length), (1, n_fft), stride=(1, hop))
    y = y / env.reshape(1, length).clamp_min(1e-8)
    return y[:, pad : length - pad]


class STFTDecoder(nn.Module):
    """(B, latent_dim, t) -> (B, C, t * hop): blocks at frame rate, then log-magnitude and phase per bin, iSTFT."""

    def __init__(self, cfg: AudioCodecConfig):
        super().__init__()
        self.n_fft, self.hop, self.pad, self.channels = cfg.n_fft, cfg.hop, _pad(cfg), cfg.channels
        self.bins = cfg.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.conv_in = nn.Conv1d(cfg.latent_dim, cfg.width, 7, padding=3)
        depth = cfg.decoder_depth
        self.blocks = nn.Sequential(*[ConvNeXtBlock1d(cfg.width, 1.0 / depth) for _ in range(depth)])
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.head = nn.Linear(cfg.width, 2 * self.bins * cfg.channels)
        with torch.no_grad():  # start quiet: log-magnitudes near -5 (about -43 dB per bin)
            self.head.weight.mul_(0.1)
            self.head.bias.view(cfg.channels, 2, self.bins)[:, 0].fill_(-5.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, _, t = z.shape
        h = self.norm(self.blocks(self.conv_in(z)).transpose(1, 2))
        out = self.head(h).float().transpose(1, 2).reshape(b * self.channels, 2, self.bins, t)
        with torch.autocast(device_type=z.device.type, enabled=False):
            mag = out[:, 0].clamp(max=LOG_MAG_MAX).exp()
            spec = torch.polar(mag, out[:, 1])  # (B*C, bins, t)
            y = istft_same(spec, self.n_fft, self.hop, self.window, self.pad)
        return y.reshape(b, self.channels, -1)
