"""The integer coder in ``.vqc`` files (format versions 5-7): what a file records, round trips in both modalities,
older float-coded files still decoding, unknown coders and versions refused in one line, identical bytes and
tokens under other CPU kernels and thread counts (subprocesses), and damaged range-coded payloads whose chunk CRCs were
recomputed (so that they reach the range decoder) refused as CorruptFileError naming the file, never a foreign
exception."""

import hashlib
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vqc_helpers import crafted, legacy_metadata, written_before_v7

import codec
from codec import AudioCodecConfig, Codec, CorruptFileError, ImageCodecConfig, QuantizerConfig
from codec.bitstream import container
from codec.bitstream import integer_coding as integer_coder
from codec.bitstream.compress import IMAGE_MARGIN, _prepare, _read_input, _write
from prior.checkpoint import load_prior, prior_hash, save_prior
from prior.config import PriorConfig
from prior.layout import raster
from prior.model import TokenPrior

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny image and audio codecs, each with a prior beside it (RUN_DIR/prior)."""
    tmp = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    img = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=QuantizerConfig(32)))
    img(torch.rand(2, 3, 32, 32))
    q = QuantizerConfig(codebook_size=32, num_quantizers=4, quantizer_dropout=1.0)
    aud = Codec(AudioCodecConfig(base_channels=8, latent_dim=8, sample_rate=16000, quantizer=q))
    aud(torch.rand(2, 1, 320 * 8) * 2 - 1)
    out = {"dir": tmp}
    for name, m in (("image", img), ("audio", aud)):
        codec.save_model(tmp / name, m.eval())
        m = codec.load(tmp / name, device="cpu")
        torch.manual_seed(1)
        save_prior(tmp / name / "prior", TokenPrior(PriorConfig.for_codec(m, dim=32, depth=2, heads=2, context=16)))
        out[name] = m
    return out


def _inputs(modality: str):
    g = torch.Generator().manual_seed(6)
    return torch.rand(3, 37, 53, generator=g) if modality == "image" else torch.rand(1, 3000, generator=g) - 0.5


# --------------------------------------------------------------------------------------------- the file
@pytest.mark.parametrize("modality", ["image", "audio"])
def test_prior_files_record_the_integer_coder_and_round_trip(models, modality):
    m, prior_dir = models[modality], models["dir"] / modality / "prior"
    x = _inputs(modality)
    data = codec.compress(x, m, prior=prior_dir, chunk_tokens=7, group=3)
    meta = codec.read_info(data)
    assert struct.unpack_from("<H", data, 4)[0] == 7
    assert meta.mode == "prior" and meta.coder == integer_coder.CODER == "integer-1" in container.PRIOR_CODERS
    prior = load_prior(prior_dir, device="cpu")
    assert meta.prior["hash"] == integer_coder.integer_hash(prior)[:16] != prior_hash(prior)[:16]
    out = codec.decompress(data)
    want = m.encode(_prepared(x, m), margin=IMAGE_MARGIN if modality == "image" else 0)[0]
    torch.testing.assert_close(out.tokens, want, rtol=0, atol=0)
    assert codec.compress(x, m, prior=prior_dir, chunk_tokens=7, group=5) != data  # group is recorded ...
    again = codec.decompress(codec.compress(x, m, prior=prior_dir, chunk_tokens=7, group=5))
    torch.testing.assert_close(again.tokens, want, rtol=0, atol=0)  # ... and any group decodes


def _prepared(x, m):
    src = {"format": None} if m.modality == "image" else {"format": None, "subtype": None, "rate": m.sample_rate}
    return _prepare(x, m, src)[0][None]


def test_float_coded_version_2_files_still_decode(models):
    """Prior-mode files of format versions 1-4 name no coder: their float prior decodes them, as before."""
    m, prior_dir = models["image"], models["dir"] / "image" / "prior"
    new = codec.compress(_inputs("image"), m, prior=prior_dir, chunk_tokens=64, margin=0)
    meta, tokens = codec.read_info(new), codec.decompress(new).tokens
    prior = load_prior(prior_dir, device="cpu")
    legacy = legacy_metadata(meta, m, prior, float_coder=True)
    assert legacy.prior["hash"] == prior_hash(prior)[:32] and legacy.codec["hash"] == codec.model_hash(m)[:32]
    old = _write(legacy, b"", raster(tokens, meta.residual).numpy(), prior, False)
    assert struct.unpack_from("<H", old, 4)[0] == 2 and codec.read_info(old).coder is None
    torch.testing.assert_close(codec.decompress(old).tokens, tokens, rtol=0, atol=0)


def test_any_batching_encodes_and_decodes_the_same(models):
    """Exact logits: how chunks are batched (the file's group, the coder's batches) changes no byte or token."""
    prior = load_prior(models["dir"] / "audio" / "prior", device="cpu")
    net, layout = integer_coder.integer_net(prior), prior.layout((4, 30))
    flat = np.random.default_rng(0).integers(0, 32, 120)
    starts, chunks = [0, 25, 50, 75, 100], [flat[a : a + 25] for a in (0, 25, 50, 75, 100)]
    chunks[-1] = chunks[-1][:20]  # a shorter last chunk
    payloads = integer_coder.encode_chunks(net, layout, starts, chunks, batch=1)
    assert integer_coder.encode_chunks(net, layout, starts, chunks, batch=4) == payloads
    lengths = [len(c) for c in chunks]
    for batch in (1, 2, 32):
        back = integer_coder.decode_chunks(net, layout, starts, lengths, payloads, batch=batch)
        assert all(np.array_equal(x, y) for x, y in zip(back, chunks))


def _with_metadata(data: bytes, version: int, **changes) -> bytes:
    """The file with its metadata changed and its header rewritten (CRC recomputed) as ``version``."""
    meta = codec.read_info(data)
    rest = data[len(container.header_bytes(meta)) :]
    body = json.loads(container.metadata_bytes(meta))
    body.update(changes)
    raw = json.dumps({k: v for k, v in body.items() if v is not None}, sort_keys=True).encode()
    stored = container.deflate(raw, version) if version >= 2 else raw
    fixed = struct.pack("<4sHI", container.MAGIC, version, len(stored))
    return fixed + struct.pack("<I", zlib.crc32(fixed + stored)) + stored + rest


def test_unknown_or_misplaced_coders_are_refused_in_one_line(models):
    data = codec.compress(_inputs("image"), models["image"], prior=models["dir"] / "image" / "prior", margin=0)
    with pytest.raises(CorruptFileError, match="range coder 'integer-9' is not one this vqcodec decodes"):
        codec.read_info(_with_metadata(data, 7, coder="integer-9"))
    data = written_before_v7(data, models["image"], load_prior(models["dir"] / "image" / "prior", device="cpu"))
    with pytest.raises(CorruptFileError, match="range coder 'integer-9' is not one this vqcodec decodes") as e:
        codec.read_info(_with_metadata(data, 5, coder="integer-9"))
    assert "\n" not in str(e.value)
    with pytest.raises(CorruptFileError, match="range coder None"):
        codec.decompress(_with_metadata(data, 5, coder=None))
    for version in (2, 3, 4):  # versions 1-4 know no coder
        with pytest.raises(CorruptFileError, match="unknown metadata fields"):
            codec.read_info(_with_metadata(data, version))
    packed = codec.compress(_inputs("image"), models["image"], prior=None, margin=0)
    with pytest.raises(CorruptFileError, match="names a coder"):
        codec.read_info(_with_metadata(packed, 7, coder="integer-1"))
    packed = written_before_v7(packed, models["image"])
    assert struct.unpack_from("<H", packed, 4)[0] == 2  # packed files were written in the oldest version holding them
    with pytest.raises(CorruptFileError, match="names a coder"):
        codec.read_info(_with_metadata(packed, 5, coder="integer-1"))
    with pytest.raises(CorruptFileError, match="format version 8 is not supported") as e:
        codec.read_info(_with_metadata(data, 8))
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ other machines
WORKER = """
import hashlib, sys, json, numpy as np, torch, codec
from prior.checkpoint import load_prior
from codec.bitstream import integer_coding as integer_coder
job = json.load(open(sys.argv[1]))
out = {"capability": torch.backends.cpu.get_cpu_capability()}
for threads in job.pop("threads"):
    torch.set_num_threads(threads)
    for name, item in job.items():
        tokens = codec.decompress(item["file"]).tokens
        net = integer_coder.integer_net(load_prior(codec.model_dir(item["prior"]), device="cpu"))
        flat, layout = np.load(item["flat"]), tuple(item["layout"])
        payloads = integer_coder.encode_chunks(net, layout, item["starts"], [flat[a:b] for a, b in item["spans"]])
        out[f"{name} threads={threads}"] = [
            hashlib.sha256(tokens.numpy().tobytes()).hexdigest(), hashlib.sha256(b"".join(payloads)).hexdigest()
        ]
