"""A light adversarial loss for audio codecs: a multi-resolution complex-spectrogram discriminator.

Reconstruction losses (log-mel L1, compressed complex STFT) ask for the right spectrum on average; what they
leave is the buzz and smear that a listener, and PESQ, hear. EnCodec and DAC add a discriminator that looks at
complex spectrograms at several resolutions and a feature-matching term; this module is a small one of that kind,
sized for a CPU:

- ``STFTDiscriminator``: the power-law compressed complex STFT of a (B, 1, T) signal at one resolution, its bins
  (real and imaginary parts) the channels of 1-D convolutions over frames (kernel 3, dilated 1, 2, 4), LeakyReLU
  (0.2) and weight normalisation; one logit per frame.
- ``SpectrogramDiscriminator``: one per FFT size (default 512, 1024, 2048, hop a quarter of each).
- Losses (hinge, as EnCodec), each a mean over resolutions: ``discriminator_loss`` = mean relu(1 - D(x)) +
  mean relu(1 + D(x_hat)); ``generator_loss`` = mean relu(1 - D(x_hat)); ``feature_loss`` = mean over layers of
  L1(f(x_hat), f(x)) / mean |f(x)|, the real features taken as constants.
- ``Adversary``: the discriminator with its own AdamW, what the codec's training task calls: ``update`` (one
  discriminator step on a real and a decoded batch) and ``generator_terms`` (the codec's two terms against the
  updated discriminator), and its state as named tensors for the training checkpoint.

The discriminator trains only while the codec does; it is never saved with the codec (users load codecs only).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from codec.core.spectral import COMPRESSION, compress_spectrum
from codec.train.state import load_optimizer_tensors, optimizer_tensors

DISC_FFTS = (512, 1024, 2048)
DILATIONS = (1, 2, 4)


class STFTDiscriminator(nn.Module):
    """One resolution: logits and feature maps of a signal's power-law compressed complex spectrogram.

    The spectrum's bins are the channels of 1-D convolutions over frames: the first layer sees a frame's whole
    spectrum (real and imaginary parts of |X|^0.3 e^{i angle X}, 2 (n_fft // 2 + 1) channels) over three frames,
    the next ones are dilated (1, 2, 4) over time. Dense matrix products, cheap on a CPU (2-D convolutions over
    frames x bins with a few channels, as EnCodec's, cost several times the codec's own step here).

    Args:
        n_fft: FFT size; the hop is n_fft // 4, the window a periodic Hann of n_fft samples.
        channels: width of every hidden convolution.
    """

    def __init__(self, n_fft: int, channels: int = 64):
        super().__init__()
        if n_fft < 16 or channels < 1:
            raise ValueError(f"need n_fft >= 16 and channels >= 1, got {n_fft}, {channels}")
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        convs = [nn.Conv1d(2 * (n_fft // 2 + 1), channels, 3, padding=1)]
        convs += [nn.Conv1d(channels, channels, 3, dilation=d, padding=d) for d in DILATIONS]
        self.convs = nn.ModuleList(weight_norm(c) for c in convs)
        self.out = weight_norm(nn.Conv1d(channels, 1, 3, padding=1))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> (B, 2 (n_fft // 2 + 1), T // hop + 1): the real parts of every bin, then the imaginary
        parts, of the compressed spectrum, float32, frames centred (zero padding at the ends: any length works)."""
        with torch.autocast(x.device.type, enabled=False):
            spec = torch.stft(
                x.float().squeeze(1),
                self.n_fft,
                self.hop,
                window=self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )  # (B, F, N)
            spec = compress_spectrum(spec, COMPRESSION)
        return torch.cat([spec.real, spec.imag], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 1, T) -> (logits (B, 1, frames), the hidden feature maps (B, channels, frames) in order)."""
        h = self.spectrogram(x)
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class SpectrogramDiscriminator(nn.Module):
    """``STFTDiscriminator`` at several FFT sizes; forward returns one (logits, features) pair per size."""

    def __init__(self, ffts: tuple[int, ...] = DISC_FFTS, channels: int = 64):
        super().__init__()
        self.discs = nn.ModuleList(STFTDiscriminator(n, channels) for n in ffts)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(x) for d in self.discs]


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the discriminator: mean over resolutions of mean relu(1 - real) + mean relu(1 + fake)."""
    terms = [F.relu(1 - r.float()).mean() + F.relu(1 + f.float()).mean() for r, f in zip(real, fake, strict=True)]
    return torch.stack(terms).mean()


def generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss of the generator: mean over resolutions of mean relu(1 - fake)."""
    return torch.stack([F.relu(1 - f.float()).mean() for f in fake]).mean()


def feature_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Relative feature matching: mean over all layers of L1(fake, real) / mean |real| (real taken as constant)."""
    terms = []
    for rs, fs in zip(real, fake, strict=True):
        for r, f in zip(rs, fs, strict=True):
            r = r.detach().float()
            terms.append((f.float() - r).abs().mean() / r.abs().mean().clamp_min(1e-8))
    return torch.stack(terms).mean()


class Adversary:
    """A discriminator and its optimizer, trained beside a codec (see the module docstring).

    Args:
        device: where the discriminator lives.
        lr: its AdamW learning rate (constant).
        channels, ffts: ``SpectrogramDiscriminator``'s.
        autocast: a context manager factory for the forward passes (the run's mixed precision), or None.
    """

    def __init__(self, device, lr: float, channels: int = 64, ffts: tuple[int, ...] = DISC_FFTS, autocast=None):
        self.net = SpectrogramDiscriminator(ffts, channels).to(device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=1e-4)
        self.autocast = autocast

    def _forward(self, x: torch.Tensor):
        if self.autocast is None:
            return self.net(x)
        with self.autocast():
            return self.net(x)

    def update(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One optimizer step of the discriminator on real ``x`` and decoded ``x_hat`` (B, 1, T), detached.

        Under data parallelism the gradients are averaged over processes before the step, so every process keeps
        the same discriminator. Returns the (detached) hinge loss before the step."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        real = [logits for logits, _ in self._forward(x.detach())]
        fake = [logits for logits, _ in self._forward(x_hat.detach())]
        loss = discriminator_loss(real, fake)
        loss.backward()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            for p in self.net.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # free the gradients until the next update
        return loss.detach()

    def generator_terms(self, x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial hinge, feature matching) of ``x_hat`` against real ``x``; the gradient reaches ``x_hat``
        only (the discriminator's weights get none)."""
        params = list(self.net.parameters())
        for p in params:
            p.requires_grad_(False)
        try:
            with torch.no_grad():
                real_feats = [feats for _, feats in self._forward(x)]
            out = self._forward(x_hat)
        finally:
            for p in params:
                p.requires_grad_(True)
        fake_logits, fake_feats = [logits for logits, _ in out], [feats for _, feats in out]
        return generator_loss(fake_logits), feature_loss(real_feats, fake_feats)

    # ------------------------------------------------------------------------------------------ checkpoint
    def state_tensors(self, prefix: str = "adversary") -> tuple[dict[str, torch.Tensor], dict]:
        """(named tensors "<prefix>.model.*" and "<prefix>.optim.*", the optimizer's JSON part)."""
        tensors = {f"{prefix}.model.{k}": v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        opt_tensors, opt_meta = optimizer_tensors(self.optimizer)
        tensors.update({f"{prefix}.{k}": v for k, v in opt_tensors.items()})
        return tensors, opt_meta

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], opt_meta: dict, prefix: str = "adversary") -> None:
        """Restore what ``state_tensors`` saved. Raises KeyError or RuntimeError when the tensors do not fit."""
        head = f"{prefix}.model."
        self.net.load_state_dict({k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)})
        opt = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{prefix}.optim.")}
        load_optimizer_tensors(self.optimizer, opt, opt_meta)
