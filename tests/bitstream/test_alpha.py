"""Alpha beside the colour tokens (.vqc version 3 and later): exact round trips, the version written, checks on
damaged alpha."""

import struct
import zlib

import numpy as np
import pytest
import torch
from vqc_helpers import build_models, image, version, written_before_v7

import codec
from codec.bitstream import alpha, container
from codec.bitstream.rate import read_sizes


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


def _with_alpha(c: int, seed: int = 0) -> torch.Tensor:
    """An image (c + 1, 37, 53) whose last channel is an 8-bit alpha: a disc with a soft edge, plus noise."""
    h, w = 37, 53
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    disc = ((20 - ((yy - 18) ** 2 + (xx - 26) ** 2).float().sqrt()) * 64).clamp(0, 255)
    noise = torch.randint(0, 3, (h, w), generator=torch.Generator().manual_seed(seed))
    a = (disc + noise).clamp(0, 255).round() / 255
    return torch.cat([image(seed, c, h, w), a[None]])


@pytest.mark.parametrize("prior", ["auto", None])
@pytest.mark.parametrize("c", [1, 3])
def test_alpha_round_trips_exactly(models, prior, c):
    x = _with_alpha(c)
    data = codec.compress(x, models["image"], prior, margin=0)
    assert version(data) == version(codec.compress(x, models["image"], prior)) == 7  # every file written now
    old = written_before_v7(data, models["image"])  # as vqcodec wrote it before: version 3 (5 prior-coded)
    assert version(old) == (5 if codec.read_info(data).mode == "prior" else 3)
    out = codec.decompress(data, models["image"])
    assert torch.equal(codec.decompress(old, models["image"]).data, out.data)
    assert out.data.shape == (c + 1, 37, 53)
    assert torch.equal(out.data[-1], x[-1])  # bit-exact
    colour = codec.decompress(codec.compress(x[:-1], models["image"], prior, margin=0), models["image"])
    assert torch.equal(out.data[:-1], colour.data)  # the colour is coded as without alpha
    assert out.metadata.media["alpha"] == "lzma2"


def test_files_without_alpha_were_version_2(models):
    data = written_before_v7(codec.compress(image(0), models["image"], None, margin=0), models["image"])
    assert version(data) == 2 and "alpha" not in codec.read_info(data).media


def test_alpha_payload_bound_holds_for_noise():
    for n in (1, 1000, 70_000):
        plane = np.random.default_rng(n).integers(0, 256, (1, n), dtype=np.uint8)
        payload = alpha.encode_alpha(plane)
        assert len(payload) <= alpha.max_alpha_payload(n)
        assert np.array_equal(alpha.decode_alpha(payload, 1, n), plane)


def _alpha_record_offset(data: bytes) -> int:
    return len(container.header_bytes(codec.read_info(data)))


def test_damaged_alpha_is_refused(models):
    data = codec.compress(_with_alpha(3), models["image"], None)
    at = _alpha_record_offset(data)
    length, crc = struct.unpack_from("<II", data, at)

    def reframed(payload: bytes, content_crc: int = crc) -> bytes:  # a valid record around another payload
        return data[:at] + container.record_bytes(payload, content_crc) + data[at + 12 + length :]

    flipped = bytearray(data)
    flipped[at + 12] ^= 1
    plane = np.zeros((37, 53), np.uint8)
    cases = [
        (bytes(flipped), "alpha record checksum"),
        (reframed(b"\x00" * 8), "not a valid LZMA2 stream|does not hold exactly"),
        (reframed(alpha.encode_alpha(plane[:10])), "does not hold exactly 37x53"),
        (reframed(alpha.encode_alpha(plane), crc ^ 1), "alpha plane fails its checksum"),
        (reframed(alpha.encode_alpha(np.zeros((370, 530), np.uint8))), "does not hold exactly"),  # no bomb
        (data[: at + 20], "truncated"),
    ]
    for blob, match in cases:
        with pytest.raises(codec.CorruptFileError, match=match):
            codec.decompress(blob, models["image"])


def test_alpha_needs_version_3(models):
    data = written_before_v7(codec.compress(_with_alpha(3), models["image"], None, margin=0), models["image"])
    meta = codec.read_info(data)
    with pytest.raises(ValueError, match="version 3"):
        container.header_bytes(meta, version=2)
    body = container.deflate(container.metadata_bytes(meta), 2)  # a version-2 header claiming alpha
    fixed = struct.pack("<4sHI", container.MAGIC, 2, len(body))
    v2 = fixed + struct.pack("<I", zlib.crc32(fixed + body)) + body + data[_alpha_record_offset(data) :]
    with pytest.raises(codec.CorruptFileError, match="alpha needs version 3"):
        codec.read_info(v2)
    meta.media["alpha"] = "png"
    with pytest.raises(codec.CorruptFileError, match="media.alpha"):
        container.validate(container.json.loads(container.metadata_bytes(meta)), 3)


def test_sizes_account_for_every_byte(models):
    data = codec.compress(_with_alpha(3), models["image"], "auto")
    meta, sizes = read_sizes(data)
    assert sizes.total == len(data) and sizes.header == _alpha_record_offset(data)
    assert sizes.alpha == 12 + struct.unpack_from("<I", data, sizes.header)[0]
    assert sizes.chunk_heads == 12 * meta.num_chunks and sizes.tokens > 0
