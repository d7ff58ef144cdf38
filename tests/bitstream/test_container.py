"""The .vqc format and compress / decompress: round trips in both modes, determinism, thread counts, the fast
incremental prior path against the reference forward, bit packing, frequency quantization, bounds checks, and
corrupted files (hypothesis)."""

import numpy as np
import pytest
import torch
from vqc_helpers import build_models, image, image_codec, make_prior, version, written_before_v7

import codec
from codec import (
    ModelMismatchError,
)
from codec.bitstream import container, packing, range_coding
from codec.bitstream.compress import IMAGE_MARGIN
from prior.config import PriorConfig
from prior.incremental import StepDecoder, window_logits
from prior.layout import raster, unraster
from prior.model import TokenPrior


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny image and audio codecs, each with a prior stored beside it (RUN_DIR/prior)."""
    return build_models(tmp_path_factory)


# --------------------------------------------------------------------------------------- components
@pytest.mark.parametrize("bits", [1, 3, 5, 10, 16])
@pytest.mark.parametrize("n", [1, 7, 64, 333])
def test_pack_bits_round_trip_and_size(bits, n):
    rng = np.random.default_rng(bits * 1000 + n)
    v = rng.integers(0, 2**bits, n)
    data = packing.pack_bits(v, bits)
    assert len(data) == packing.packed_size(n, bits) == -(-n * bits // 8)
    np.testing.assert_array_equal(packing.unpack_bits(data, n, bits), v)
    if bits == 3 and n == 7:  # hand-computed: 7 x 3 bits, least significant first
        ref = "".join(format(int(x), "03b")[::-1] for x in v)
        ref += "0" * (-len(ref) % 8)
        assert data == bytes(int(ref[i : i + 8][::-1], 2) for i in range(0, len(ref), 8))


def test_integer_frequencies_every_symbol_counts_and_sum_is_exact():
    torch.manual_seed(0)
    logits = torch.randn(5, 300) * 8
    logits[0] = 0.0  # uniform
    logits[1, 7] = 1e4  # one symbol takes (almost) everything
    freq = range_coding.integer_frequencies(logits)
    assert freq.dtype == np.float64 and np.all(freq == np.floor(freq))
    assert np.all(freq >= 1) and np.all(freq.sum(axis=1) == range_coding.FREQ_TOTAL)
    p = torch.softmax(logits.double(), dim=1).numpy()
    np.testing.assert_allclose(freq / range_coding.FREQ_TOTAL, p, atol=300 / range_coding.FREQ_TOTAL)
    assert freq[1, 7] == range_coding.FREQ_TOTAL - 299
    np.testing.assert_array_equal(range_coding.integer_frequencies(logits.clone()), freq)


@pytest.mark.parametrize("residual", [False, True])
def test_raster_is_the_priors_order(residual):
    shape = (3, 4, 5) if residual else (4, 5)
    t = torch.arange(int(np.prod(shape))).reshape(shape)
    flat = raster(t, residual)
    levels = 3 if residual else 1
    p = TokenPrior(PriorConfig(codebook_size=64, dim=8, depth=1, heads=2, levels=levels, residual=residual))
    torch.testing.assert_close(flat, p.flatten(t[None])[0], rtol=0, atol=0)
    if residual:
        assert flat[:4].tolist() == [0, 20, 40, 1]  # the level innermost
    torch.testing.assert_close(unraster(flat, shape, residual), t, rtol=0, atol=0)


@pytest.mark.parametrize("layout,starts,context", [((1, 5, 7), [0, 9, 20], 6), ((3, 1, 11), [0, 4], 40)])
def test_step_decoder_matches_the_reference_forward(models, layout, starts, context):
    """The fast ring-buffer path equals TokenPrior.forward over each window (float64 reference tolerance)."""
    torch.manual_seed(3)
    cfg = PriorConfig(codebook_size=19, dim=32, depth=2, heads=2, context=context, levels=layout[0], residual=True)
    p = TokenPrior(cfg).eval()
    total = layout[0] * layout[1] * layout[2]
    n = min(total - max(starts), 14)
    seq = torch.randint(0, 19, (total,))
    dec = StepDecoder(p, layout, torch.tensor(starts))
    got = []
    for s in range(n):
        inputs = torch.stack([torch.tensor(19) if s == 0 else seq[a + s - 1] for a in starts])
        got.append(dec.step(inputs))
    got = torch.stack(got, dim=1)
    for b, a in enumerate(starts):
        inputs = torch.cat([torch.tensor([19]), seq[a : a + n - 1]])[None]
        ref = window_logits(p.double(), layout, a, inputs)[0]
        p.float()
        torch.testing.assert_close(got[b], ref.float(), atol=2e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("prior", [None, "auto"])
@pytest.mark.parametrize("c", [1, 3])
def test_image_round_trip_both_modes(models, prior, c):
    m = models["image"]
    x = image(c=c)
    opts = dict(prior=prior, chunk_tokens=7, group=3, packed_if_smaller=False)
    data = codec.compress(x, m, **opts)
    assert data == codec.compress(x, m, **opts)  # identical bytes
    out = codec.decompress(data)  # models found from the names the file records
    ref = m.encode(x[None], margin=IMAGE_MARGIN)[0]  # the 37 x 53 image inside 2+ px of edge: 48 x 64 px
    torch.testing.assert_close(out.tokens, ref, rtol=0, atol=0)
    torch.testing.assert_close(out.data, m.decode(ref[None], shape=x.shape, margin=IMAGE_MARGIN)[0])
    assert out.data.shape == x.shape and out.metadata.mode == ("packed" if prior is None else "prior")
    assert out.metadata.media["margin"] == IMAGE_MARGIN and data[4] == 7
    if prior is None:  # header + 6 x 8 tokens at 5 bits in 6 chunks of 7 (5 bytes each) and one of 6 (4 bytes)
        assert out.tokens.shape == (6, 8)
        sizes = [5 + 12] * 6 + [4 + 12]
        assert len(data) == len(container.header_bytes(out.metadata)) + sum(sizes)
    bare = codec.decompress(codec.compress(x, m, margin=0, **opts))  # no margin: 5 x 7 tokens
    assert bare.tokens.shape[-2:] == (5, 7) and "margin" not in bare.metadata.media
    torch.testing.assert_close(bare.tokens, m.encode(x[None])[0], rtol=0, atol=0)


@pytest.mark.parametrize("prior", [None, "auto"])
def test_audio_round_trip_resampled_stereo(models, prior):
    """Stereo through a mono codec: mid and side coded one after the other, left = mid + side, right = mid - side."""
    a = models["audio"]
    y = torch.rand(2, 7000, generator=torch.Generator().manual_seed(4)) - 0.5
    data = codec.compress(y, a, prior=prior, sample_rate=22050, num_quantizers=3, chunk_tokens=10, group=4)
    out = codec.decompress(data)
    from codec.media import resample

    z = resample(y, 22050, 16000)
    mid_side = torch.stack([(z[0] + z[1]) / 2, (z[0] - z[1]) / 2])[:, None]  # (2, 1, T) as a batch of two
    ref = a.encode(mid_side, num_quantizers=3)  # (2, 3, t)
    torch.testing.assert_close(out.tokens, torch.cat([ref[0], ref[1]], dim=-1), rtol=0, atol=0)
    assert out.metadata.media["stereo"] == "mid_side" and out.metadata.media["orig_channels"] == 2
    assert version(data) == 7
    old = written_before_v7(data, a)  # as written before version 7: 4 (5 prior-coded); version 3 readers refuse it
    assert version(old) == (5 if out.metadata.mode == "prior" else 4)
    assert torch.equal(codec.decompress(old).data, out.data)
    assert out.sample_rate == 22050 and out.data.shape == (2, 7000)
    mid, side = a.decode(ref, shape=(1, z.shape[-1]))[:, 0]
    want = resample(torch.stack([mid + side, mid - side]), 16000, 22050)[:, :7000].clamp(-1, 1)
    want = torch.nn.functional.pad(want, (0, 7000 - want.shape[1]))  # resampling may fall a sample short
    torch.testing.assert_close(out.data, want, atol=1e-5, rtol=0)


def test_prior_mode_is_smaller_on_predictable_tokens(tmp_path):
    """A prior that has learnt a constant image codes it in far fewer bits than packing."""
    m = image_codec(tmp_path)
    p = make_prior(m, tmp_path / "p")
    x = torch.full((3, 64, 64), 0.5)
    target = m.encode(x[None]).clone()  # (1, 8, 8): one value everywhere
    opt = torch.optim.Adam(p.parameters(), lr=3e-3)
    from prior.layout import positions

    inputs = torch.cat([torch.tensor([[32]]), p.flatten(target)[:, :-1]], dim=1)
    pos = positions((1, 8, 8), 0, 64)[None]
    p.train()
    for _ in range(60):
        logits = p(inputs, pos)
        loss = torch.nn.functional.cross_entropy(logits[0], p.flatten(target)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    p.eval()
    packed = codec.compress(x, m, prior=None, margin=0)  # the 8 x 8 grid the prior learnt
    coded = codec.compress(x, m, prior=p, margin=0)

    def payload(data):
        return len(data) - len(container.header_bytes(codec.read_info(data))) - 12

    assert payload(packed) == 40  # 64 tokens x 5 bits
    assert payload(coded) <= 8  # a confident prior: a fraction of a bit a token, plus the coder's final words
    torch.testing.assert_close(codec.decompress(coded, m, p).tokens, target[0], rtol=0, atol=0)


def test_decoding_with_one_and_two_threads_gives_identical_tokens(models):
    m = models["image"]
    x = image(seed=5, h=64, w=80)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        data = codec.compress(x, m, chunk_tokens=16, group=5)
        two = codec.decompress(data).tokens
        torch.set_num_threads(1)
        one = codec.decompress(data).tokens
        assert codec.compress(x, m, chunk_tokens=16, group=5) == data
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one, two, rtol=0, atol=0)
    torch.testing.assert_close(one, m.encode(x[None], margin=IMAGE_MARGIN)[0], rtol=0, atol=0)


def test_auto_prior_falls_back_to_packed_when_that_is_smaller(models):
    """An untrained prior codes worse than fixed-width indices: with prior="auto" the file is the packed one."""
    m, x = models["image"], image(seed=4)
    forced = codec.compress(x, m, prior="auto", packed_if_smaller=False)
    packed = codec.compress(x, m, prior=None)
    assert codec.read_info(forced).mode == "prior" and len(forced) > len(packed)  # the premise of this test
    auto = codec.compress(x, m)  # prior="auto" is the default
    assert auto == packed and codec.read_info(auto).mode == "packed"
    torch.testing.assert_close(codec.decompress(auto).tokens, codec.decompress(forced).tokens, rtol=0, atol=0)
    explicit = codec.compress(x, m, prior=models["dir"] / "img" / "prior")  # a prior given explicitly is used
    assert explicit == forced


def test_file_from_another_model_is_refused(models, tmp_path):
    data = codec.compress(image(), models["image"], prior=None)
    other = image_codec(tmp_path, name="other", seed=9)
    with pytest.raises(ModelMismatchError, match="encoded with codec"):
        codec.decompress(data, model=other)
    with pytest.raises(ModelMismatchError):
        data = codec.compress(image(), models["image"], packed_if_smaller=False)
        codec.decompress(data, prior=make_prior(other, tmp_path / "p2"))
    with pytest.raises(ModelMismatchError, match="input is image"):
        codec.compress(image(), models["audio"])


def test_file_whose_model_is_gone_is_refused(tmp_path):
    m = image_codec(tmp_path, name="gone")
    data = codec.compress(image(), m, prior=None)
    import shutil

    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(ModelMismatchError, match="cannot be loaded"):
        codec.decompress(data)


def test_a_header_claiming_more_audio_than_its_tokens_is_refused(models):
    """orig_frames is bounded by the coded frames (resampled to the original's rate): a 2 KB file cannot ask for
    gigabytes of samples."""
    import dataclasses

    a = models["audio"]
    data = codec.compress(torch.rand(1, 7000) - 0.5, a, prior=None, sample_rate=22050)
    meta = codec.read_info(data)
    rest = data[len(container.header_bytes(meta)) :]
    for frames in (7000 + 3, 2**31 - 1):
        forged = dataclasses.replace(meta, media={**meta.media, "orig_frames": frames})
        with pytest.raises(codec.CorruptFileError, match="orig_frames"):
            codec.decompress(container.header_bytes(forged) + rest)
    ok = dataclasses.replace(meta, media={**meta.media, "orig_frames": 7000 + 1})  # within resampling's slack
    assert codec.decompress(container.header_bytes(ok) + rest).data.shape == (1, 7001)
    # the coded rate is the codec's (16 kHz): a header claiming 1 Hz could ask for 22,050 samples per coded one
    assert meta.media["sample_rate"] == a.sample_rate == 16000
    for rate in (1, 24, 8000, 16001):
        forged = dataclasses.replace(meta, media={**meta.media, "sample_rate": rate})
        with pytest.raises(codec.CorruptFileError, match=f"sample rate {rate} Hz is not the codec's 16000 Hz"):
            codec.decompress(container.header_bytes(forged) + rest)


def test_named_models_are_loaded_once_per_process(models, tmp_path, monkeypatch):
    """decompress in a loop reads the weights of the codec and prior it names once; new weights load again."""
    import os

    import codec.bitstream.models as bm

    monkeypatch.setattr(bm, "_CACHE", type(bm._CACHE)())
    calls = []
    real_load, real_prior = bm.load, bm.load_prior
    monkeypatch.setattr(bm, "load", lambda *a, **k: calls.append("codec") or real_load(*a, **k))
    monkeypatch.setattr(bm, "load_prior", lambda *a, **k: calls.append("prior") or real_prior(*a, **k))
    run = models["dir"] / "img"
    data = codec.compress(torch.rand(3, 24, 40), str(run), prior="auto", packed_if_smaller=False)
    assert codec.read_info(data).mode == "prior"
    calls.clear()
    for _ in range(3):
        codec.decompress(data)  # the file names the run directory and its prior
    assert calls == [], calls  # compress loaded both already
    monkeypatch.setattr(bm, "_CACHE", type(bm._CACHE)())
    for _ in range(3):
        codec.decompress(data)
    assert sorted(calls) == ["codec", "prior"]
    # a run that trains on: new weights (here the same ones rewritten, with another mtime) are loaded again
    os.utime(run / "model.safetensors", ns=(1, 1))
    calls.clear()
    codec.decompress(data)
    assert calls == ["codec"]
