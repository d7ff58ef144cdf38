"""The Codec: encoder -> (residual) vector quantizer -> decoder, for images or audio.

Public API (used by the CLI, the prior and users)::

    tokens = model.encode(x)                   # image (B, C, H, W) in [0, 1] -> (B, h, w) or (B, n_q, h, w)
                                               # audio (B, C, T) in [-1, 1]  -> (B, n_q, t)
    x_hat = model.decode(tokens, shape=x.shape[1:])   # the inverse, cropped to x's shape
    tokens = model.tokenize([x1, x2, ...])     # items of any sizes: (C, H, W) or (C, T) each; lists out
    xs = model.detokenize(tokens, shapes=[x1.shape, x2.shape, ...])
    tokens = model.encode(x, margin=2)         # images: the edges replicated 2+ px out, centred (``framing``)
    x_hat = model.decode(tokens, shape=x.shape[1:], margin=2)

Large images are processed in overlapping tiles and long audio in overlapping chunks, with enough context
around each tile or chunk to cover the networks' receptive fields (every layer is local), so the result
matches whole-input processing and peak memory stays bounded.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.core.audio_net import AudioDecoder, AudioEncoder
from codec.core.audio_stft_net import STFTDecoder, STFTEncoder
from codec.core.config import CodecConfig, ImageCodecConfig
from codec.core.image_net import ImageDecoder, ImageEncoder, ShuffleDecoder, ShuffleEncoder
from codec.core.quantizer import QuantizerOutput, ResidualVectorQuantizer, VectorQuantizer
from codec.core.refine import REFINE_EDGE_WEIGHT, check_refine, refine_tokens
from codec.core.windows import batched, check_margin, core_slices, framing, plan_windows, window_shape

RANGE_SLACK = 1e-3  # inputs may overshoot their range by this much (rounding); beyond it is an error


def _check_margin(margin: int, modality: str) -> int:
    if check_margin(margin) and modality != "image":
        raise ValueError("margin is for images; audio is coded from its first sample")
    return margin


def _grad_mode(refine: int):
    """inference_mode for plain encoding; no_grad (gradients enabled inside the search) for ``refine``."""
    return torch.no_grad() if refine else torch.inference_mode()


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
            rate_weight=q.rate_weight,
        )
        if isinstance(config, ImageCodecConfig) and config.arch == "shuffle":
            self.encoder, self.decoder = ShuffleEncoder(config), ShuffleDecoder(config)
        elif isinstance(config, ImageCodecConfig):
            self.encoder, self.decoder = ImageEncoder(config), ImageDecoder(config)
        elif config.arch == "stft":
            self.encoder, self.decoder = STFTEncoder(config), STFTDecoder(config)
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
    def encode(
        self, x: torch.Tensor, num_quantizers: int | None = None, *, margin: int = 0, refine: int = 0
    ) -> torch.Tensor:
        """Tokens of x.

        Args:
            x: image (B, C, H, W) float in [0, 1], C = model channels (or 1 on an RGB model); or audio
                (B, C, T) float in [-1, 1] at ``sample_rate``, C = model channels.
            num_quantizers: residual stages to keep (1..num_quantizers); None = all. Fewer = lower bitrate.
            margin: images: code at least this many pixels of replicated edge around the image, centred in the
                grid (``framing``; better edges for a few % more tokens; ``.vqc`` files use 2). ``decode`` needs
                the same margin.
            refine: steps of encoder-side search for tokens that decode closer to x (``codec.core.refine``: pixel
                error for images, the spectral training loss for audio; 0 = the encoder's nearest codes). Each step
                costs a decoder forward and backward pass. The tokens decode with the same ``decode``.

        Returns:
            int64 tokens on the model's device: image (B, h, w) or (B, n_q, h, w) with h = ceil(H / f) (margin
            m: ceil((H + 2m) / f)); audio (B, n_q, t) with t = ceil(T / hop).
        """
        x = self._check_input(x)
        n = self._check_num_quantizers(num_quantizers)
        margin = _check_margin(margin, self.modality)
        refine = check_refine(refine)
        with _grad_mode(refine), _eval(self):
            return self._encode_items([x], n, stack=False, margin=margin, refine=refine)[0]

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
        if image and c == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return x  # clamped, converted and moved window by window: no full-size copy

    def _window_plan(self, grid: tuple[int, ...], decode: bool = False):
        """The windows over a token grid: tiles (images) or chunks (audio); see ``codec.core.windows``. An encoder
        or decoder grown deeper than the model it started from (``encoder_extra_context``,
        ``decoder_extra_context``) reads more context when encoding or decoding."""
        extra = self.config.decoder_extra_context if decode else self.config.encoder_extra_context
        if self.modality == "image":
            return plan_windows(grid, self.config.tile, self.config.tile_overlap + extra)
        return plan_windows(grid, self.config.chunk_frames, self.config.chunk_context + extra)

    def _window_input(self, x: torch.Tensor, window, pad_mode: str, leads: tuple[int, ...] = ()) -> torch.Tensor:
        """The input samples under a window's context, clamped and padded at the end to whole tokens; with
        ``leads`` (pixels of replicated edge before the image, per axis: ``framing``) replicated on every side."""
        f = self.downsample
        lo = 0.0 if self.modality == "image" else -1.0
        if any(leads):  # replicated edges by clamped indices: only the window is copied
            region = x
            for axis, ((_, _, c0, c1), s, lead) in enumerate(zip(window, x.shape[2:], leads), start=2):
                idx = torch.arange(c0 * f - lead, c1 * f - lead).clamp_(0, s - 1)
                first = int(idx[0])
                region = region.narrow(axis, first, int(idx[-1]) + 1 - first)
                region = region.index_select(axis, (idx - first).to(region.device))
            return region.to(torch.float32).clamp(lo, 1.0)
        region = x[(..., *[slice(c0 * f, min(c1 * f, s)) for (_, _, c0, c1), s in zip(window, x.shape[2:])])]
        region = region.to(torch.float32).clamp(lo, 1.0)
        pads = []
        for (_, _, c0, c1), s in reversed(list(zip(window, region.shape[2:]))):  # F.pad order: last axis first
            pads += [0, (c1 - c0) * f - s]
        return F.pad(region, pads, mode=pad_mode) if any(pads) else region

    def _latent_tokens(self, x: torch.Tensor, n: int | None, refine: int = 0, mask=None) -> torch.Tensor:
        """x (B, C, *grid*f) -> tokens (B, [n_q,] *grid); ``refine`` steps of search on the pixels where ``mask``
        (B, 1, *grid*f) is 1."""
        z = self.encoder(x).movedim(1, -1)  # (B, *grid, D)
        if refine:
            idx = refine_tokens(self.quantizer, self.decoder, z, x, mask, n, refine, self.sample_rate)
        else:
            idx = self.quantizer.encode_indices(z, n) if self.residual else self.quantizer.encode_indices(z)
        return idx.movedim(-1, 1) if self.residual else idx

    def _window_mask(self, window, sizes: tuple[int, ...], leads: tuple[int, ...]) -> torch.Tensor:
        """(1, 1, *window pixels): each pixel's weight in the search's objective (``codec.core.refine``): 1 on the
        window's pixels that lie inside the item, ``REFINE_EDGE_WEIGHT`` on an image's outermost rows and columns
        (where they lie in the window), 0 on padding and margin."""
        f = self.downsample
        mask = torch.zeros(1, 1, *[(c1 - c0) * f for _, _, c0, c1 in window], device=self.device)
        inside, edges = [], []
        for axis, ((_, _, c0, c1), s, lead) in enumerate(zip(window, sizes, leads or (0,) * len(sizes))):
            first = c0 * f - lead  # the item's coordinate of the window's first pixel
            lo, hi = max(0, -first), max(0, min(s, c1 * f - lead) - first)
            inside.append(slice(lo, hi))
            if lo < hi:  # the item's first and last lines, where this window holds them
                edges += [(axis, line) for line in {lo, hi - 1} if first + line in (0, s - 1)]
        mask[(..., *inside)] = 1.0
        if self.modality == "image":
            for axis, line in edges:
                region = list(inside)
                region[axis] = slice(line, line + 1)
                mask[(..., *region)] = REFINE_EDGE_WEIGHT
        return mask

    def _encode_items(
        self, xs: list[torch.Tensor], n: int | None, stack: bool, margin: int = 0, refine: int = 0
    ) -> list[torch.Tensor]:
        """Checked inputs (B_i, C, *sizes_i) -> tokens (B_i, [n_q,] *grid_i) on the model's device.

        ``stack``: windows of one shape, of any items, run as one batch (``codec.core.windows.batched``); else
        each window runs alone with its item's B (``encode``: the computation files are made with).
        ``margin``: ``framing``'s (images). ``refine``: steps of search per window (``codec.core.refine``), on the
        window's pixels inside the item; the tokens kept are the window's core, as without it.
        """
        f = self.downsample
        outs, jobs, leads = [], [], []
        for i, x in enumerate(xs):
            sizes = x.shape[2:]
            grid, lead = zip(*(framing(s, f, margin) for s in sizes))
            # Reflect like a mirror at the end; inputs too small to mirror (a 1 x 1 image) repeat their edge.
            pad_mode = "reflect" if all(g * f - s < s for g, s in zip(grid, sizes)) else "replicate"
            head = (x.shape[0],) + ((n or self.num_quantizers,) if self.residual else ())
            outs.append(torch.empty(*head, *grid, dtype=torch.int64, device=self.device))
            leads.append(lead)
            jobs += [(i, w, pad_mode) for w in self._window_plan(grid)]
        groups = batched(jobs, lambda job: (None, window_shape(job[1]))) if stack else [[job] for job in jobs]
        for group in groups:
            parts = [self._window_input(xs[i], w, pad_mode, leads[i]) for i, w, pad_mode in group]
            mask = None
            if refine:
                mask = torch.cat([self._window_mask(w, xs[i].shape[2:], leads[i]) for i, w, _ in group])
                mask = mask.repeat_interleave(torch.tensor([len(p) for p in parts], device=self.device), dim=0)
            x_in = (parts[0] if len(parts) == 1 else torch.cat(parts)).to(self.device)
            t = self._latent_tokens(x_in, n, refine, mask)
            for (i, w, _), part in zip(group, t.split([len(p) for p in parts])):
                dst, src = core_slices(w)
                outs[i][(..., *dst)] = part[(..., *src)]
        return outs

    # ------------------------------------------------------------------------------------------- decode
    @torch.inference_mode()
    def decode(
        self, tokens: torch.Tensor, shape: tuple[int, ...] | torch.Size | None = None, *, margin: int = 0
    ) -> torch.Tensor:
        """Reconstruction from tokens.

        Args:
            tokens: int64 as returned by ``encode`` (fewer residual stages than the model has are fine).
            shape: the original item shape to crop to, ``x.shape[1:]``: (C, H, W) or (C, T). None returns the
                full padded size (C = model channels). C = 1 on an RGB model returns grayscale.
            margin: ``encode``'s margin: where the image lies in the grid (used with ``shape``).

        Returns:
            float32 on the model's device: image (B, C, H, W) in [0, 1]; audio (B, C, T) in [-1, 1].
        """
        tokens = self._check_tokens(tokens)
        margin = _check_margin(margin, self.modality)
        with _eval(self):
            y = self._decode(tokens)
        lo = 0.0 if self.modality == "image" else -1.0
        y = y.clamp_(lo, 1.0)
        return self._crop(y, shape, margin)

    # ------------------------------------------------------------------------------------------ batches
    def tokenize(
        self, items, num_quantizers: int | None = None, *, margin: int = 0, refine: int = 0
    ) -> list[torch.Tensor]:
        """Tokens of a list of images or audio clips whose sizes may differ: lists in, lists out.

        Items of the same size, and the same-size tiles of large images or chunks of long clips, run through the
        networks as one batch (up to ``codec.core.windows.BATCH_POSITIONS`` token positions at a time; inputs
        are moved to the model's device a batch at a time, so a list of CPU tensors feeds a GPU model).

        Args:
            items: image tensors (C, H, W) float in [0, 1] or audio tensors (C, T) float in [-1, 1] at
                ``sample_rate``, as for ``encode`` without the batch axis; on any device.
            num_quantizers: residual levels to keep (1..num_quantizers); None = all.
            margin: images: as ``encode``'s (``detokenize`` needs the same).
            refine: as ``encode``'s.

        Returns:
            One int64 tensor per item on the model's device, shaped as ``encode(item[None])[0]``: image (h, w) or
            (n_q, h, w), audio (n_q, t). Equal to per-item ``encode`` up to float rounding in the networks (a
            vector within rounding of two codes may get the other one; none do on the bundled image model).

        Raises:
            ValueError: an item ``encode`` would refuse (the message names its index).
        """
        n = self._check_num_quantizers(num_quantizers)
        margin = _check_margin(margin, self.modality)
        refine = check_refine(refine)
        xs = []
        for i, x in enumerate(items):
            try:
                xs.append(self._check_input(x[None] if isinstance(x, torch.Tensor) else x))
            except ValueError as e:
                raise ValueError(f"items[{i}]: {e}") from None
        with _grad_mode(refine), _eval(self):
            return [t[0] for t in self._encode_items(xs, n, stack=True, margin=margin, refine=refine)]

    @torch.inference_mode()
    def detokenize(self, tokens, shapes=None, *, margin: int = 0) -> list[torch.Tensor]:
        """Reconstructions of a list of token tensors (``tokenize``'s output; sizes and level counts may differ).

        Args:
            tokens: int tensors shaped as ``tokenize`` returns them: (h, w), (n_q, h, w) or (n_q, t).
            shapes: None (full padded sizes) or one item shape per token tensor, (C, H, W) or (C, T), to crop to
                (as ``decode``'s ``shape``).
            margin: ``tokenize``'s margin (used with ``shapes``).

        Returns:
            One float32 tensor per item on the model's device: image (C, H, W) in [0, 1], audio (C, T) in [-1, 1].
        """
        tokens = list(tokens)
        margin = _check_margin(margin, self.modality)
        if shapes is not None and len(shapes) != len(tokens):
            raise ValueError(f"got {len(shapes)} shapes for {len(tokens)} token tensors")
        checked = []
        for i, t in enumerate(tokens):
            try:
                checked.append(self._check_tokens(t[None] if isinstance(t, torch.Tensor) else t))
            except ValueError as e:
                raise ValueError(f"tokens[{i}]: {e}") from None
        with _eval(self):
            ys = self._decode_items(checked, stack=True)
        lo = 0.0 if self.modality == "image" else -1.0
        crops = [self._crop(y.clamp_(lo, 1.0), None if shapes is None else shapes[i], margin) for i, y in enumerate(ys)]
        return [y[0] for y in crops]

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

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._decode_items([tokens], stack=False)[0]

    def _decode_items(self, tokens: list[torch.Tensor], stack: bool) -> list[torch.Tensor]:
        """Checked tokens (B_i, [n_q,] *grid_i) -> (B_i, C, *grid_i * f), unclamped; ``stack`` as in
        ``_encode_items`` (windows of one shape and level count run together)."""
        f = self.downsample
        outs, jobs = [], []
        for i, t in enumerate(tokens):
            grid = tuple(t.shape[-2:] if self.modality == "image" else t.shape[-1:])
            windows = self._window_plan(grid, decode=True)
            if len(windows) == 1 and not stack:
                outs.append(self.decoder(self._latents(t)))
                continue
            outs.append(torch.empty(t.shape[0], self.channels, *[g * f for g in grid], device=self.device))
            jobs += [(i, w) for w in windows]
        levels = (lambda i: tokens[i].shape[1]) if self.residual else (lambda i: 1)
        groups = batched(jobs, lambda job: (levels(job[0]), window_shape(job[1]))) if stack else [[j] for j in jobs]
        for group in groups:
            parts = [self._latents(tokens[i][(..., *[slice(c0, c1) for _, _, c0, c1 in w])]) for i, w in group]
            y = self.decoder(parts[0] if len(parts) == 1 else torch.cat(parts))
            for (i, w), part in zip(group, y.split([len(p) for p in parts])):
                dst, src = core_slices(w, f)
                outs[i][(..., *dst)] = part[(..., *src)]
        return outs

    def _crop(self, y: torch.Tensor, shape, margin: int = 0) -> torch.Tensor:
        if shape is None:
            return y
        shape = tuple(int(s) for s in shape)
        pixels = y.shape[2:]
        if len(shape) != 1 + len(pixels):
            raise ValueError(f"shape must be (C, {'H, W' if len(pixels) == 2 else 'T'}), got {shape}")
        c, sizes = shape[0], shape[1:]
        f = self.downsample
        crop = []
        for s, p in zip(sizes, pixels, strict=True):
            grid, lead = framing(s, f, margin)
            if s < 1 or grid * f != p:
                raise ValueError(
                    f"shape {shape} does not match tokens decoding to {tuple(pixels)} (factor {f}, margin {margin})"
                )
            crop.append(slice(lead, lead + s))
        y = y[(..., *crop)]
        if c == y.shape[1]:
            return y
        if self.modality == "image" and c == 1:
            return y.mean(dim=1, keepdim=True)
        raise ValueError(f"cannot return {c} channels from a {y.shape[1]}-channel model")
