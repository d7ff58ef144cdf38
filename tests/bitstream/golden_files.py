"""Golden vectors: the same cases in two sets, made with tiny models committed under tests/bitstream/golden/models
(so they never depend on the bundled models, which may be retrained).

- ``golden/v7``: files as vqcodec writes them now (format version 7, the compact header): the integer coders
  (the Transformer prior's ``integer-1`` and the context model's ``context-1``), packed files, alpha, stereo, images
  inside a margin of replicated edge (``v6_*``: the cases that brought version 6), and float-coded prior files
  (``v2_*``), which only older vqcodec wrote and which keep their old version.
- ``golden/v5``: the same cases as vqcodec wrote them before version 7 (versions 2-6: 128-bit hashes, metadata
  deflated without a dictionary). Frozen: never rewritten; test_golden.py checks that they still decode, and that
  the files written now carry the same chunks behind them.

``python tests/bitstream/golden_files.py`` (re)writes the models (only when missing), ``golden/v7``'s .vqc files and
its ``expected.json``. Run it only for a deliberate format or coder change: test_golden.py then fails until it is
run, and the change shows in the diff of the committed files.
"""

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import torch

import codec
from codec import AudioCodecConfig, Codec, ImageCodecConfig, QuantizerConfig
from prior.checkpoint import load_prior, save_prior
from prior.config import PriorConfig
from prior.context import ContextConfig, ContextPrior
from prior.context_checkpoint import load_context, save_context
from prior.model import TokenPrior

GOLDEN = Path(__file__).parent / "golden"
V5, V7 = GOLDEN / "v5", GOLDEN / "v7"  # written before version 7 (frozen); written now
MODELS = GOLDEN / "models"
NAMES = {"image": "golden/image", "audio": "golden/audio"}  # what the files record: not a path of this machine


def _make_models() -> None:
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, num_quantizers=3, quantizer_dropout=1.0)
    img = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    img(torch.rand(2, 3, 32, 32))
    torch.manual_seed(2)
    q = QuantizerConfig(codebook_size=32, num_quantizers=4, quantizer_dropout=1.0)
    cfg = AudioCodecConfig(ratios=(4, 4, 4), base_channels=4, dilations=(1,), latent_dim=8, sample_rate=16000)
    aud = Codec(dataclasses.replace(cfg, quantizer=q))
    aud(torch.rand(2, 1, 64 * 40) * 2 - 1)
    for modality, m in (("image", img), ("audio", aud)):
        codec.save_model(MODELS / modality, m.eval())
        m = codec.load(MODELS / modality, device="cpu")
        torch.manual_seed(1)
        p = TokenPrior(PriorConfig.for_codec(m, dim=32, depth=2, heads=2, context=16)).eval()
        with torch.no_grad():  # sharper than at initialisation, so prior files differ from packed ones in size
            p.net.to_logits.weight.mul_(8)
        save_prior(MODELS / modality / "prior", p)


def _make_context_models() -> None:
    for modality in NAMES:
        m = codec.load(MODELS / modality, device="cpu")
        torch.manual_seed(3)
        kernel = 5 if modality == "audio" else 3
        ctx = ContextPrior(ContextConfig.for_codec(m, embed=4, hidden=8, depth=1, kernel=kernel)).eval()
        with torch.no_grad():  # sharper than at initialisation, so context-coded files differ from packed ones
            ctx.head.mul_(6)
        save_context(MODELS / modality / "context", ctx)


def models() -> dict:
    """modality -> (codec, prior, context model), on the CPU, named as the golden files record them."""
    out = {}
    for modality, name in NAMES.items():
        m = codec.load(MODELS / modality, device="cpu")
        p = load_prior(MODELS / modality / "prior", device="cpu")
        c = load_context(MODELS / modality / "context", device="cpu")
        m.name, p.name, c.name = name, f"{name}/prior", f"{name}/context"
        out[modality] = (m, p, c)
    return out


def _image(c: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(c)
    y, x = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 56), indexing="ij")
    base = torch.stack([x, y, (x + y) / 2])[: min(c, 3)]
    img = (base + 0.1 * torch.rand(base.shape, generator=g)).clamp(0, 1)
    return torch.cat([img, (x * y)[None]]) if c == 4 else img  # RGBA: alpha last


def _audio(channels: int) -> torch.Tensor:
    t = torch.arange(4000) / 16000
    tone = [0.4 * torch.sin(2 * math.pi * f * t) * torch.exp(-3 * t) for f in (220.0, 330.0)]
    return torch.stack(tone[:channels])


def float_coded(x, m, p, n: int, **opts) -> bytes:
    """A version-2 prior-mode file of x: the float coder (no ``coder`` field, the float prior's hash, 128-bit hashes
    as versions 1-6 recorded them)."""
    from vqc_helpers import legacy_metadata

    from codec.bitstream import compress as compress_module
    from prior.layout import raster

    out = codec.decompress(codec.compress(x, m, p, num_quantizers=n, **opts), m, p, device="cpu")
    meta = legacy_metadata(out.metadata, m, p, float_coder=True)
    return compress_module._write(meta, b"", raster(out.tokens, meta.residual).numpy(), p, False)


