"""The .vqc format and compress / decompress: round trips in both modes, determinism, thread counts, the fast
incremental prior path against the reference forward, bit packing, frequency quantization, bounds checks, and
corrupted files (hypothesis)."""

import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codec
from codec import (
    AudioCodecConfig,
    Codec,
    CorruptFileError,
    ImageCodecConfig,
    ModelMismatchError,
    QuantizerConfig,
)
from codec.bitstream import container, packing, range_coding
from prior.checkpoint import save_prior
from prior.config import PriorConfig
from prior.incremental import StepDecoder, window_logits
from prior.layout import raster, unraster
from prior.model import TokenPrior


def _image_codec(tmp_path, name="img", K=32, seed=0):
    torch.manual_seed(seed)
    m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=QuantizerConfig(K)))
    m(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp_path / name, m.eval())
    return codec.load(tmp_path / name, device="cpu")


def _prior(m, path, context=16):
    torch.manual_seed(1)
    p = TokenPrior(PriorConfig.for_codec(m, dim=32, depth=2, heads=2, context=context)).eval()
    save_prior(path, p)
    from prior.checkpoint import load_prior

    return load_prior(path, device="cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny image and audio codecs, each with a prior stored beside it (RUN_DIR/prior)."""
    tmp = tmp_path_factory.mktemp("models")
    img = _image_codec(tmp)
    _prior(img, tmp / "img" / "prior")
    torch.manual_seed(2)
    q = QuantizerConfig(codebook_size=32, num_quantizers=4, quantizer_dropout=1.0)
    aud = Codec(AudioCodecConfig(base_channels=8, latent_dim=8, sample_rate=16000, quantizer=q))
    aud(torch.rand(2, 1, 320 * 8) * 2 - 1)
    codec.save_model(tmp / "aud", aud.eval())
    aud = codec.load(tmp / "aud", device="cpu")
    _prior(aud, tmp / "aud" / "prior")
    return {"image": img, "audio": aud, "dir": tmp}


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
def _image(seed=0, c=3, h=37, w=53):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(c, h, w, generator=g)


@pytest.mark.parametrize("prior", [None, "auto"])
@pytest.mark.parametrize("c", [1, 3])
def test_image_round_trip_both_modes(models, prior, c):
    m = models["image"]
    x = _image(c=c)
    opts = dict(prior=prior, chunk_tokens=7, group=3, packed_if_smaller=False)
    data = codec.compress(x, m, **opts)
    assert data == codec.compress(x, m, **opts)  # identical bytes
    out = codec.decompress(data)  # models found from the names the file records
    ref = m.encode(x[None])[0]
    torch.testing.assert_close(out.tokens, ref, rtol=0, atol=0)
    torch.testing.assert_close(out.data, m.decode(ref[None], shape=x.shape)[0])
    assert out.data.shape == x.shape and out.metadata.mode == ("packed" if prior is None else "prior")
    if prior is None:  # header + 5 x 7 tokens at 5 bits in 5 chunks of 7 (5 bytes each, plus a 12-byte head)
        assert out.tokens.shape == (5, 7)
        sizes = [5 + 12] * 5
        assert len(data) == len(container.header_bytes(out.metadata)) + sum(sizes)


@pytest.mark.parametrize("prior", [None, "auto"])
def test_audio_round_trip_resampled_stereo(models, prior):
    a = models["audio"]
    y = torch.rand(2, 7000, generator=torch.Generator().manual_seed(4)) - 0.5
    data = codec.compress(y, a, prior=prior, sample_rate=22050, num_quantizers=3, chunk_tokens=10, group=4)
    out = codec.decompress(data)
    from codec.media import resample

    x = resample(y, 22050, 16000).mean(dim=0, keepdim=True)
    ref = a.encode(x[None], num_quantizers=3)[0]
    torch.testing.assert_close(out.tokens, ref, rtol=0, atol=0)
    assert out.sample_rate == 22050 and out.data.shape == (2, 7000)
    mono = resample(a.decode(ref[None], shape=x.shape)[0], 16000, 22050)[0, :7000].clamp(-1, 1)
    mono = torch.nn.functional.pad(mono, (0, 7000 - len(mono)))  # resampling may fall a sample short: zero-padded
    torch.testing.assert_close(out.data[1], mono, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.data[0], out.data[1], rtol=0, atol=0)  # mono codec: both channels alike


def test_prior_mode_is_smaller_on_predictable_tokens(tmp_path):
    """A prior that has learnt a constant image codes it in far fewer bits than packing."""
    m = _image_codec(tmp_path)
    p = _prior(m, tmp_path / "p")
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
    packed = codec.compress(x, m, prior=None)
    coded = codec.compress(x, m, prior=p)

    def payload(data):
        return len(data) - len(container.header_bytes(codec.read_info(data))) - 12

    assert payload(packed) == 40  # 64 tokens x 5 bits
    assert payload(coded) <= 8  # a confident prior: a fraction of a bit a token, plus the coder's final words
    torch.testing.assert_close(codec.decompress(coded, m, p).tokens, target[0], rtol=0, atol=0)


def test_decoding_with_one_and_two_threads_gives_identical_tokens(models):
    m = models["image"]
    x = _image(seed=5, h=64, w=80)
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
    torch.testing.assert_close(one, m.encode(x[None])[0], rtol=0, atol=0)


def test_auto_prior_falls_back_to_packed_when_that_is_smaller(models):
    """An untrained prior codes worse than fixed-width indices: with prior="auto" the file is the packed one."""
    m, x = models["image"], _image(seed=4)
    forced = codec.compress(x, m, prior="auto", packed_if_smaller=False)
    packed = codec.compress(x, m, prior=None)
    assert codec.read_info(forced).mode == "prior" and len(forced) > len(packed)  # the premise of this test
    auto = codec.compress(x, m)  # prior="auto" is the default
    assert auto == packed and codec.read_info(auto).mode == "packed"
    torch.testing.assert_close(codec.decompress(auto).tokens, codec.decompress(forced).tokens, rtol=0, atol=0)
    explicit = codec.compress(x, m, prior=models["dir"] / "img" / "prior")  # a prior given explicitly is used
    assert explicit == forced


def test_file_from_another_model_is_refused(models, tmp_path):
    data = codec.compress(_image(), models["image"], prior=None)
    other = _image_codec(tmp_path, name="other", seed=9)
    with pytest.raises(ModelMismatchError, match="encoded with codec"):
        codec.decompress(data, model=other)
    with pytest.raises(ModelMismatchError):
        data = codec.compress(_image(), models["image"], packed_if_smaller=False)
        codec.decompress(data, prior=_prior(other, tmp_path / "p2"))
    with pytest.raises(ModelMismatchError, match="input is image"):
        codec.compress(_image(), models["audio"])


def test_file_whose_model_is_gone_is_refused(tmp_path):
    m = _image_codec(tmp_path, name="gone")
    data = codec.compress(_image(), m, prior=None)
    import shutil

    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(ModelMismatchError, match="cannot be loaded"):
        codec.decompress(data)


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
    data = _with_meta(codec.compress(_image(), models["image"], prior=None), **changes)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError):
            codec.decompress(data, models["image"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_huge_lengths_in_the_binary_header_are_rejected(models):
    data = codec.compress(_image(), models["image"], prior=None)
    fixed = struct.pack("<4sHI", container.MAGIC, container.FORMAT_VERSION, 0xFFFFFFFF)
    with pytest.raises(CorruptFileError, match="metadata length"):
        codec.decompress(fixed + struct.pack("<I", zlib.crc32(fixed)) + data[14:])
    meta = codec.read_info(data)
    head = len(container.header_bytes(meta))
    forged = struct.pack("<III", 0xFFFFFFF0, 0, 0)
    with pytest.raises(CorruptFileError, match="claims"):
        codec.decompress(data[:head] + forged + data[head + 12 :], models["image"])
    with pytest.raises(CorruptFileError, match="version"):
        codec.decompress(data[:4] + b"\x07\x00" + data[6:], models["image"])


def test_tampered_tokens_with_recomputed_chunk_crc_fail_the_token_check(models):
    """Only the token checksum can catch this: the chunk's own CRC was forged to match."""
    m = models["image"]
    data = bytearray(codec.compress(_image(), m, chunk_tokens=64))
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
        "image-packed": codec.compress(_image(h=30, w=22), img, prior=None, chunk_tokens=5),
        "image-prior": codec.compress(_image(h=30, w=22), img, chunk_tokens=5, group=2),
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
    assert auto_chunk_tokens(4096) == 256  # a 512 x 512 image: 16 chunks
    assert auto_chunk_tokens(32 * 500) == 500  # exactly one full group
    assert auto_chunk_tokens(10**6) == 1024  # long files: the largest chunks, many groups


# ------------------------------------------------------------------------------------- format versions
def test_version_2_compresses_the_metadata_and_version_1_still_reads(models):
    m, x = models["image"], _image()
    data = codec.compress(x, m, prior=None)
    meta = codec.read_info(data)
    v2, v1 = container.header_bytes(meta), container.header_bytes(meta, version=1)
    assert data.startswith(v2) and struct.unpack_from("<H", data, 4)[0] == 2
    plain = container.metadata_bytes(meta)
    assert v1[14:] == plain and zlib.decompress(v2[14:], -15) == plain  # an independent inflater agrees
    assert len(v2) < len(v1)
    old = v1 + data[len(v2) :]  # the same file as version 1 wrote it
    out_old, out_new = codec.decompress(old), codec.decompress(data)
    assert codec.read_info(old) == meta
    torch.testing.assert_close(out_old.data, out_new.data, rtol=0, atol=0)


def _v2_header(body: bytes) -> bytes:
    fixed = struct.pack("<4sHI", container.MAGIC, 2, len(body))
    return fixed + struct.pack("<I", zlib.crc32(fixed + body)) + body


def test_bad_compressed_metadata_is_refused_without_inflating_it(models):
    data = codec.compress(_image(), models["image"], prior=None)
    rest = data[len(container.header_bytes(codec.read_info(data))) :]
    bomb = container.deflate(b"{" + b" " * (64 << 20))  # 64 MiB of JSON-ish text in about 64 KB
    assert len(bomb) <= container.MAX_META_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError, match="inflates to more than"):
            codec.read_info(_v2_header(bomb) + rest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    good = container.deflate(container.metadata_bytes(codec.read_info(data)))
    with pytest.raises(CorruptFileError, match="truncated"):
        codec.read_info(_v2_header(good[:-3]) + rest)
    with pytest.raises(CorruptFileError, match="stray"):
        codec.read_info(_v2_header(good + b"xx") + rest)
    with pytest.raises(CorruptFileError, match="deflate"):
        codec.read_info(_v2_header(b"\xff" * 40) + rest)
