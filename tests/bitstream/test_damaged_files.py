"""The .vqc format under attack: huge or inconsistent header fields, tampered chunks, corrupted files
(hypothesis), files that are not .vqc, and the format versions."""

import json
import struct
import time
import tracemalloc
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vqc_helpers import build_models, image, version, written_before_v7

import codec
from codec import (
    CorruptFileError,
)
from codec.bitstream import container
from codec.cli import main as cli_main


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny image and audio codecs, each with a prior stored beside it (RUN_DIR/prior)."""
    return build_models(tmp_path_factory)


# -------------------------------------------------------------------------------------- bad headers
def _with_meta(data: bytes, **changes) -> bytes:
    """A file whose metadata fields are replaced, with a valid header CRC (as a forger would write)."""
    meta = codec.read_info(data)
    for k, v in changes.items():
        setattr(meta, k, v)
    old = len(container.header_bytes(codec.read_info(data)))
    return container.header_bytes(meta) + data[old:]


@pytest.mark.parametrize(
    "changes",
    [
        {"token_shape": [1 << 20, 1 << 20]},
        {"media": {"channels": 3, "height": 1 << 30, "width": 7, "format": None}},
        {"media": {"channels": 3, "height": 60000, "width": 60000, "format": None}},
        {"chunk_tokens": 1 << 30},
        {"codebook_size": 1 << 40},
        {"group": 10**9},
    ],
)
def test_huge_header_fields_are_rejected_before_allocating(models, changes):
    data = _with_meta(codec.compress(image(), models["image"], prior=None), **changes)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError):
            codec.decompress(data, models["image"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("name,digest", [("\ud800", None), ("image", "G" * container.HASH_CHARS)])
def test_model_references_must_be_text_and_hex(models, tmp_path, capsys, name, digest):
    """A lone surrogate (JSON's \\ud800) in a model name, or a hash that is not hex: refused as corrupt, also by
    ``codec info``, in one line (it printed a UnicodeEncodeError's message)."""
    data = codec.compress(image(), models["image"], prior=None)
    ref = codec.read_info(data).codec
    forged = _with_meta(data, codec={"name": name, "hash": digest or ref["hash"]})
    with pytest.raises(CorruptFileError, match="model reference"):
        codec.read_info(forged)
    (tmp_path / "f.vqc").write_bytes(forged)
    assert _cli_status(tmp_path / "f.vqc") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model reference" in err[0] and str(tmp_path / "f.vqc") in err[0], err


def _cli_status(path) -> int:
    try:
        return cli_main(["info", str(path)])
    except SystemExit as e:
        return e.code


def test_huge_lengths_in_the_binary_header_are_rejected(models):
    data = codec.compress(image(), models["image"], prior=None)
    fixed = struct.pack("<4sHI", container.MAGIC, container.FORMAT_VERSION, 0xFFFFFFFF)
    with pytest.raises(CorruptFileError, match="metadata length"):
        codec.decompress(fixed + struct.pack("<I", zlib.crc32(fixed)) + data[14:])
    meta = codec.read_info(data)
    head = len(container.header_bytes(meta))
    forged = struct.pack("<III", 0xFFFFFFF0, 0, 0)
    with pytest.raises(CorruptFileError, match="claims"):
        codec.decompress(data[:head] + forged + data[head + 12 :], models["image"])
    newer = (container.FORMAT_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(CorruptFileError, match="version"):
        codec.decompress(data[:4] + newer + data[6:], models["image"])


def test_tampered_tokens_with_recomputed_chunk_crc_fail_the_token_check(models):
    """Only the token checksum can catch this: the chunk's own CRC was forged to match."""
    m = models["image"]
    data = bytearray(codec.compress(image(), m, chunk_tokens=64))
    head = len(container.header_bytes(codec.read_info(bytes(data))))
    length = struct.unpack_from("<I", data, head)[0]
    data[head + 12 + length // 2] ^= 0x10
    crc = zlib.crc32(bytes(data[head : head + 8]) + bytes(data[head + 12 : head + 12 + length]))
    struct.pack_into("<I", data, head + 8, crc)
    with pytest.raises(CorruptFileError):
        codec.decompress(bytes(data))


# ------------------------------------------------------------------------------------ corrupted files
@pytest.fixture(scope="module")
def valid_files(models):
    img, aud = models["image"], models["audio"]
    y = torch.rand(1, 3000, generator=torch.Generator().manual_seed(6)) - 0.5
    files = {
        "image-packed": codec.compress(image(h=30, w=22), img, prior=None, chunk_tokens=5),
        "image-prior": codec.compress(image(h=30, w=22), img, chunk_tokens=5, group=2),
        "audio-prior": codec.compress(y, aud, chunk_tokens=9, group=3),
    }
    return {k: (v, codec.decompress(v).tokens) for k, v in files.items()}


@st.composite
def damaged(draw, files):
    name = draw(st.sampled_from(sorted(files)))
    data = bytearray(files[name][0])
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "splice", "overwrite"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif kind == "splice":
        other = files[draw(st.sampled_from(sorted(files)))][0]
        cut, cut2 = draw(st.integers(0, len(data))), draw(st.integers(0, len(other)))
        data = data[:cut] + other[cut2:]
    else:
        i = draw(st.integers(0, len(data) - 1))
        blob = draw(st.binary(min_size=1, max_size=16))
        data[i : i + len(blob)] = blob
    return name, bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_files_decode_exactly_or_raise_corrupt(models, valid_files, data):
    _, blob = data.draw(damaged(valid_files))
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        out = codec.decompress(blob)
    except CorruptFileError:
        out = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 10 and peak < 64 << 20
    if out is not None:  # only an intact file may decode (a splice can rebuild another whole file), exactly
        intact = [toks for b, toks in valid_files.values() if b == blob]
        assert intact, "a damaged file decoded without an error"
        torch.testing.assert_close(out.tokens, intact[0], rtol=0, atol=0)


def test_not_a_vqc_file(tmp_path):
    for blob in (b"", b"VQ", b"PNG\x00" + bytes(40), bytes(range(256))):
        with pytest.raises(CorruptFileError):
            codec.decompress(blob)
    with pytest.raises(CorruptFileError, match="no such file"):
        codec.decompress(tmp_path / "missing.vqc")


def test_a_header_claiming_many_tokens_allocates_nothing_for_them(models):
    """A consistent header for 2^24 tokens (an 11-hour recording) over a short file: refused, in little memory."""
    a = models["audio"]
    data = codec.compress(torch.rand(1, 3000) - 0.5, a, prior=None)
    meta = codec.read_info(data)
    frames = 320 * (1 << 22)
    media = {**meta.media, "frames": frames, "orig_frames": frames}
    forged = _with_meta(data, token_shape=[4, 1 << 22], media=media)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError, match="chunk 0 claims"):  # 1024 packed tokens need 640 bytes
            codec.decompress(forged, a)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_auto_chunk_size():
    from codec.bitstream.compress import auto_chunk_tokens

    assert auto_chunk_tokens(100) == 256  # never below one prior context
    assert auto_chunk_tokens(4096) == 256  # 16 chunks
    assert auto_chunk_tokens(24576) == 384  # a 512 x 512 image at 6 levels: two full groups of 32, one per worker
    assert auto_chunk_tokens(64 * 500) == 500  # exactly two full groups
    assert auto_chunk_tokens(64 * 500 + 1) == 501  # never a third group of one chunk
    assert auto_chunk_tokens(10**6) == 1024  # long files: the largest chunks, many groups


# ------------------------------------------------------------------------------------- format versions
def test_version_7_deflates_the_metadata_against_its_dictionary_and_older_versions_still_read(models):
    m, x = models["image"], image()
    data = codec.compress(x, m, prior=None, margin=0)
    meta = codec.read_info(data)
    v7 = container.header_bytes(meta)
    assert data.startswith(v7) and version(data) == 7
    assert meta.codec["hash"] == codec.model_hash(m)[:16]  # 64 bits of the SHA-256, in hex
    plain = container.metadata_bytes(meta)
    inflater = zlib.decompressobj(-15, zdict=container.META_DICT)  # zlib itself, not the reader, agrees
    assert inflater.decompress(v7[14:]) == plain and inflater.eof
    old = written_before_v7(data, m)  # version 2: 128-bit hashes, deflated without a dictionary
    old_meta = codec.read_info(old)
    v2, v1 = container.header_bytes(old_meta), container.header_bytes(old_meta, version=1)
    assert old.startswith(v2) and version(old) == 2 and old_meta.codec["hash"] == codec.model_hash(m)[:32]
    old_plain = container.metadata_bytes(old_meta)
    assert v1[14:] == old_plain and zlib.decompress(v2[14:], -15) == old_plain
    assert len(v7) < len(v2) < len(v1)
    out = codec.decompress(data)
    for blob in (old, v1 + old[len(v2) :]):  # the same file as versions 2 and 1 wrote it
        assert codec.read_info(blob) == old_meta
        torch.testing.assert_close(codec.decompress(blob).data, out.data, rtol=0, atol=0)


def test_hashes_have_the_length_of_their_version(models):
    """Version 7 records 16 hex digits of each model hash, versions 1-6 recorded 32: either length in the other's
    header is refused as corrupt, and the writer will not mix them."""
    m = models["image"]
    data = codec.compress(image(), m, prior=None)
    rest = data[len(container.header_bytes(codec.read_info(data))) :]
    meta = codec.read_info(data)
    old_meta = codec.read_info(written_before_v7(data, m))
    long7 = json.loads(container.metadata_bytes(old_meta))  # 32 digits in a version-7 header
    with pytest.raises(CorruptFileError, match="model reference"):
        codec.read_info(_header(container.deflate(json.dumps(long7, sort_keys=True).encode(), 7), version=7) + rest)
    short6 = container.metadata_bytes(meta)  # 16 digits in a version-6 header
    with pytest.raises(CorruptFileError, match="model reference"):
        codec.read_info(_header(container.deflate(short6, 6), version=6) + rest)
    with pytest.raises(ValueError, match="hashes of 32 hex digits"):
        container.header_bytes(meta, version=6)
    with pytest.raises(ValueError, match="hashes of 16 hex digits"):
        container.header_bytes(old_meta, version=7)


def test_a_margin_needs_version_6_and_bounds(models):
    """media.margin (an image coded inside replicated edges) is version 6's: a version-5 reader would crop the image
    in the wrong place, so a version-5 header carrying one is refused, as are margins out of bounds and on audio."""
    data = codec.compress(image(), models["image"], prior=None)
    meta = codec.read_info(data)
    assert version(data) == 7 and meta.media["margin"] == 2 and meta.margin == 2
    old = written_before_v7(data, models["image"])
    old_meta = codec.read_info(old)
    assert version(old) == 6 and old_meta.margin == 2
    with pytest.raises(ValueError, match="needs .vqc version 6"):
        container.header_bytes(old_meta, version=5)
    rest = data[len(container.header_bytes(meta)) :]
    v5 = _header(container.deflate(container.metadata_bytes(old_meta), 5), version=5)
    with pytest.raises(codec.CorruptFileError, match="media.margin in a version 5 file"):
        codec.decompress(v5 + rest)
    for bad in (0, -1, 65, 2.0, True, "2"):
        d = json.loads(container.metadata_bytes(meta))
        d["media"]["margin"] = bad
        blob = _header(container.deflate(json.dumps(d, sort_keys=True).encode()), version=7) + rest
        with pytest.raises(codec.CorruptFileError, match="media.margin"):
            codec.decompress(blob)
    audio = codec.read_info(codec.compress(torch.zeros(1, 800), models["audio"], prior=None, sample_rate=16000))
    d = json.loads(container.metadata_bytes(audio))
    d["media"]["margin"] = 2
    with pytest.raises(codec.CorruptFileError, match="media fields"):
        codec.read_info(_header(container.deflate(json.dumps(d, sort_keys=True).encode()), version=7))


def _header(body: bytes, version: int) -> bytes:
    fixed = struct.pack("<4sHI", container.MAGIC, version, len(body))
    return fixed + struct.pack("<I", zlib.crc32(fixed + body)) + body


@pytest.mark.parametrize("legacy", [False, True])
def test_bad_compressed_metadata_is_refused_without_inflating_it(models, legacy):
    """Version 7 (a preset dictionary) and the plain deflate of versions 2-6 alike."""
    data = codec.compress(image(), models["image"], prior=None, margin=0)
    if legacy:
        data = written_before_v7(data, models["image"])
    v = version(data)
    rest = data[len(container.header_bytes(codec.read_info(data))) :]
    bomb = container.deflate(b"{" + b" " * (64 << 20), v)  # 64 MiB of JSON-ish text in about 64 KB
    assert len(bomb) <= container.MAX_META_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError, match="inflates to more than"):
            codec.read_info(_header(bomb, v) + rest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    good = container.deflate(container.metadata_bytes(codec.read_info(data)), v)
    assert codec.read_info(_header(good, v) + rest) == codec.read_info(data)
    with pytest.raises(CorruptFileError, match="truncated"):
        codec.read_info(_header(good[:-3], v) + rest)
    with pytest.raises(CorruptFileError, match="stray"):
        codec.read_info(_header(good + b"xx", v) + rest)
    with pytest.raises(CorruptFileError, match="deflate"):
        codec.read_info(_header(b"\xff" * 40, v) + rest)