def cases() -> dict:
    """file name -> (modality, how to make it from the models: compress(x, codec, prior) -> bytes)."""
    opts = dict(device="cpu", chunk_tokens=48, group=3)
    copts = dict(device="cpu", chunk_tokens=40, packed_if_smaller=False)
    audio = dict(sample_rate=16000)
    v5 = dict(margin=0)  # images as version 5 (and 2, 3) wrote them: no margin
    v6 = dict(device="cpu", chunk_tokens=40)  # version 6: images inside 2 px of replicated edge
    return {
        "image_prior_q1.vqc": (
            "image",
            lambda m, p, c: codec.compress(_image(3), m, p, num_quantizers=1, **opts, **v5),
        ),
        "image_prior_q3.vqc": (
            "image",
            lambda m, p, c: codec.compress(_image(3), m, p, num_quantizers=3, **opts, **v5),
        ),
        "image_alpha_prior_q2.vqc": (
            "image",
            lambda m, p, c: codec.compress(_image(4), m, p, num_quantizers=2, **opts, **v5),
        ),
        "image_packed_q2.vqc": (
            "image",
            lambda m, p, c: codec.compress(_image(3), m, None, num_quantizers=2, **opts, **v5),
        ),
        "audio_prior_q1.vqc": (
            "audio",
            lambda m, p, c: codec.compress(_audio(1), m, p, num_quantizers=1, **audio, **opts),
        ),
        "audio_prior_q4.vqc": (
            "audio",
            lambda m, p, c: codec.compress(_audio(1), m, p, num_quantizers=4, **audio, **opts),
        ),
        "audio_stereo_prior_q2.vqc": (
            "audio",
            lambda m, p, c: codec.compress(_audio(2), m, p, num_quantizers=2, **audio, **opts),
        ),
        "audio_packed_q3.vqc": (
            "audio",
            lambda m, p, c: codec.compress(_audio(1), m, None, num_quantizers=3, **audio, **opts),
        ),
        "v2_image_prior_q2.vqc": ("image", lambda m, p, c: float_coded(_image(3), m, p, 2, **opts, **v5)),
        "v2_audio_prior_q4.vqc": ("audio", lambda m, p, c: float_coded(_audio(1), m, p, 4, **audio, **opts)),
        "image_context_q1.vqc": (
            "image",
            lambda m, p, c: codec.compress(_image(3), m, c, num_quantizers=1, **copts, **v5),
        ),
        "image_context_q3.vqc": (
            "image",
            lambda m, p, c: codec.compress(_image(3), m, c, num_quantizers=3, **copts, **v5),
        ),
        "image_alpha_context_q2.vqc": (
            "image",
            lambda m, p, c: codec.compress(_image(4), m, c, num_quantizers=2, **copts, **v5),
        ),
        "audio_context_q4.vqc": (
            "audio",
            lambda m, p, c: codec.compress(_audio(1), m, c, num_quantizers=4, **audio, **copts),
        ),
        "audio_stereo_context_q2.vqc": (
            "audio",
            lambda m, p, c: codec.compress(_audio(2), m, c, num_quantizers=2, **audio, **copts),
        ),
        "v6_image_context_q2.vqc": (
            "image",
            lambda m, p, c: codec.compress(_image(3), m, c, num_quantizers=2, packed_if_smaller=False, **v6),
        ),
        "v6_image_alpha_prior_q1.vqc": (
            "image",
            lambda m, p, c: codec.compress(_image(4), m, p, num_quantizers=1, **v6),
        ),
        "v6_image_packed_q3.vqc": ("image", lambda m, p, c: codec.compress(_image(3), m, None, num_quantizers=3, **v6)),
    }


def as_before_v7(blob: bytes, m, p, c) -> bytes:
    """A file written now as vqcodec wrote it before version 7 (``vqc_helpers.written_before_v7``); float-coded
    files (version 2, 128-bit hashes already) as they are."""
    from vqc_helpers import written_before_v7

    from codec.bitstream import container

    meta = codec.read_info(blob)
    if len(meta.codec["hash"]) == container.LEGACY_HASH_CHARS:
        return blob
    return written_before_v7(blob, m, c if meta.coder == "context-1" else p)


def tokens_sha256(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.to(torch.int64).numpy().tobytes()).hexdigest()


def main() -> None:
    if not (MODELS / "audio" / "prior").is_dir():
        _make_models()
    if not (MODELS / "audio" / "context").is_dir():
        _make_context_models()
    ms = models()
    V7.mkdir(exist_ok=True)
    expected = {}
    for name, (modality, make) in cases().items():
        m, p, c = ms[modality]
        blob = make(m, p, c)
        out = codec.decompress(blob, m, c if "context" in name else p, device="cpu")
        (V7 / name).write_bytes(blob)
        meta = out.metadata
        expected[name] = dict(
            version=int.from_bytes(blob[4:6], "little"),
            mode=meta.mode,
            coder=meta.coder,
            token_shape=meta.token_shape,
            tokens_sha256=tokens_sha256(out.tokens),
            bytes=len(blob),
        )
        print(name, expected[name])
    (V7 / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
