"""The codec's training objective (``CodecLoss``): reconstruction terms (for audio the spectral losses of
``codec.core.spectral``) plus the quantizer's commitment loss."""

import torch
import torch.nn.functional as F
from torch import nn

from codec.core.spectral import (
    CompressedSTFTLoss,
    FramePeriodicLoss,
    MultiResolutionMelLoss,
    MultiResolutionSTFTLoss,
)


def clamp_aware_output(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x_hat`` with its overshoot past a bound that the target sits on removed: where ``x >= 1`` and
    ``x_hat > 1``, or ``x <= 0`` and ``x_hat < 0``, the value is ``x`` (no error, no gradient). The codec clamps
    its output to [0, 1], so that overshoot costs nothing in the decoded image; without this the loss spends the
    decoder's capacity on holding saturated colours and clipped highlights exactly at the bound.

    Args:
        x_hat: (B, C, H, W) reconstruction, unclamped.
        x: (B, C, H, W) target in [0, 1].
    """
    past = ((x >= 1) & (x_hat > 1)) | ((x <= 0) & (x_hat < 0))
    return torch.where(past, x, x_hat)


class CodecLoss(nn.Module):
    """Training objective of a codec: weighted reconstruction terms plus the quantizer's commitment loss.

    - image: ``recon_weight * (L1 or L2)(x_hat, x)``; with ``clamp_aware``, of ``clamp_aware_output(x_hat, x)``.
    - audio: ``recon_weight * L1(x_hat, x) + stft_weight * MultiResolutionSTFTLoss + mel_weight * MelLoss
      + cstft_weight * CompressedSTFTLoss + periodic_weight * FramePeriodicLoss(hop)``.
    - both: ``+ vq_weight * vq_loss`` (the quantizer's loss already includes its commitment weight).

    Args:
        modality: "image" or "audio".
        image_loss: "l1" or "l2" (images only).
        clamp_aware: images: no error past 0 or 1 where the target sits on that bound (see
            ``clamp_aware_output``).
        sample_rate: audio rate in Hz (audio only).
        hop: the codec's hop in samples, the period of ``FramePeriodicLoss`` (audio only; needed when
            ``periodic_weight`` > 0).
        recon_weight, stft_weight, mel_weight, cstft_weight, periodic_weight, vq_weight: term weights; a 0
            weight skips the term.
    """

    def __init__(
        self,
        modality: str,
        *,
        image_loss: str = "l1",
        clamp_aware: bool = False,
        sample_rate: int | None = None,
        hop: int | None = None,
        recon_weight: float = 1.0,
        stft_weight: float = 1.0,
        mel_weight: float = 1.0,
        cstft_weight: float = 0.0,
        periodic_weight: float = 0.0,
        vq_weight: float = 1.0,
    ):
        super().__init__()
        if modality not in ("image", "audio"):
            raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")
        if image_loss not in ("l1", "l2"):
            raise ValueError(f"image_loss must be 'l1' or 'l2', got {image_loss!r}")
        self.modality, self.image_loss, self.clamp_aware = modality, image_loss, clamp_aware
        self.weights = {
            "recon": recon_weight,
            "stft": stft_weight,
            "mel": mel_weight,
            "cstft": cstft_weight,
            "periodic": periodic_weight,
            "vq": vq_weight,
        }
        if modality == "audio":
            if sample_rate is None:
                raise ValueError("the audio loss needs the sample rate")
            self.stft = MultiResolutionSTFTLoss()
            self.mel = MultiResolutionMelLoss(sample_rate)
            self.cstft = CompressedSTFTLoss()
            if periodic_weight:
                if hop is None:
                    raise ValueError("the frame-periodic loss needs the codec's hop")
                self.periodic = FramePeriodicLoss(hop)

    def forward(
        self, x_hat: torch.Tensor, x: torch.Tensor, vq_loss: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its unweighted terms.

        Args:
            x_hat: (B, C, H, W) or (B, C, T) reconstruction, any float dtype (the loss is computed in fp32).
            x: the target, same shape.
            vq_loss: scalar quantizer loss (``CodecOutput.vq.loss``).

        Returns:
            (scalar total, {"recon": ..., ["stft", "mel", "cstft", "periodic": ...,] "vq": ...} detached scalars).
        """
        x_hat, x = x_hat.float(), x.float()
        if self.modality == "image":
            if self.clamp_aware:
                x_hat = clamp_aware_output(x_hat, x)
            recon = F.l1_loss(x_hat, x) if self.image_loss == "l1" else F.mse_loss(x_hat, x)
            terms = {"recon": recon}
        else:
            terms = {"recon": F.l1_loss(x_hat, x)}
            if self.weights["stft"]:
                terms["stft"] = self.stft(x_hat, x)
            if self.weights["mel"]:
                terms["mel"] = self.mel(x_hat, x)
            if self.weights["cstft"]:
                terms["cstft"] = self.cstft(x_hat, x)
            if self.weights["periodic"]:
                terms["periodic"] = self.periodic(x_hat, x)
        terms["vq"] = vq_loss.float()
        total = sum(self.weights[k] * v for k, v in terms.items())
        return total, {k: v.detach() for k, v in terms.items()}
