"""Golden files: committed .vqc files that must keep decoding to the same tokens, and inputs that must keep
encoding to the same bytes: a change that breaks files fails here even when every round trip still passes.

- ``golden/*.vqc``: float-coded "prior" files of format version 2, written by an earlier vqcodec (before the layers
  were split) with the bundled models (skipped once those are retrained). They must decode as before. New files
  are never float-coded (``compress`` writes version 5 with the integer coder), so their bytes are checked by
  re-coding their tokens with the float coder that decodes them (``range_coding.prior_encode``, as tests and
  benchmarks write it): the decoder's twin still matches what the old encoder wrote, byte for byte.
- ``golden/v5/*.vqc`` (``golden_v5.py``): the integer coder (version 5, with alpha and stereo) and packed files,
  made with tiny models committed beside them: decoded here, and ``compress`` must reproduce them byte for byte.
"""

import hashlib
import json
from pathlib import Path

import golden_v5
import pytest
import torch

import codec
from codec.bitstream import compress as compress_module
from codec.bitstream import container
from codec.bitstream.models import load_named_prior
from codec.media import read_audio, read_image
from prior.layout import raster

HERE = Path(__file__).parent / "golden"
EXPECTED = json.loads((HERE / "expected.json").read_text())
EXPECTED_V5 = json.loads((golden_v5.HERE / "expected.json").read_text())
ROOT = Path(__file__).resolve().parents[2]


def inputs() -> dict:
    """What the version-2 golden files were made from (and how); compress now makes version-5 files of them."""
    x = read_image(ROOT / "examples" / "icecold.png").pixels[:, :40, :56]
    y = read_audio(ROOT / "examples" / "speech.flac", sample_rate=24000).samples[:, :7200]
    opts = dict(device="cpu")
    return {
        "image_q2.vqc": lambda: codec.compress(x, "image", "image/prior", num_quantizers=2, **opts),
        "audio_q4.vqc": lambda: codec.compress(y, "audio", "audio/prior", num_quantizers=4, sample_rate=24000, **opts),
    }


def _tokens_sha256(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.to(torch.int64).numpy().tobytes()).hexdigest()


def _bundled_or_skip(blob: bytes) -> None:
    meta = codec.read_info(blob)
    if meta.codec["name"] not in codec.bundled_models():
        pytest.skip("bundled models not in this checkout")
    if codec.model_hash(codec.load(meta.codec["name"], device="cpu"))[:32] != meta.codec["hash"]:
        pytest.skip(f"the bundled {meta.codec['name']} model was retrained since the golden files were made")


# ------------------------------------------------------------------------------- version 2: the float coder
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_files_decode_to_the_same_tokens(name):
    blob = (HERE / name).read_bytes()
    _bundled_or_skip(blob)
    out = codec.decompress(blob, device="cpu")
    want = EXPECTED[name]
    assert out.metadata.mode == want["mode"] and list(out.tokens.shape) == want["token_shape"]
    assert out.metadata.coder is None and blob[4:6] == (2).to_bytes(2, "little")
    assert _tokens_sha256(out.tokens) == want["tokens_sha256"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_float_coder_rewrites_old_files_byte_for_byte(name):
    blob = (HERE / name).read_bytes()
    _bundled_or_skip(blob)
    out = codec.decompress(blob, device="cpu")
    meta = out.metadata
    prior = load_named_prior(meta.prior["name"])
    flat = raster(out.tokens, meta.residual).numpy()
    assert compress_module._write(meta, b"", flat, prior, False) == blob


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_inputs_now_encode_to_version_5_with_the_same_tokens(name):
    blob = (HERE / name).read_bytes()
    _bundled_or_skip(blob)
    new = inputs()[name]()
    assert new[4:6] == (5).to_bytes(2, "little") and codec.read_info(new).coder == "integer-1"
    assert _tokens_sha256(codec.decompress(new, device="cpu").tokens) == EXPECTED[name]["tokens_sha256"]


# ------------------------------------------------------------------------ version 5: the integer coder
@pytest.fixture(scope="module")
def tiny_models():
    return golden_v5.models()


@pytest.mark.parametrize("name", sorted(EXPECTED_V5))
def test_integer_coder_files_decode_to_the_same_tokens(name, tiny_models):
    blob = (golden_v5.HERE / name).read_bytes()
    want = EXPECTED_V5[name]
    meta = codec.read_info(blob)
    assert int.from_bytes(blob[4:6], "little") == want["version"] == container.file_version(meta)
    assert (meta.mode, meta.coder, len(blob)) == (want["mode"], want["coder"], want["bytes"])
    m, p = tiny_models[meta.modality]
    out = codec.decompress(blob, m, p, device="cpu")
    assert list(out.tokens.shape) == want["token_shape"]
    assert _tokens_sha256(out.tokens) == want["tokens_sha256"]


@pytest.mark.parametrize("name", sorted(EXPECTED_V5))
def test_integer_coder_files_are_reproduced_byte_for_byte(name, tiny_models):
    modality, make = golden_v5.cases()[name]
    assert make(*tiny_models[modality]) == (golden_v5.HERE / name).read_bytes()
