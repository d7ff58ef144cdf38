"""Encoder-side search: tokens that decode closer to the input than the encoder's nearest codes.

The encoder maps an input to latents and the quantizer picks, level by level, the nearest codes; nothing in that
asks how the *decoder* will render them. ``refine_tokens`` starts from the encoder's latents and takes Adam steps
on them against the decoder's error, straight through the quantizer (the forward pass decodes the quantized
latents; the gradient reaches the unquantized ones), and keeps, for every item, the tokens of the best step.

The error (``objective``): images, the squared error of the decoded pixels (clamped to [0, 1] as ``decode``
clamps them); audio, the multi-resolution log-mel L1 plus a quarter of the compressed complex STFT error, losses
the codec was trained with (``codec.core.spectral``), on the decoded samples clamped to [-1, 1]. Both count only
the samples inside the item (``mask``: padding and margins are zeroed in the output and the target alike).

Only the encoder side changes: the tokens are ordinary tokens, decoded by the same decoder in the same file
format, on any machine. The best step includes step 0 (the plain tokens), so the result never measures worse than
the plain tokens on the objective; the rate moves by a few per cent (the tokens are less typical). Cost: one
decoder forward and backward pass per step.
"""

import torch

from codec.core.spectral import CompressedSTFTLoss, per_item_mel_l1

# Adam's step as a fraction of the first codebook's rms code component (0.35 on the bundled image model, 0.65 on
# the audio model), per modality, at 20-30 steps. Images, chosen on 4 training crops with the bundled model at
# 1-6 levels: 0.003 to 0.006 gave +0.4 to +1.2 dB; 0.011 gained less at 2 levels (steps jump between coarse
# codes), 0.14 found nothing better than step 0. Audio, on 8 held-out recorded speech clips at 8 levels, PESQ-WB
# 1.37 before: 1.48 / 1.58 / 1.71 / 1.71 / 1.58 at 0.0043 / 0.01 / 0.03 / 0.1 / 0.3.
REFINE_STEP = {"image": 0.0043, "audio": 0.05}
# Audio: the weight of the compressed STFT error beside the log-mel L1 in ``objective``. On the 16 held-out recorded
# speech clips, bundled audio codec, 8 levels, 20 steps (PESQ-WB 2.311 without the search), mel : STFT weights of
# 1 : 1 gave 2.611, 1 : 0.25 2.705 (2.699 after 40 steps), 1 : 0.1 2.690, 1 : 0 2.674 (SI-SNR 8.1 dB against 8.8 at
# 0.25), 0.25 : 1 2.350, 0 : 1 2.117: the phase-aware term keeps the waveform close, the mel term is what listeners
# (and PESQ) hear.
AUDIO_CSTFT_WEIGHT = 0.25
MAX_REFINE_STEPS = 1000

_CSTFT = CompressedSTFTLoss()  # no state: one for every call


def check_refine(steps) -> int:
    """``steps`` if it is an int in [0, MAX_REFINE_STEPS]; else ValueError."""
    if type(steps) is not int or not 0 <= steps <= MAX_REFINE_STEPS:
        raise ValueError(f"refine must be an int in [0, {MAX_REFINE_STEPS}] (steps), got {steps!r}")
    return steps


def objective(y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, sample_rate: int | None) -> torch.Tensor:
    """Per-item error of a decoded window ``y`` against ``target`` on the samples where ``mask`` is 1.

    Args:
        y: (B, C, H, W) image or (B, C, T) audio decoder output (unclamped).
        target: the window's input, the same shape.
        mask: (B, 1, H, W) or (B, 1, T), 1 inside the item and 0 on padding.
        sample_rate: None for images; the audio rate in Hz.

    Returns:
        (B,) float32: images, the mean squared error over the masked pixels; audio, log-mel L1 +
        ``AUDIO_CSTFT_WEIGHT`` x compressed STFT squared error of the masked signals.
    """
    if sample_rate is None:
        weight = mask / mask.flatten(1).sum(1).clamp_min(1.0).view(-1, *[1] * (mask.ndim - 1))
        return ((y.clamp(0.0, 1.0) - target).square() * weight).flatten(1).sum(1) * (1.0 / y.shape[1])
    a, b = y.clamp(-1.0, 1.0) * mask, target * mask
    cstft = (_CSTFT.compressed(a) - _CSTFT.compressed(b)).abs().square().reshape(y.shape[0], -1).mean(1)
    return per_item_mel_l1(a, b, sample_rate) + AUDIO_CSTFT_WEIGHT * cstft


def refine_tokens(
    quantizer, decoder, z: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, n, steps: int, sample_rate=None
) -> torch.Tensor:
    """Tokens of latents ``z`` after ``steps`` of search against ``decoder``'s error on ``target``.

    Args:
        quantizer: a ``ResidualVectorQuantizer`` (``encode_indices(z, n)``, ``decode_indices``, ``layers``) or a
            ``VectorQuantizer`` (``encode_indices(z)``; ``n`` ignored).
        decoder: latents (B, D, *grid) -> (B, C, *samples), the samples ``target``'s shape.
        z: the encoder's latents, (B, *grid, D) float32.
        target: (B, C, *samples), the window's input.
        mask: (B, 1, *samples), 1 where the sample counts (inside the item), 0 on padding.
        n: residual levels to keep (None = all).
        steps: Adam steps; 0 returns the plain tokens.
        sample_rate: None for images; audio's rate (``objective``).

    Returns:
        int64 indices as ``quantizer.encode_indices`` returns them: (B, *grid, n) or (B, *grid).
    """
    residual = hasattr(quantizer, "layers")
    encode = (lambda v: quantizer.encode_indices(v, n)) if residual else quantizer.encode_indices
    with torch.no_grad():
        best = encode(z)
    if steps == 0:
        return best
    first = quantizer.layers[0] if residual else quantizer
    rms = float(first.embed.square().mean().sqrt())
    lr = REFINE_STEP["image" if sample_rate is None else "audio"] * rms
    best_loss = torch.full((z.shape[0],), float("inf"), device=z.device)
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for step in range(steps + 1):
            with torch.no_grad():
                idx = encode(z)
                q = quantizer.decode_indices(idx)
            y = decoder((z + (q - z).detach()).movedim(-1, 1))
            loss = objective(y, target, mask, sample_rate)  # (B,)
            with torch.no_grad():
                better = loss < best_loss
                best_loss = torch.where(better, loss, best_loss)
                best[better] = idx[better]
            if step == steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), z)  # the latents' gradient only: the weights are untouched
            z.grad = grad
            opt.step()
    return best
