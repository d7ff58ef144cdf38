"""The Codec: encoder -> (residual) vector quantizer -> decoder, for images or audio.

Public API (used by the CLI, the prior and users)::

    tokens = model.encode(x)                   # image (B, C, H, W) in [0, 1] -> (B, h, w) or (B, n_q, h, w)
                                               # audio (B, C, T) in [-1, 1]  -> (B, n_q, t)
    x_hat = model.decode(tokens, shape=x.shape[1:])   # the inverse, cropped to x's shape

Large images are processed in overlapping tiles and long audio in overlapping chunks, with enough context
around each tile or chunk to cover the networks' receptive fields (every layer is local), so the result
matches whole-input processing and peak memory stays bounded.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.audio_net import AudioDecoder, AudioEncoder
from codec.config import CodecConfig, ImageCodecConfig
from codec.image_net import ImageDecoder, ImageEncoder
from codec.quantizer import QuantizerOutput, ResidualVectorQuantizer, VectorQuantizer

RANGE_SLACK = 1e-3  # inputs may overshoot their range by this much (rounding); beyond it is an error


@dataclass
class CodecOutput:
    """Training forward result: reconstruction (same shape as x), tokens, and the quantizer's output."""

    x_hat: torch.Tensor
    tokens: torch.Tensor
    vq: QuantizerOutput


