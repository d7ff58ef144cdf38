"""Golden files: committed .vqc files that must keep decoding to the same tokens, and inputs that must keep
encoding to the same bytes: a change that breaks files fails here even when every round trip still passes.

``golden/v7/*.vqc`` are the files vqcodec writes now, ``golden/v5/*.vqc`` the same cases as it wrote them before
version 7 (versions 2-6), all made with tiny models committed under ``golden/models`` (``golden_files.py``), so a
retrained bundled model never turns these tests off: the integer coders (with alpha and stereo), packed files,
images inside a margin, and float-coded prior files of version 2 (``v2_*``), the coder of every prior-mode file
before version 5. Each is decoded here; the same inputs must give the same bytes again (``compress`` for the current
writer, the float coder's twin ``range_coding.prior_encode`` for version 2), and behind the older header the same
chunks as before version 7. The float-coded files are exact only on the kind of CPU that wrote them (their coder's
frequencies come from float logits, docs/format.md): elsewhere they must fail in one clear ``CorruptFileError``,
never decode to other tokens, and the float coder's own files must still decode there.
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
FLOAT_CODED = sorted(name for name in EXPECTED["v7"] if name.startswith("v2_"))


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


@pytest.fixture(scope="module")
def float_rewritten(tiny_models) -> dict[str, bytes]:
    """Each float-coded (``v2_*``) case written again here by the float coder, once per module.

    A float-coded file (versions 1 to 4) decodes only where torch computes the writer's float logits
    (docs/format.md): its coder's frequencies come from them, which other CPU kernels round differently. The test
    of that is the writer itself: the float coder here (``range_coding.prior_encode``, the same lockstep the decoder
    runs) reproduces the golden file byte for byte exactly when its frequencies match the writer's at every token.
    """
    out = {}
    for name in FLOAT_CODED:
        modality, make = golden_files.cases()[name]
        out[name] = make(*tiny_models[modality])
    return out


@pytest.mark.parametrize("version,name", FILES)
def test_golden_files_decode_to_the_same_tokens(version, name, tiny_models, float_rewritten):
    blob = (golden_files.GOLDEN / version / name).read_bytes()
    want = EXPECTED[version][name]
    meta = codec.read_info(blob)
    assert int.from_bytes(blob[4:6], "little") == want["version"] == container.file_version(meta)
    assert (meta.mode, meta.coder, len(blob)) == (want["mode"], want["coder"], want["bytes"])
    m, p, c = tiny_models[meta.modality]
    if name in float_rewritten and float_rewritten[name] != (golden_files.V7 / name).read_bytes():
        # another kind of CPU: the float-coded file must fail in one clear error, never decode to other tokens
        with pytest.raises(codec.CorruptFileError, match="fail their checksum .*float-coded file of .vqc version 1-4"):
            codec.decompress(blob, m, p, device="cpu")
        return
    out = codec.decompress(blob, m, c if meta.coder == "context-1" else p, device="cpu")
    assert list(out.tokens.shape) == want["token_shape"]
    assert _tokens_sha256(out.tokens) == want["tokens_sha256"]


@pytest.mark.parametrize("name", sorted(EXPECTED["v7"]))
def test_golden_files_are_reproduced_byte_for_byte(name, tiny_models, float_rewritten):
    modality, make = golden_files.cases()[name]
    m, p, c = tiny_models[modality]
    blob = float_rewritten[name] if name in float_rewritten else make(m, p, c)
    gold = (golden_files.V7 / name).read_bytes()
    if name in float_rewritten and blob != gold:
        # the float coder on another kind of CPU: its own files hold the same header and decode here to the same
        # tokens; only the range-coded payload differs (see float_rewritten)
        assert codec.read_info(blob) == codec.read_info(gold)
        out = codec.decompress(blob, m, p, device="cpu")
        assert _tokens_sha256(out.tokens) == EXPECTED["v7"][name]["tokens_sha256"]
        return
    assert blob == gold
    assert golden_files.as_before_v7(blob, m, p, c) == (golden_files.V5 / name).read_bytes()


@pytest.mark.parametrize("name", FLOAT_CODED)
def test_float_coded_file_on_other_float_rounding_fails_in_one_clear_error(name, tiny_models, monkeypatch):
    """Another CPU's rounding, made here: the float coder's logits nudged by 1e-2 before they become frequencies."""
    from codec.bitstream import range_coding

    exact = range_coding.integer_frequencies
    monkeypatch.setattr(range_coding, "integer_frequencies", lambda logits: exact(logits + 1e-2 * logits.sin()))
    blob = (golden_files.V7 / name).read_bytes()
    m, p, _ = tiny_models[codec.read_info(blob).modality]
    with pytest.raises(codec.CorruptFileError, match="fail their checksum .*float-coded file of .vqc version 1-4"):
        codec.decompress(blob, m, p, device="cpu")
