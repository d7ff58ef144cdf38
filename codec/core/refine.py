"""Encoder-side search: tokens that decode closer to the input than the encoder's nearest codes.

The encoder maps an input to latents and the quantizer picks, level by level, the nearest codes; nothing in that
asks how the *decoder* will render them. ``refine_tokens`` starts from the encoder's latents and takes Adam steps
on them against the decoder's error, straight through the quantizer (the forward pass decodes the quantized
latents; the gradient reaches the unquantized ones), and keeps the tokens of the best step block by block: each
block of ``REFINE_BLOCK`` latent cells (audio frames; image cells per side) takes its tokens from the step whose
decoded output erred least *there* (``objective_by_cell``). The blocks' choices decode together once more, and an
item keeps them only where they beat its best single step on the whole.

The error (``objective_by_cell``, summed over an item's cells): images, the squared error of the decoded pixels
(clamped to [0, 1] as ``decode`` clamps them), the item's outermost rows and columns weighted
``REFINE_EDGE_WEIGHT`` (the search would otherwise leave the edges relatively worse); audio, the multi-resolution
log-mel L1 plus a quarter of the compressed complex STFT error, losses the codec was trained with
(``codec.core.spectral``), on the decoded samples clamped to [-1, 1]. Both count only the samples inside the item
(``mask``: padding and margins are zeroed in the output and the target alike).

Only the encoder side changes: the tokens are ordinary tokens, decoded by the same decoder in the same file
format, on any machine. The best step includes step 0 (the plain tokens), so the result never measures worse than
the plain tokens on the objective; the rate moves by a few per cent (the tokens are less typical). Cost: one
decoder forward and backward pass per step, and one forward pass for the blocks' choice (where it differs from
the best single step) and one for the plain tokens (where the search's rate weight makes them differ from step 0's).
"""

import torch

from codec.core.spectral import CompressedSTFTLoss, frame_shares, mel_l1_by_frame

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
# Latent cells per block whose best step is kept on its own (audio: frames; images: cells per side). Audio, the same
# clips and settings (PESQ-WB 2.705 with one choice per chunk): blocks of 1 / 4 / 8 frames gave 2.721 / 2.738 / 2.733.
# Images, 4 held-out photographs, 30 steps, 1 / 2 / 6 levels (one choice per tile: 30.13 / 33.69 / 35.22 dB): cells of
# 1 / 2 / 4 gave 30.50 / 33.84 / 35.22, 30.60 / 33.89 / 35.23 and 30.58 / 33.86 / 35.23 dB.
REFINE_BLOCK = {"image": 4, "audio": 4}
# The search chooses its codes with the model's rate weight (the entropy-constrained choice) times this: its latents
# move off the typical ones, and the codes they reach cost more bits. Audio, the same 16 clips at 8 levels, 20 steps,
# one choice per chunk, context-coded (the bundled rate weight 0.02: 6.17 kbps at PESQ-WB 2.693): 1.5 / 2 / 2.5 / 3 /
# 4 times gave 6.12 / 5.94 / 5.79 / 5.63 / 5.40 kbps at 2.700 / 2.692 / 2.683 / 2.645 / 2.604.
REFINE_RATE_SCALE = {"image": 1.0, "audio": 2.0}
# Images: the weight of the item's outermost rows and columns in the search's objective (1 elsewhere). The search lowers
# the interior's error more than the edges', so at one level the worst edge line of the 4 held-out photographs came to
# 1.84x the interior's squared error with weight 1 (1.21x without the search; the bound is 1.5x). Weight 8,
# 30 steps: 1.42x at 1 level (30.575 dB against 30.579), 0.86x at 2 (33.856 against 33.863).
REFINE_EDGE_WEIGHT = 8.0
MAX_REFINE_STEPS = 1000

_CSTFT = CompressedSTFTLoss()  # no state: one for every call


def check_refine(steps) -> int:
    """``steps`` if it is an int in [0, MAX_REFINE_STEPS]; else ValueError."""
    if type(steps) is not int or not 0 <= steps <= MAX_REFINE_STEPS:
        raise ValueError(f"refine must be an int in [0, {MAX_REFINE_STEPS}] (steps), got {steps!r}")
    return steps


