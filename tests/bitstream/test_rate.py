"""Rates in the user's units: parsing bitrates, the rate of a residual level, choosing levels for a requested rate
(``compress(bitrate=, bpp=)``), and what ``describe`` reports about a file."""

import math
from types import SimpleNamespace

import pytest
import torch
from vqc_helpers import build_models, image

import codec
from codec.bitstream.rate import choose_levels, describe, level_rate, parse_bitrate, read_sizes


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


def _codec(modality, levels, K=1024, f=8, sample_rate=24000):
    """What choose_levels reads of a codec, for models of any size (here: the shapes of the bundled ones)."""
    return SimpleNamespace(
        modality=modality,
        codebook_size=K,
        downsample=f,
        sample_rate=sample_rate if modality == "audio" else None,
        num_quantizers=levels,
        residual=levels > 1 or modality == "audio",
    )


@pytest.mark.parametrize(
    ("text", "bps"),
    [("3kbps", 3000), ("3k", 3000), ("3000", 3000), ("3 kbps", 3000), ("1.5K", 1500), ("6kbit/s", 6000),
     ("3000bps", 3000), ("2.5 kb/s", 2500), (3000, 3000), (1.5e3, 1500)],
)  # fmt: skip
def test_parse_bitrate(text, bps):
    assert parse_bitrate(text) == bps


@pytest.mark.parametrize("text", ["", "abc", "3q", "3kb", "3 mbps", "-3k", "0", "0k", "k", float("inf")])
def test_parse_bitrate_refuses(text):
    with pytest.raises(ValueError, match="bitrate"):
        parse_bitrate(text)


def test_level_rate_is_the_packed_rate_of_one_level():
    audio = _codec("audio", 8, sample_rate=24000, f=320)
    assert level_rate(audio) == 10 * 75  # 75 frames/s, 10 bits per token
    assert level_rate(_codec("image", 6, K=1024, f=8)) == 10 / 64
    assert level_rate(_codec("image", 1, K=1000, f=16)) == 10 / 256  # ceil(log2 K) bits, as packed


@pytest.mark.parametrize(
    ("target", "levels", "below"),
    [(3000, 4, False), (2999, 3, False), (6000, 8, False), (1e6, 8, False), (750, 1, False), (300, 1, True)],
)
def test_choose_levels_audio_at_or_below_the_request(target, levels, below):
    choice = choose_levels(_codec("audio", 8, f=320), target)
    assert (choice.levels, choice.below_lowest) == (levels, below)
    assert choice.rate == levels * 750


def test_choose_levels_images():
    six = _codec("image", 6)  # 0.156 bpp a level
    assert choose_levels(six, 0.25).levels == 1 and choose_levels(six, 0.5).levels == 3
    assert choose_levels(six, 0.9375).levels == 6 and choose_levels(six, 5).levels == 6
    assert choose_levels(six, 0.1).below_lowest
    assert choose_levels(_codec("image", 1), 2.0).levels == 1  # a single quantizer: one level
    with pytest.raises(ValueError):
        choose_levels(six, 0)


def test_compress_picks_levels_for_the_rate(models):
    aud, img = models["audio"], models["image"]  # audio: 4 levels of K = 32 at 16 kHz, hop 320: 250 bps a level
    y = torch.rand(1, 6400) - 0.5
    for rate, levels in (("500", 2), (750.0, 3), ("1k", 4)):
        data = codec.compress(y, aud, None, bitrate=rate)
        assert codec.read_info(data).token_shape[0] == levels
    with pytest.warns(UserWarning, match="below the lowest rate this codec offers"):
        data = codec.compress(y, aud, None, bitrate=100)
    assert codec.read_info(data).token_shape[0] == 1
    assert codec.read_info(codec.compress(image(0), img, None, bpp=0.5)).token_shape == [6, 8]  # single level, margin 2
    with pytest.raises(ValueError, match="not num_quantizers and bitrate"):
        codec.compress(y, aud, None, bitrate=500, num_quantizers=2)
    with pytest.raises(ValueError, match="bitrate is for audio and bpp for images"):
        codec.compress(image(0), img, None, bitrate=500)
    with pytest.raises(ValueError, match="bitrate is for audio and bpp for images"):
        codec.compress(y, aud, None, bpp=0.5)


def test_describe_splits_the_file(models):
    y = torch.rand(2, 16000) - 0.5  # 1 s at 16 kHz
    data = codec.compress(y, models["audio"], "auto", num_quantizers=3, packed_if_smaller=False)
    meta, sizes = read_sizes(data)
    info = describe(meta, sizes)
    assert info["bytes"] == len(data) and info["mode"] == "prior" and info["levels"] == 3
    assert info["header_bytes"] + info["chunk_header_bytes"] + info["token_bytes"] == len(data)
    assert info["kbps"] == pytest.approx(len(data) * 8 / 1000)
    assert info["kbps_without_header"] == pytest.approx((len(data) - info["header_bytes"]) * 8 / 1000)
    assert info["bits_per_token"] == pytest.approx(info["token_bytes"] * 8 / meta.num_tokens)
    assert info["packed_bits_per_token"] == math.ceil(math.log2(32))
