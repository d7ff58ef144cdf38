"""Chunks range-coded in forked worker processes: the same bytes and tokens as one process for the integer coder
and for the float coder of older files, errors at their job's turn, and how chunks are cut into jobs."""

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from vqc_helpers import build_models, image, legacy_metadata

import codec
from codec.bitstream import compress as compress_module
from codec.bitstream import integer_coding
from codec.bitstream.parallel import can_fork, map_groups, work_units
from prior.layout import raster

pytestmark = pytest.mark.skipif(not can_fork(), reason="worker processes are forked (Linux)")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory)


def test_workers_write_the_same_bytes_and_decode_the_same_tokens(models):
    m, d = models["image"], models["dir"]
    x = image(h=61, w=83)  # 8 x 11 = 88 tokens: 11 chunks of 8
    for group in (3, 32):  # 4 groups, or one group cut in two for two workers
        opts = dict(model=m, prior=d / "img" / "prior", chunk_tokens=8, group=group, margin=0)
        one = codec.compress(x, **opts, workers=1)
        assert codec.read_info(one).num_chunks == 11 and codec.read_info(one).coder == integer_coding.CODER
        assert codec.compress(x, **opts, workers=2) == one
        assert codec.compress(x, **opts, workers=16) == one  # more workers than chunks
        a, b = codec.decompress(one, model=m, workers=1), codec.decompress(one, model=m, workers=3)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.data, b.data)
    aud = models["audio"]
    y = torch.rand(1, 16000) - 0.5
    opts = dict(model=aud, prior=d / "aud" / "prior", sample_rate=16000, chunk_tokens=24, group=2)
    clip = codec.compress(y, **opts, workers=1)
    assert codec.compress(y, **opts, workers=2) == clip
    assert torch.equal(codec.decompress(clip, workers=2).tokens, codec.decompress(clip, workers=1).tokens)


def test_float_coded_files_run_whole_groups_in_workers(models):
    """The float coder of versions 1-4 codes a group's chunks in lockstep: its jobs are the file's groups."""
    m, d = models["image"], models["dir"]
    data = codec.compress(image(h=61, w=83), model=m, prior=d / "img" / "prior", chunk_tokens=8, group=3, margin=0)
    out = codec.decompress(data, model=m)  # its tokens, written again through the float coder, 4 groups of 3 chunks
    prior = compress_module.resolve_prior(d / "img" / "prior", m, codec.model_hash(m))[0]
    meta = legacy_metadata(out.metadata, m, prior, float_coder=True)
    flat = raster(out.tokens, meta.residual).numpy()
    one = compress_module._write(meta, b"", flat, prior, False, workers=1)
    assert compress_module._write(meta, b"", flat, prior, False, workers=3) == one
    assert torch.equal(codec.decompress(one, model=m, prior=prior, workers=3).tokens, out.tokens)


def test_a_failing_job_is_reported_by_its_chunks(models, monkeypatch):
    m, d = models["image"], models["dir"]
    data = codec.compress(image(h=61, w=83), model=m, prior=d / "img" / "prior", chunk_tokens=8, group=3)
    real = integer_coding.decode_chunks

    def fails_on_chunk_6(net, layout, starts, lengths, payloads):  # the workers are forked: they see it
        if 48 in starts:  # chunks 6..8
            raise ValueError("range decoder failed: bad data")
        return real(net, layout, starts, lengths, payloads)

    monkeypatch.setattr(integer_coding, "decode_chunks", fails_on_chunk_6)
    with pytest.raises(codec.CorruptFileError, match=r"chunks 6\.\.8: range decoder failed"):
        codec.decompress(data, model=m, workers=2)

    def wrong_tokens_in_chunk_4(net, layout, starts, lengths, payloads):
        out = real(net, layout, starts, lengths, payloads)
        if 32 in starts:
            out[starts.index(32)] = (out[starts.index(32)] + 1) % 32
        return out

    monkeypatch.setattr(integer_coding, "decode_chunks", wrong_tokens_in_chunk_4)
    with pytest.raises(codec.CorruptFileError, match="chunk 4 decoded to tokens that fail their checksum"):
        codec.decompress(data, model=m, workers=2)


def test_work_units():
    groups = [[(i, 8 * i, 8 * i + 8) for i in range(a, min(a + 4, 10))] for a in range(0, 10, 4)]  # 4 + 4 + 2
    assert work_units(groups, 2, lockstep=True) == groups
    assert work_units(groups, 1, lockstep=False) == groups  # runs of a group at most
    one = [[(i, 8 * i, 8 * i + 8) for i in range(32)]]
    halves = work_units(one, 2, lockstep=False)
    assert [len(j) for j in halves] == [16, 16] and [c for j in halves for c in j] == one[0]
    assert [len(j) for j in work_units(one, 5, lockstep=False)] == [7, 7, 7, 7, 4]
    assert work_units([], 2, lockstep=False) == []


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
    many = [(i,) for i in range(40)]  # more jobs than are submitted at once: the rest are read as work is done
    assert list(map_groups(lambda x: x + 1, iter(many), workers=2, count=40)) == list(range(1, 41))


_GO: Path | None = None  # set by the test below; the forked workers inherit it


def _killed_at_two(x: int) -> int:
    if x == 2:  # only once jobs 0 and 1 are in the parent's hands (on a loaded machine they may still be running)
        deadline = time.monotonic() + 60
        while not _GO.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
    return x


def test_a_killed_worker_is_an_error_not_a_hang(tmp_path):
    global _GO
    _GO = tmp_path / "go"
    got = map_groups(_killed_at_two, [(i,) for i in range(6)], workers=2, count=6)
    assert [next(got), next(got)] == [0, 1]
    _GO.touch()
    with pytest.raises(codec.WorkerError, match="a worker process ended without its result"):
        next(got)
    left = [p for p in multiprocessing.active_children() if p.is_alive()]
    assert not left, left  # the pool is gone
