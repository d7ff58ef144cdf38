"""Helpers of the CLI tests: tiny codecs with priors and a few media files, running ``codec`` in-process, and the
one-line error check."""

import torch

import codec
from codec import AudioCodecConfig, Codec, ImageCodecConfig, QuantizerConfig
from codec.cli import main
from codec.media.audio_io import write_audio
from codec.media.image_io import write_image
from prior.checkpoint import save_prior
from prior.config import PriorConfig
from prior.model import TokenPrior


def make_runs(tmp):
    """Tiny image and audio codecs (``tmp/img``, ``tmp/aud``) with priors beside them, and ``tmp/media``: a.png,
    sub/b.jpg (grayscale), c.wav (stereo, 22.05 kHz)."""
    torch.manual_seed(0)
    img = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=QuantizerConfig(32)))
    img(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp / "img", img.eval())
    q = QuantizerConfig(codebook_size=32, num_quantizers=4, quantizer_dropout=1.0)
    aud = Codec(AudioCodecConfig(base_channels=8, latent_dim=8, sample_rate=16000, quantizer=q))
    aud(torch.rand(2, 1, 320 * 8) * 2 - 1)
    codec.save_model(tmp / "aud", aud.eval())
    for name in ("img", "aud"):
        m = codec.load(tmp / name)
        save_prior(tmp / name / "prior", TokenPrior(PriorConfig.for_codec(m, dim=32, depth=2, heads=2, context=16)))
    media = tmp / "media"
    (media / "sub").mkdir(parents=True)
    write_image(media / "a.png", torch.rand(3, 40, 56))
    write_image(media / "sub" / "b.jpg", torch.rand(1, 24, 33))
    write_audio(media / "c.wav", torch.rand(2, 5000) - 0.5, 22050)
    return tmp


def run(*argv) -> int:
    """``codec ARGV`` in this process; its exit status."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def error_line(capsys) -> str:
    """The one line on stderr, which must be ``codec: error: ...``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("codec: error: "), err
    return err[0]