@contextmanager
def _eval(module: nn.Module):
    """Run in eval mode (no codebook updates), then restore the previous mode."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


class Codec(nn.Module):
    """VQ-VAE codec for one modality, built from an ImageCodecConfig or an AudioCodecConfig."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        q = config.quantizer
        opts = dict(
            decay=q.decay,
            dead_code_threshold=q.dead_code_threshold,
            commitment_weight=q.commitment_weight,
            kmeans_init=q.kmeans_init,
        )
        if isinstance(config, ImageCodecConfig):
            self.encoder, self.decoder = ImageEncoder(config), ImageDecoder(config)
        else:
            self.encoder, self.decoder = AudioEncoder(config), AudioDecoder(config)
        if config.modality == "audio" or q.num_quantizers > 1:
            self.quantizer = ResidualVectorQuantizer(
                config.latent_dim, q.codebook_size, q.num_quantizers, quantizer_dropout=q.quantizer_dropout, **opts
            )
        else:
            self.quantizer = VectorQuantizer(config.latent_dim, q.codebook_size, **opts)

    # ----------------------------------------------------------------------------------------- properties
    @property
    def modality(self) -> str:
        return self.config.modality

    @property
    def codebook_size(self) -> int:
        return self.config.quantizer.codebook_size

    @property
    def num_quantizers(self) -> int:
        return self.config.quantizer.num_quantizers

    @property
    def residual(self) -> bool:
        """Whether tokens carry a quantizer axis (always for audio; for images when num_quantizers > 1)."""
        return isinstance(self.quantizer, ResidualVectorQuantizer)

    @property
    def downsample(self) -> int:
        """Input samples per token along each axis: f for images, the hop for audio."""
        return self.config.downsample if self.modality == "image" else self.config.hop

    @property
    def sample_rate(self) -> int | None:
        return self.config.sample_rate if self.modality == "audio" else None

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------------------------------ training
    def forward(self, x: torch.Tensor, num_quantizers: int | None = None) -> CodecOutput:
        """Training pass on x whose spatial / time sizes are multiples of ``downsample``.

        Args:
            x: (B, C, H, W) or (B, C, T) float.
            num_quantizers: stages to use (residual VQ); None = all (with quantizer dropout in training).
        """
        z = self.encoder(x)  # (B, D, *grid)
        out = self._quantize(z, num_quantizers)
        x_hat = self.decoder(out.quantized.movedim(-1, 1))
        tokens = out.indices.movedim(-1, 1) if self.residual else out.indices
        return CodecOutput(x_hat, tokens, out)

    def _quantize(self, z: torch.Tensor, num_quantizers: int | None) -> QuantizerOutput:
        z_last = z.movedim(1, -1)  # (B, *grid, D)
        if self.residual:
            return self.quantizer(z_last, num_quantizers=num_quantizers)
        if num_quantizers not in (None, 1):
            raise ValueError(f"this model has a single quantizer; num_quantizers must be 1, got {num_quantizers}")
        return self.quantizer(z_last)

    # ------------------------------------------------------------------------------------------- encode
    @torch.inference_mode()
    def encode(self, x: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """Tokens of x.

        Args:
            x: image (B, C, H, W) float in [0, 1], C = model channels (or 1 on an RGB model); or audio
                (B, C, T) float in [-1, 1] at ``sample_rate``, C = model channels.
            num_quantizers: residual stages to keep (1..num_quantizers); None = all. Fewer = lower bitrate.

        Returns:
            int64 tokens on the model's device: image (B, h, w) or (B, n_q, h, w) with h = ceil(H / f);
            audio (B, n_q, t) with t = ceil(T / hop).
        """
        x = self._check_input(x)
        n = self._check_num_quantizers(num_quantizers)
        with _eval(self):
            if self.modality == "image":
                return self._encode_image(x, n)
            return self._encode_audio(x, n)

    def _check_num_quantizers(self, n: int | None) -> int | None:
        if n is None:
            return None
        if not self.residual:
            if n != 1:
                raise ValueError(f"this model has a single quantizer; num_quantizers must be 1, got {n}")
            return None
        if not 1 <= int(n) <= self.num_quantizers:
            raise ValueError(f"num_quantizers must be in [1, {self.num_quantizers}], got {n}")
        return int(n)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a float tensor, got {x.dtype}")
        image = self.modality == "image"
        want = "(B, C, H, W)" if image else "(B, C, T)"
        if x.ndim != (4 if image else 3):
            raise ValueError(f"{self.modality} input must have shape {want}, got {tuple(x.shape)}")
        c = x.shape[1]
        ok_channels = (c == self.channels) or (image and self.channels == 3 and c == 1)
        if not ok_channels:
            allowed = "1 or 3" if image and self.channels == 3 else str(self.channels)
            raise ValueError(f"{self.modality} input must have {allowed} channels, got {c} (shape {tuple(x.shape)})")
        if x.shape[0] == 0 or any(s == 0 for s in x.shape[2:]):
            raise ValueError(f"{self.modality} input is empty: shape {tuple(x.shape)}")
        lo, hi = (0.0, 1.0) if image else (-1.0, 1.0)
        x_min, x_max = torch.aminmax(x)
        if not (torch.isfinite(x_min) and torch.isfinite(x_max)):
            raise ValueError(f"{self.modality} input contains nan or inf")
        if x_min < lo - RANGE_SLACK or x_max > hi + RANGE_SLACK:
            raise ValueError(
                f"{self.modality} values must lie in [{lo:g}, {hi:g}], got [{float(x_min):.4g}, {float(x_max):.4g}]"
            )
        x = x.to(self.device, torch.float32).clamp(lo, hi)
        if image and c == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return x

    def _pad_to_multiple(self, x: torch.Tensor) -> torch.Tensor:
        f = self.downsample
        pads = []
        for size in reversed(x.shape[2:]):  # F.pad order: last axis first
            pads += [0, (-size) % f]
        if not any(pads):
            return x
        if all(p < s for p, s in zip(pads[1::2], reversed(x.shape[2:]), strict=True)):
            return F.pad(x, pads, mode="reflect")
        return F.pad(x, pads, mode="replicate")  # too small to reflect (e.g. a 1 x 1 image)

    def _latent_tokens(self, x: torch.Tensor, n: int | None) -> torch.Tensor:
        """x (B, C, *grid*f) -> tokens (B, [n_q,] *grid)."""
        idx = self._quantize(self.encoder(x), n).indices  # (B, *grid) or (B, *grid, n_q)
        return idx.movedim(-1, 1) if self.residual else idx

    def _encode_image(self, x: torch.Tensor, n: int | None) -> torch.Tensor:
        xp = self._pad_to_multiple(x)
        f, tile, ctx = self.downsample, self.config.tile, self.config.tile_overlap
        h, w = xp.shape[2] // f, xp.shape[3] // f
        if h <= tile + 2 * ctx and w <= tile + 2 * ctx:
            return self._latent_tokens(xp, n)
        rows = []
        for y0 in range(0, h, tile):
            y1, ya = min(h, y0 + tile), max(0, y0 - ctx)
            yb = min(h, y1 + ctx)
            cols = []
            for x0 in range(0, w, tile):
                x1, xa = min(w, x0 + tile), max(0, x0 - ctx)
                xb = min(w, x1 + ctx)
                t = self._latent_tokens(xp[:, :, ya * f : yb * f, xa * f : xb * f], n)
                cols.append(t[..., y0 - ya : y1 - ya, x0 - xa : x1 - xa])
            rows.append(torch.cat(cols, dim=-1))
        return torch.cat(rows, dim=-2)

    def _encode_audio(self, x: torch.Tensor, n: int | None) -> torch.Tensor:
        xp = self._pad_to_multiple(x)
        hop, chunk, ctx = self.downsample, self.config.chunk_frames, self.config.chunk_context
        t = xp.shape[-1] // hop
        if t <= chunk + 2 * ctx:
            return self._latent_tokens(xp, n)
        parts = []
        for f0 in range(0, t, chunk):
            f1, fa = min(t, f0 + chunk), max(0, f0 - ctx)
            fb = min(t, f1 + ctx)
            tok = self._latent_tokens(xp[..., fa * hop : fb * hop], n)
            parts.append(tok[..., f0 - fa : f1 - fa])
        return torch.cat(parts, dim=-1)

    # ------------------------------------------------------------------------------------------- decode
    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, shape: tuple[int, ...] | torch.Size | None = None) -> torch.Tensor:
        """Reconstruction from tokens.

        Args:
            tokens: int64 as returned by ``encode`` (fewer residual stages than the model has are fine).
            shape: the original item shape to crop to, ``x.shape[1:]``: (C, H, W) or (C, T). None returns the
                full padded size (C = model channels). C = 1 on an RGB model returns grayscale.

        Returns:
            float32 on the model's device: image (B, C, H, W) in [0, 1]; audio (B, C, T) in [-1, 1].
        """
        tokens = self._check_tokens(tokens)
        with _eval(self):
            y = self._decode_image(tokens) if self.modality == "image" else self._decode_audio(tokens)
        lo = 0.0 if self.modality == "image" else -1.0
        y = y.clamp_(lo, 1.0)
        return self._crop(y, shape)

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32, torch.int16):
            raise ValueError(f"tokens must be an integer tensor, got {getattr(tokens, 'dtype', type(tokens))}")
        grid_dims = 2 if self.modality == "image" else 1
        want = 1 + grid_dims + (1 if self.residual else 0)
        if tokens.ndim != want:
            layout = {
                ("image", False): "(B, h, w)",
                ("image", True): "(B, n_q, h, w)",
                ("audio", True): "(B, n_q, t)",
            }[(self.modality, self.residual)]
            raise ValueError(f"tokens must have shape {layout}, got {tuple(tokens.shape)}")
        if tokens.numel() == 0:
            raise ValueError(f"tokens are empty: shape {tuple(tokens.shape)}")
        if self.residual and not 1 <= tokens.shape[1] <= self.num_quantizers:
            raise ValueError(f"tokens have {tokens.shape[1]} quantizer levels; this model has {self.num_quantizers}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.codebook_size:
            raise ValueError(f"token values must lie in [0, {self.codebook_size}), got [{lo}, {hi}]")
        return tokens.to(self.device, torch.int64)

    def _latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, [n_q,] *grid) -> quantized latents (B, D, *grid)."""
        idx = tokens.movedim(1, -1) if self.residual else tokens
        return self.quantizer.decode_indices(idx).movedim(-1, 1).contiguous()

    def _decode_image(self, tokens: torch.Tensor) -> torch.Tensor:
        f, tile, ctx = self.downsample, self.config.tile, self.config.tile_overlap
        h, w = tokens.shape[-2:]
        if h <= tile + 2 * ctx and w <= tile + 2 * ctx:
            return self.decoder(self._latents(tokens))
        out = torch.empty(tokens.shape[0], self.channels, h * f, w * f, device=tokens.device)
        for y0 in range(0, h, tile):
            y1, ya = min(h, y0 + tile), max(0, y0 - ctx)
            yb = min(h, y1 + ctx)
            for x0 in range(0, w, tile):
                x1, xa = min(w, x0 + tile), max(0, x0 - ctx)
                xb = min(w, x1 + ctx)
                y = self.decoder(self._latents(tokens[..., ya:yb, xa:xb]))
                out[..., y0 * f : y1 * f, x0 * f : x1 * f] = y[
                    ..., (y0 - ya) * f : (y1 - ya) * f, (x0 - xa) * f : (x1 - xa) * f
                ]
        return out

    def _decode_audio(self, tokens: torch.Tensor) -> torch.Tensor:
        hop, chunk, ctx = self.downsample, self.config.chunk_frames, self.config.chunk_context
        t = tokens.shape[-1]
        if t <= chunk + 2 * ctx:
            return self.decoder(self._latents(tokens))
        out = torch.empty(tokens.shape[0], self.channels, t * hop, device=tokens.device)
        for f0 in range(0, t, chunk):
            f1, fa = min(t, f0 + chunk), max(0, f0 - ctx)
            fb = min(t, f1 + ctx)
            y = self.decoder(self._latents(tokens[..., fa:fb]))
            out[..., f0 * hop : f1 * hop] = y[..., (f0 - fa) * hop : (f1 - fa) * hop]
        return out

    def _crop(self, y: torch.Tensor, shape) -> torch.Tensor:
        if shape is None:
            return y
        shape = tuple(int(s) for s in shape)
        grid = y.shape[2:]
        if len(shape) != 1 + len(grid):
            raise ValueError(f"shape must be (C, {'H, W' if len(grid) == 2 else 'T'}), got {shape}")
        c, sizes = shape[0], shape[1:]
        f = self.downsample
        for s, g in zip(sizes, grid, strict=True):
            if not (g - f < s <= g):
                raise ValueError(f"shape {shape} does not match tokens decoding to {tuple(grid)} (factor {f})")
        y = y[(..., *[slice(0, s) for s in sizes])]
        if c == y.shape[1]:
            return y
        if self.modality == "image" and c == 1:
            return y.mean(dim=1, keepdim=True)
        raise ValueError(f"cannot return {c} channels from a {y.shape[1]}-channel model")
