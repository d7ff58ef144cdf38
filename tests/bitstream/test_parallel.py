"""Groups of chunks range-coded in forked worker processes: the same bytes and tokens as one process, errors at
their group's turn."""

import pytest
import torch
from vqc_helpers import build_models, image

import codec
from codec.bitstream import range_coding
from codec.bitstream.parallel import can_fork, map_groups

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes are forked (Linux)")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


def test_workers_write_the_same_bytes_and_decode_the_same_tokens(models):
    m, d = models["image"], models["dir"]
    x = image(h=61, w=83)  # 8 x 11 = 88 tokens: 11 chunks of 8, 4 groups of 3 (the last of 2)
    opts = dict(model=m, prior=d / "img" / "prior", chunk_tokens=8, group=3)
    one = codec.compress(x, **opts, workers=1)
    assert codec.read_info(one).num_chunks == 11
    assert codec.compress(x, **opts, workers=2) == one
    assert codec.compress(x, **opts, workers=8) == one  # more workers than groups
    a, b = codec.decompress(one, model=m, workers=1), codec.decompress(one, model=m, workers=3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.data, b.data)
    aud = models["audio"]
    y = torch.rand(1, 16000) - 0.5
    opts = dict(model=aud, prior=d / "aud" / "prior", sample_rate=16000, chunk_tokens=24, group=2)
    clip = codec.compress(y, **opts, workers=1)
    assert codec.compress(y, **opts, workers=2) == clip
    assert torch.equal(codec.decompress(clip, workers=2).tokens, codec.decompress(clip, workers=1).tokens)


def test_a_failing_group_is_reported_by_its_chunks(models, monkeypatch):
    m, d = models["image"], models["dir"]
    data = codec.compress(image(h=61, w=83), model=m, prior=d / "img" / "prior", chunk_tokens=8, group=3)
    real = range_coding.prior_decode

    def fails_on_group_2(prior, layout, starts, lengths, payloads):  # the workers are forked: they see it
        if starts[0] == 48:  # chunks 6..8
            raise ValueError("range decoder failed: bad data")
        return real(prior, layout, starts, lengths, payloads)

    monkeypatch.setattr(range_coding, "prior_decode", fails_on_group_2)
    with pytest.raises(codec.CorruptFileError, match=r"chunks 6\.\.8: range decoder failed"):
        codec.decompress(data, model=m, workers=2)

    def wrong_tokens_in_group_1(prior, layout, starts, lengths, payloads):
        out = real(prior, layout, starts, lengths, payloads)
        if starts[0] == 24:  # chunks 3..5
            out[1] = (out[1] + 1) % 32
        return out

    monkeypatch.setattr(range_coding, "prior_decode", wrong_tokens_in_group_1)
    with pytest.raises(codec.CorruptFileError, match="chunk 4 decoded to tokens that fail their checksum"):
        codec.decompress(data, model=m, workers=2)


def _square_or_fail(x):
    if x == 3:
        raise ValueError("three")
    return x * x


def test_map_groups_keeps_order_and_raises_at_the_failing_job():
    jobs = [(i,) for i in range(6)]
    assert list(map_groups(_square_or_fail, jobs[:3], workers=2, count=3)) == [0, 1, 4]
    got = map_groups(_square_or_fail, iter(jobs), workers=2, count=6)
    assert [next(got) for _ in range(3)] == [0, 1, 4]
    with pytest.raises(ValueError, match="three"):
        next(got)
    assert list(map_groups(lambda x: -x, jobs, workers=1, count=6)) == [0, -1, -2, -3, -4, -5]  # here, in order