def objective_by_cell(
    y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cell: int, sample_rate: int | None
) -> torch.Tensor:
    """Each latent cell's share of the error of a decoded window ``y`` against ``target`` on the samples where
    ``mask`` is 1: summed over an item's cells, the item's error.

    Args:
        y: (B, C, H, W) image or (B, C, T) audio decoder output (unclamped).
        target: the window's input, the same shape.
        mask: (B, 1, H, W) or (B, 1, T), 1 inside the item and 0 on padding (images: each pixel's weight, more on
            the item's outermost lines; ``REFINE_EDGE_WEIGHT``).
        cell: pixels per cell side, or samples per frame (the codec's downsampling factor).
        sample_rate: None for images; the audio rate in Hz.

    Returns:
        (B, H / cell, W / cell) or (B, T / cell) float32. Images: the weighted squared error over the cell's
        pixels, divided by the item's summed weight and the channels. Audio: each frame's share
        (``codec.core.spectral.frame_shares``) of the log-mel L1 plus ``AUDIO_CSTFT_WEIGHT`` x the compressed STFT
        squared error of the masked signals.
    """
    if sample_rate is None:
        b, c, h, w = y.shape
        weight = mask / mask.flatten(1).sum(1).clamp_min(1.0).view(-1, 1, 1, 1)
        err = ((y.clamp(0.0, 1.0) - target).square() * weight).sum(1) * (1.0 / c)  # (B, H, W)
        return err.view(b, h // cell, cell, w // cell, cell).sum((2, 4))
    a, b = y.clamp(-1.0, 1.0) * mask, target * mask
    frames = y.shape[-1] // cell
    cstft = (_CSTFT.compressed(a) - _CSTFT.compressed(b)).abs().square()  # (B * C, bins, J)
    cstft = frame_shares(cstft.view(y.shape[0], -1, cstft.shape[-1]), _CSTFT.hop, cell, frames)
    return mel_l1_by_frame(a, b, sample_rate, cell) + AUDIO_CSTFT_WEIGHT * cstft


def code_rms(quantizer) -> float:
    """The rms component of the first codebook's codes (a ``ResidualVectorQuantizer``'s first level): the scale the
    search's step (``REFINE_STEP``) is a fraction of."""
    first = quantizer.layers[0] if hasattr(quantizer, "layers") else quantizer
    return float(first.embed.square().mean().sqrt())


def _block_ids(grid: tuple[int, ...], block: int, device) -> tuple[torch.Tensor, int]:
    """Block of each latent cell: (*grid) int64 ids in [0, blocks) for blocks of ``block`` cells per axis."""
    ids, blocks = torch.zeros((), dtype=torch.int64, device=device), 1
    for size in grid:
        n = -(-size // block)
        ids = ids[..., None] * n + torch.arange(size, device=device) // block
        blocks *= n
    return ids, blocks


def refine_tokens(
    quantizer, decoder, z: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, n, steps: int, sample_rate=None
) -> torch.Tensor:
    """Tokens of latents ``z`` after ``steps`` of search against ``decoder``'s error on ``target``.

    Args:
        quantizer: a ``ResidualVectorQuantizer`` (``encode_indices(z, n)``, ``decode_indices``, ``layers``) or a
            ``VectorQuantizer`` (``encode_indices(z)``; ``n`` ignored).
        decoder: latents (B, D, *grid) -> (B, C, *samples), the samples ``target``'s shape (f per cell and axis).
        z: the encoder's latents, (B, *grid, D) float32.
        target: (B, C, *samples), the window's input.
        mask: (B, 1, *samples), 1 where the sample counts (inside the item), 0 on padding.
        n: residual levels to keep (None = all).
        steps: Adam steps; 0 returns the plain tokens.
        sample_rate: None for images; audio's rate (``objective_by_cell``).

    Returns:
        int64 indices as ``quantizer.encode_indices`` returns them: (B, *grid, n) or (B, *grid).
    """
    residual = hasattr(quantizer, "layers")
    with torch.no_grad():
        best = quantizer.encode_indices(z, n) if residual else quantizer.encode_indices(z)
    if steps == 0:
        return best
    modality = "image" if sample_rate is None else "audio"
    scale = REFINE_RATE_SCALE[modality]

    def encode(v):  # the search's codes: rate weight times ``scale``
        return quantizer.encode_indices(v, n, rate_scale=scale) if residual else quantizer.encode_indices(v, scale)

    cell = target.shape[-1] // z.shape[-2]
    ids, blocks = _block_ids(tuple(z.shape[1:-1]), REFINE_BLOCK[modality], z.device)  # (*grid), cells -> blocks

    def errors(idx, latents):  # per item (B,) and per block (B, blocks) of the decoded tokens
        y = decoder((latents + (quantizer.decode_indices(idx) - latents).detach()).movedim(-1, 1))
        cells = objective_by_cell(y, target, mask, cell, sample_rate).flatten(1)  # (B, cells)
        return cells.sum(1), cells.new_zeros(cells.shape[0], blocks).index_add_(1, ids.flatten(), cells)

    with torch.no_grad():  # the plain tokens are a candidate; scored here unless they are step 0's (scale 1)
        if torch.equal(encode(z), best):
            best_loss = torch.full((z.shape[0],), float("inf"), device=z.device)
            block_loss = torch.full((z.shape[0], blocks), float("inf"), device=z.device)
        else:
            best_loss, block_loss = errors(best, quantizer.decode_indices(best))
    chosen = best.clone()  # each block's tokens from its best step
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=REFINE_STEP[modality] * code_rms(quantizer))
    with torch.enable_grad():
        for step in range(steps + 1):
            with torch.no_grad():
                idx = encode(z)
            loss, per_block = errors(idx, z)
            with torch.no_grad():
                better = loss < best_loss
                best_loss = torch.where(better, loss, best_loss)
                best[better] = idx[better]
                better = per_block < block_loss
                block_loss = torch.where(better, per_block, block_loss)
                cells = better[:, ids]  # (B, *grid)
                chosen[cells] = idx[cells]
            if step == steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), z)  # the latents' gradient only: the weights are untouched
            z.grad = grad
            opt.step()
    if not torch.equal(chosen, best):  # the blocks' choice differs somewhere: decode it once, keep it where better
        with torch.no_grad():
            loss, _ = errors(chosen, quantizer.decode_indices(chosen))
            better = loss < best_loss
            best[better] = chosen[better]
    return best
