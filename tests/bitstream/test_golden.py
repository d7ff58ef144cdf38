"""Golden files: committed .vqc files that must keep decoding to the same tokens, and inputs that must keep
encoding to the same bytes: a change that breaks files fails here even when every round trip still passes.

``golden/v5/*.vqc`` (``golden_v5.py``), made with tiny models committed beside them, so a retrained bundled model
never turns these tests off: the integer coder (version 5, with alpha and stereo), packed files (versions 2-4),
and float-coded prior files of version 2 (``v2_*``), the coder of every prior-mode file before version 5. Each is
decoded here, and the same inputs must give the same bytes again (``compress`` for the current writers, the float
coder's twin ``range_coding.prior_encode`` for version 2).
"""

import hashlib
import json

import golden_v5
import pytest
import torch

import codec
from codec.bitstream import container

EXPECTED_V5 = json.loads((golden_v5.HERE / "expected.json").read_text())


def _tokens_sha256(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.to(torch.int64).numpy().tobytes()).hexdigest()


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
    m, p, c = tiny_models[meta.modality]
    out = codec.decompress(blob, m, c if meta.coder == "context-1" else p, device="cpu")
    assert list(out.tokens.shape) == want["token_shape"]
    assert _tokens_sha256(out.tokens) == want["tokens_sha256"]


@pytest.mark.parametrize("name", sorted(EXPECTED_V5))
def test_integer_coder_files_are_reproduced_byte_for_byte(name, tiny_models):
    modality, make = golden_v5.cases()[name]
    assert make(*tiny_models[modality]) == (golden_v5.HERE / name).read_bytes()
