"""Golden files: committed .vqc files that must keep decoding to the same tokens, and inputs that must keep
encoding to the same bytes: a change that breaks files fails here even when every round trip still passes.

``golden/v7/*.vqc`` are the files vqcodec writes now, ``golden/v5/*.vqc`` the same cases as it wrote them before
version 7 (versions 2-6), all made with tiny models committed under ``golden/models`` (``golden_files.py``), so a
retrained bundled model never turns these tests off: the integer coders (with alpha and stereo), packed files,
images inside a margin, and float-coded prior files of version 2 (``v2_*``), the coder of every prior-mode file
before version 5. Each is decoded here; the same inputs must give the same bytes again (``compress`` for the current
writer, the float coder's twin ``range_coding.prior_encode`` for version 2), and behind the older header the same
chunks as before version 7.
"""

import hashlib
import json

import golden_files
import pytest
import torch

import codec
from codec.bitstream import container

EXPECTED = {d.name: json.loads((d / "expected.json").read_text()) for d in (golden_files.V5, golden_files.V7)}
FILES = [(v, name) for v in sorted(EXPECTED) for name in sorted(EXPECTED[v])]


def _tokens_sha256(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.to(torch.int64).numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_models():
    return golden_files.models()


def test_both_sets_hold_the_same_cases():
    assert sorted(EXPECTED["v5"]) == sorted(EXPECTED["v7"]) == sorted(golden_files.cases())
    for name, want in EXPECTED["v7"].items():  # only float-coded files keep their old version
        assert want["version"] == (2 if name.startswith("v2_") else 7), name
        old = EXPECTED["v5"][name]
        assert (old["token_shape"], old["tokens_sha256"]) == (want["token_shape"], want["tokens_sha256"]), name
        assert old["version"] < 7 and (old["bytes"] > want["bytes"] or name.startswith("v2_")), name


@pytest.mark.parametrize("version,name", FILES)
def test_golden_files_decode_to_the_same_tokens(version, name, tiny_models):
    blob = (golden_files.GOLDEN / version / name).read_bytes()
    want = EXPECTED[version][name]
    meta = codec.read_info(blob)
    assert int.from_bytes(blob[4:6], "little") == want["version"] == container.file_version(meta)
    assert (meta.mode, meta.coder, len(blob)) == (want["mode"], want["coder"], want["bytes"])
    m, p, c = tiny_models[meta.modality]
    out = codec.decompress(blob, m, c if meta.coder == "context-1" else p, device="cpu")
    assert list(out.tokens.shape) == want["token_shape"]
    assert _tokens_sha256(out.tokens) == want["tokens_sha256"]


@pytest.mark.parametrize("name", sorted(EXPECTED["v7"]))
def test_golden_files_are_reproduced_byte_for_byte(name, tiny_models):
    modality, make = golden_files.cases()[name]
    m, p, c = tiny_models[modality]
    blob = make(m, p, c)
    assert blob == (golden_files.V7 / name).read_bytes()
    assert golden_files.as_before_v7(blob, m, p, c) == (golden_files.V5 / name).read_bytes()