print(json.dumps(out))
"""


def test_files_decode_and_encode_identically_under_other_cpu_kernels(tmp_path):
    """A file written here decodes to the same tokens, and its tokens range-code to the same bytes, under every
    ATEN_CPU_CAPABILITY this CPU supports and with 1 and 2 threads (the bundled models)."""
    job, want = {}, {}
    for modality, example, crop in (("image", "icecold.png", (48, 96)), ("audio", "speech.flac", 8000)):
        x, _, src = _read_input(str(ROOT / "examples" / example), None, None)
        x = x[:, : crop[0], : crop[1]] if modality == "image" else x[:, :crop]
        path = tmp_path / f"{modality}.vqc"
        path.write_bytes(
            codec.compress(x, modality, f"{modality}/prior", sample_rate=src.get("rate"), chunk_tokens=256)
        )
        meta = codec.read_info(path)
        tokens = codec.decompress(path).tokens
        flat = raster(tokens, meta.residual).numpy()
        np.save(tmp_path / f"{modality}.npy", flat)
        prior = load_prior(codec.model_dir(f"{modality}/prior"), device="cpu")
        spans = [meta.chunk_range(i) for i in range(meta.num_chunks)]
        net = integer_coder.integer_net(prior)
        payloads = integer_coder.encode_chunks(net, prior.layout(meta.token_shape), [a for a, _ in spans],
                                               [flat[a:b] for a, b in spans])  # fmt: skip
        job[modality] = dict(file=str(path), prior=f"{modality}/prior", flat=str(tmp_path / f"{modality}.npy"),
                             layout=list(prior.layout(meta.token_shape)), starts=[a for a, _ in spans],
                             spans=spans)  # fmt: skip
        want[modality] = [hashlib.sha256(tokens.numpy().tobytes()).hexdigest(),
                          hashlib.sha256(b"".join(payloads)).hexdigest()]  # fmt: skip
        assert _with_chunks_only(path.read_bytes()) == b"".join(payloads)  # the file holds exactly these bytes
    (tmp_path / "worker.py").write_text(WORKER)
    seen = []
    for capability in ("default", "avx2", "avx512"):
        threads = [1, 2] if capability == "default" else [1]  # (a second thread is slow on a busy machine)
        (tmp_path / "job.json").write_text(json.dumps({**job, "threads": threads}))
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "job.json")], env=env,
                              capture_output=True, text=True, timeout=600, cwd=ROOT)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])
        if got.pop("capability").lower() != capability:
            continue  # this CPU cannot run these kernels
        seen.append(capability)
        for key, digests in got.items():
            assert digests == want[key.split()[0]], f"{capability}, {key}"
    assert "default" in seen and len(seen) >= 2


def _with_chunks_only(data: bytes) -> bytes:
    """The concatenated payloads of a file's chunks."""
    meta = codec.read_info(data)
    pos, out = len(container.header_bytes(meta)), []
    for _ in range(meta.num_chunks):
        length = struct.unpack_from("<I", data, pos)[0]
        out.append(data[pos + 12 : pos + 12 + length])
        pos += 12 + length
    return b"".join(out)


