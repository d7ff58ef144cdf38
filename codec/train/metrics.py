"""Reconstruction quality metrics, one value per item: PSNR for images, SI-SNR for audio. Training logs them and
rate-distortion evaluation (``codec.eval``) reports them.

(The log-mel distance for audio lives in ``codec.core.spectral.mel_distance``, next to the mel filterbank.)
"""

import torch

MSE_FLOOR = 1e-10  # identical items give 10 log10(max_val^2 / 1e-10) = 100 dB instead of inf


@torch.no_grad()
def psnr(x: torch.Tensor, y: torch.Tensor, max_val: float = 1.0, mse_floor: float = MSE_FLOOR) -> torch.Tensor:
    """Peak signal-to-noise ratio per item: 10 log10(max_val^2 / MSE), the MSE computed in float64.

    Args:
        x: (B, ...) estimate, e.g. (B, C, H, W) in [0, max_val].
        y: (B, ...) reference, same shape.
        max_val: the largest possible value (1.0 for images in [0, 1]).
        mse_floor: the MSE is floored at this: the default keeps identical items finite (100 dB, what training
            logs average); 0 gives inf for them (evaluation counts them as lossless).

    Returns:
        (B,) float32 in dB.
    """
    if x.shape != y.shape or x.ndim < 1:
        raise ValueError(f"x and y must have the same (B, ...) shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)  # (B,)
    return (10.0 * torch.log10(max_val**2 / mse.clamp_min(mse_floor))).float()


@torch.no_grad()
def si_snr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant signal-to-noise ratio per item, in dB (Le Roux et al. 2019, "SDR: half-baked or done?").

    Both signals are made zero-mean; the target is the projection of est onto ref,
    ``s = (<est, ref> / ||ref||^2) ref``, the error is ``e = est - s``, and SI-SNR = 10 log10(||s||^2 / ||e||^2).
    Channels are treated as one signal (flattened with time). Scaling est by any positive factor leaves
    the value unchanged.

    Args:
        est: (B, ...) estimate, e.g. (B, C, T).
        ref: (B, ...) reference, same shape.
        eps: keeps the value finite: ``10 log10(||s||^2 / (||e||^2 + eps) + eps)``, so a perfect estimate gives a
            large value (about 10 log10(||s||^2 / eps)) and a silent estimate about 10 log10(eps) = -80 dB.

    Returns:
        (B,) float32 in dB.
    """
    if est.shape != ref.shape or est.ndim < 1:
        raise ValueError(f"est and ref must have the same (B, ...) shape, got {tuple(est.shape)}, {tuple(ref.shape)}")
    e = est.float().flatten(1)
    r = ref.float().flatten(1)
    e = e - e.mean(dim=1, keepdim=True)
    r = r - r.mean(dim=1, keepdim=True)
    scale = (e * r).sum(dim=1, keepdim=True) / (r.pow(2).sum(dim=1, keepdim=True) + eps)
    target = scale * r  # (B, N)
    noise = e - target
    return 10.0 * torch.log10(target.pow(2).sum(dim=1) / (noise.pow(2).sum(dim=1) + eps) + eps)
