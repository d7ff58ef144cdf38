"""Golden files: .vqc files written by an earlier vqcodec (before the layers were split) with the bundled models.
They must decode to the same tokens, and the same inputs must encode to the same bytes: a change that breaks old
files fails here even when every round trip still passes."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

import codec
from codec.media import read_audio, read_image

HERE = Path(__file__).parent / "golden"
EXPECTED = json.loads((HERE / "expected.json").read_text())
ROOT = Path(__file__).resolve().parents[2]


def inputs() -> dict:
    """What the golden files were made from (and how)."""
    x = read_image(ROOT / "examples" / "icecold.png").pixels[:, :40, :56]
    y = read_audio(ROOT / "examples" / "speech.flac", sample_rate=24000).samples[:, :7200]
    opts = dict(device="cpu")
    return {
        "image_q2.vqc": lambda: codec.compress(x, "image", "image/prior", num_quantizers=2, **opts),
        "audio_q4.vqc": lambda: codec.compress(y, "audio", "audio/prior", num_quantizers=4, sample_rate=24000, **opts),
    }


def _bundled_or_skip(blob: bytes) -> None:
    meta = codec.read_info(blob)
    if meta.codec["name"] not in codec.bundled_models():
        pytest.skip("bundled models not in this checkout")
    if codec.model_hash(codec.load(meta.codec["name"], device="cpu"))[:32] != meta.codec["hash"]:
        pytest.skip(f"the bundled {meta.codec['name']} model was retrained since the golden files were made")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_files_decode_to_the_same_tokens(name):
    blob = (HERE / name).read_bytes()
    _bundled_or_skip(blob)
    out = codec.decompress(blob, device="cpu")
    want = EXPECTED[name]
    assert out.metadata.mode == want["mode"] and list(out.tokens.shape) == want["token_shape"]
    assert hashlib.sha256(out.tokens.to(torch.int64).numpy().tobytes()).hexdigest() == want["tokens_sha256"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_same_input_encodes_to_the_same_bytes(name):
    blob = (HERE / name).read_bytes()
    _bundled_or_skip(blob)
    assert inputs()[name]() == blob