# ----------------------------------------------------------------------- crafted damage reaching the coder
@pytest.fixture(scope="module")
def coded_files(models):
    files = {}
    for modality in ("image", "audio"):
        data = codec.compress(
            _inputs(modality), models[modality], prior=models["dir"] / modality / "prior", chunk_tokens=40, group=2
        )
        files[modality] = (data, codec.decompress(data).tokens)
    return files


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_crafted_payloads_decode_exactly_or_raise_corrupt(coded_files, data):
    name, blob = data.draw(crafted(coded_files))
    t0 = time.perf_counter()
    try:
        out = codec.decompress(blob)
    except CorruptFileError:
        out = None
    assert time.perf_counter() - t0 < 10
    if out is not None:  # a change the range decoder never reads (the tail of the last word) decodes exactly
        torch.testing.assert_close(out.tokens, coded_files[name][1], rtol=0, atol=0)


@pytest.mark.parametrize("entropy_model", ["image/prior", "auto"])
@pytest.mark.parametrize("shape,chunk_tokens", [((3, 8, 1000), None), ((3, 256, 192), 2048)])
def test_thin_images_and_chunks_longer_than_the_context_round_trip(shape, chunk_tokens, entropy_model):
    """Found from outside with the float coder (raw IndexError from prior.incremental): an 8 x 1000 image, and
    chunks of 2048 tokens (8 contexts of the bundled prior); also with the default ("auto": the bundled context
    model where there is one)."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
    data = codec.compress(x, "image", entropy_model, chunk_tokens=chunk_tokens, packed_if_smaller=False)
    meta = codec.read_info(data)
    assert meta.mode == "prior" and (chunk_tokens is None or meta.chunk_tokens == chunk_tokens)
    out = codec.decompress(data)
    model = codec.load("image", device="cpu")
    torch.testing.assert_close(out.tokens, model.encode(x[None], margin=IMAGE_MARGIN)[0], rtol=0, atol=0)


def test_decode_errors_name_the_file_and_foreign_errors_become_corrupt(coded_files, tmp_path, monkeypatch):
    data, _ = coded_files["audio"]
    meta = codec.read_info(data)
    pos = len(container.header_bytes(meta))
    length, tcrc, _ = struct.unpack_from("<III", data, pos)
    payload = bytes(length)  # zeros with a recomputed chunk CRC: only the range decoder or the token CRC can tell
    head = struct.pack("<II", length, tcrc)
    bad = data[:pos] + head + struct.pack("<I", zlib.crc32(head + payload)) + payload + data[pos + 12 + length :]
    path = tmp_path / "bad.vqc"
    path.write_bytes(bad)
    with pytest.raises(CorruptFileError, match=f"^{path}: chunk") as e:
        codec.decompress(path)
    assert "\n" not in str(e.value)

    def fails(*args, **kwargs):
        raise IndexError("index 7 is out of bounds")

    path.write_bytes(data)
    monkeypatch.setattr(integer_coder, "decode_chunks", fails)  # any library's error inside decoding
    with pytest.raises(CorruptFileError, match=f"^{path}: cannot be decoded \\(IndexError: index 7"):
        codec.decompress(path)
    with pytest.raises(CorruptFileError, match="^cannot be decoded \\(IndexError"):
        codec.decompress(data)
