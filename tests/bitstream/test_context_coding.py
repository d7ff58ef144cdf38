"""The ``context-1`` coder (``codec.bitstream.context_coding``): files coded with a codec's context model round trip
to the codec's tokens in both modalities, stereo and alpha included, with any chunking (chunks that start and end
inside rows and inside a position's levels); "auto" prefers the context model; files name it by the hash of its
integer network and refuse other models; the bytes do not depend on the number of workers nor on the CPU kernels
torch picks or its thread count (subprocesses); and damaged payloads whose CRCs were recomputed decode exactly or
raise CorruptFileError in bounded time, never a foreign exception."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vqc_helpers import crafted, version, written_before_v7

import codec
from codec import AudioCodecConfig, Codec, CorruptFileError, ImageCodecConfig, ModelMismatchError, QuantizerConfig
from codec.bitstream import container
from codec.bitstream import context_coding as context_coder
from codec.bitstream.compress import context_chunk_tokens
from prior.checkpoint import save_prior
from prior.config import PriorConfig
from prior.context import ContextConfig, ContextPrior
from prior.context_checkpoint import load_context, save_context
from prior.model import TokenPrior

ROOT = Path(__file__).resolve().parents[2]


def _context(m, seed: int) -> ContextPrior:
    torch.manual_seed(seed)
    kernel = 5 if m.modality == "audio" else 3
    ctx = ContextPrior(ContextConfig.for_codec(m, embed=4, hidden=8, depth=1, kernel=kernel))
    with torch.no_grad():  # sharper than at initialisation: files differ from packed ones in size
        ctx.head.mul_(6)
    return ctx.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny image (3 levels) and audio (4 levels) codecs with a Transformer prior and a context model beside."""
    tmp = tmp_path_factory.mktemp("ctxmodels")
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, num_quantizers=3, quantizer_dropout=1.0)
    img = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    img(torch.rand(2, 3, 32, 32))
    q = QuantizerConfig(codebook_size=32, num_quantizers=4, quantizer_dropout=1.0)
    aud = Codec(AudioCodecConfig(base_channels=8, latent_dim=8, sample_rate=16000, quantizer=q))
    aud(torch.rand(2, 1, 320 * 8) * 2 - 1)
    out = {"dir": tmp}
    for name, m in (("image", img), ("audio", aud)):
        codec.save_model(tmp / name, m.eval())
        m = codec.load(tmp / name, device="cpu")
        torch.manual_seed(1)
        save_prior(tmp / name / "prior", TokenPrior(PriorConfig.for_codec(m, dim=16, depth=1, heads=2, context=8)))
        save_context(tmp / name / "context", _context(m, 2))
        save_context(tmp / f"{name}_other_context", _context(m, 3))
        out[name] = m
    return out


def _input(modality: str, channels: int = 1):
    g = torch.Generator().manual_seed(6)
    if modality == "image":
        return torch.rand(3 + (channels == 2), 45, 61, generator=g)
    return torch.rand(channels, 5000, generator=g) - 0.5


@pytest.mark.parametrize(
    "modality,channels,levels,chunk_tokens",
    [
        ("image", 1, 3, None),
        ("image", 1, 3, 7),  # chunks start and end inside rows and inside a position's levels
        ("image", 1, 2, 50),
        ("image", 2, 1, None),  # with alpha
        ("audio", 1, 4, None),
        ("audio", 1, 3, 10),
        ("audio", 2, 2, None),  # stereo: mid and side
    ],
)
def test_context_files_round_trip_to_the_codec_tokens(models, modality, channels, levels, chunk_tokens):
    m = models[modality]
    x = _input(modality, channels)
    opts = dict(sample_rate=16000) if modality == "audio" else {}
    data = codec.compress(x, m, num_quantizers=levels, chunk_tokens=chunk_tokens, packed_if_smaller=False, **opts)
    meta = codec.read_info(data)
    assert version(data) == 7
    old = written_before_v7(data, m)  # as written before version 7: images with a margin 6, else 5
    assert version(old) == (6 if modality == "image" else 5)
    assert torch.equal(codec.decompress(old).tokens, codec.decompress(data).tokens)
    assert (meta.mode, meta.coder, meta.group) == ("prior", "context-1", 1)
    ctx = load_context(models["dir"] / modality / "context")
    assert meta.prior == {
        "name": str((models["dir"] / modality / "context").resolve()),
        "hash": context_coder.context_hash(ctx)[: container.HASH_CHARS],
    }
    if chunk_tokens is not None:
        assert meta.chunk_tokens == chunk_tokens
    out = codec.decompress(data)
    packed = codec.decompress(codec.compress(x, m, prior=None, num_quantizers=levels, **opts))
    torch.testing.assert_close(out.tokens, packed.tokens, rtol=0, atol=0)
    torch.testing.assert_close(out.data, packed.data, rtol=0, atol=0)


def test_auto_prefers_the_context_model_and_a_prior_can_be_chosen(models):
    m, d = models["image"], models["dir"]
    x = _input("image")
    assert codec.read_info(codec.compress(x, m, packed_if_smaller=False)).coder == "context-1"
    by_prior = codec.compress(x, m, prior=d / "image" / "prior")
    assert codec.read_info(by_prior).coder == "integer-1"
    by_name = codec.compress(x, m, prior=d / "image_other_context")
    assert codec.read_info(by_name).coder == "context-1"
    for data in (by_prior, by_name):  # each decodes with the model it names
        torch.testing.assert_close(codec.decompress(data).tokens, m.encode(x[None], margin=2)[0], rtol=0, atol=0)


def test_other_models_are_refused(models):
    m, d = models["image"], models["dir"]
    data = codec.compress(_input("image"), m, packed_if_smaller=False)
    with pytest.raises(ModelMismatchError, match="not with the given prior"):
        codec.decompress(data, prior=d / "image_other_context")
    with pytest.raises(ModelMismatchError, match="not with the given prior"):
        codec.decompress(data, prior=d / "image" / "prior")  # a Transformer for a context-coded file
    with pytest.raises(ModelMismatchError):
        codec.compress(_input("image"), m, prior=d / "audio" / "context")  # another codec's


def test_bytes_do_not_depend_on_workers_and_chunks_are_whole_rows(models):
    m = models["image"]
    x = torch.rand(3, 436, 436, generator=torch.Generator().manual_seed(1))  # in a margin: 55 x 55 x 3 tokens
    one = codec.compress(x, m, workers=1, packed_if_smaller=False)
    assert codec.compress(x, m, workers=2, packed_if_smaller=False) == one
    meta = codec.read_info(one)
    assert (meta.num_chunks, meta.chunk_tokens) == (2, 28 * 55 * 3)  # whole rows
    torch.testing.assert_close(codec.decompress(one, workers=2).tokens, codec.decompress(one, workers=1).tokens)
    # images: whole rows, as few chunks as the format allows (at least 2 from 8192 tokens on)
    assert context_chunk_tokens((6, 40, 30)) == 7200  # under 8,192 tokens: one chunk
    assert context_chunk_tokens((6, 50, 30)) == 6 * 30 * 25  # two
    assert context_chunk_tokens((6, 500, 400)) == 6 * 400 * 27  # 19 chunks of whole rows, at most 65,536 tokens
    assert context_chunk_tokens((8, 1, 100_000)) == 61_544  # 13 runs of whole frames
    assert context_chunk_tokens((6, 2, 20_000)) == 60_000  # rows longer than a chunk: runs of whole positions


WORKER = """
import hashlib, sys, json, torch, codec
job = json.load(open(sys.argv[1]))
out = {"capability": torch.backends.cpu.get_cpu_capability()}
for threads in job.pop("threads"):
    torch.set_num_threads(threads)
    for name, item in job.items():
        x = torch.load(item["input"])
        data = codec.compress(x, item["codec"], sample_rate=item["rate"], packed_if_smaller=False, workers=1)
        tokens = codec.decompress(item["file"]).tokens
        digest = hashlib.sha256(tokens.numpy().tobytes()).hexdigest()
        out[f"{name} threads={threads}"] = [hashlib.sha256(data).hexdigest(), digest]
print(json.dumps(out))
"""


def test_identical_under_other_cpu_kernels_and_thread_counts(models, tmp_path):
    job, want = {}, {}
    for modality in ("image", "audio"):
        x = _input(modality)
        rate = 16000 if modality == "audio" else None
        data = codec.compress(x, models[modality], sample_rate=rate, packed_if_smaller=False)
        (tmp_path / f"{modality}.vqc").write_bytes(data)
        torch.save(x, tmp_path / f"{modality}.pt")
        job[modality] = dict(input=str(tmp_path / f"{modality}.pt"), codec=str(models["dir"] / modality),
                             rate=rate, file=str(tmp_path / f"{modality}.vqc"))  # fmt: skip
        tokens = codec.decompress(data).tokens
        want[modality] = [hashlib.sha256(data).hexdigest(), hashlib.sha256(tokens.numpy().tobytes()).hexdigest()]
    (tmp_path / "worker.py").write_text(WORKER)
    seen = []
    for capability in ("default", "avx2", "avx512"):
        threads = [1, 2] if capability == "default" else [1]
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


PRECISION_WORKER = """
import hashlib, sys, json, torch, codec
job = json.load(open(sys.argv[1]))
setting = job.pop("setting")
if setting == "medium":
    torch.set_float32_matmul_precision("medium")  # lets oneDNN run float32 GEMMs in bf16 where the CPU has it
elif hasattr(torch.backends.mkldnn, "matmul"):
    torch.backends.mkldnn.matmul.fp32_precision = setting
digest = lambda t: hashlib.sha256(t.numpy().tobytes()).hexdigest()
out = {}
for name, item in job.items():
    x = torch.load(item["input"])
    data = codec.compress(x, item["codec"], prior=item["prior"], sample_rate=item["rate"], packed_if_smaller=False)
    open(item["out"], "wb").write(data)
    out[name] = [digest(codec.decompress(data).tokens), digest(codec.decompress(item["file"]).tokens)]
print(json.dumps(out))
"""


@pytest.mark.parametrize("setting", ["medium", "bf16"])  # "tf32" is the same request where a GPU has TF32
def test_identical_whatever_float32_matmul_precision_the_process_sets(tmp_path, setting):
    """A process may let torch run float32 GEMMs in bf16 or TF32. The codec's tokens may then change (its networks
    are float), but every file must still decode to its tokens in a process with the default settings, and the
    default process's files there. Both coders, with the bundled models: their layers have the magnitudes at
    which a float32 GEMM run in bf16 is inexact. Files made under "medium" failed to decode elsewhere while the
    integer networks ran some GEMMs in float32."""

    def digest(t):
        return hashlib.sha256(t.numpy().tobytes()).hexdigest()

    g = torch.Generator().manual_seed(7)
    inputs = {"image": torch.rand(3, 48, 40, generator=g), "audio": torch.rand(1, 6000, generator=g) - 0.5}
    job, want = {}, {}
    for modality, x in inputs.items():
        rate = 24000 if modality == "audio" else None
        torch.save(x, tmp_path / f"{modality}.pt")
        for coder in ("context", "prior"):  # context-1 and the Transformer's integer-1
            name, prior = f"{modality}-{coder}", f"{modality}/{coder}"
            data = codec.compress(x, modality, prior=prior, sample_rate=rate, packed_if_smaller=False)
            (tmp_path / f"{name}.vqc").write_bytes(data)
            files = dict(file=str(tmp_path / f"{name}.vqc"), out=str(tmp_path / f"{name}.set.vqc"))
            job[name] = dict(input=str(tmp_path / f"{modality}.pt"), codec=modality, prior=prior, rate=rate, **files)
            want[name] = digest(codec.decompress(data).tokens)
    (tmp_path / "worker.py").write_text(PRECISION_WORKER)
    (tmp_path / "job.json").write_text(json.dumps({**job, "setting": setting}))
    done = subprocess.run([sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "job.json")],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600,
                          cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (own, ours) in got.items():
        assert ours == want[name], f"{name}: this process's file decodes differently under {setting}"
        assert digest(codec.decompress(tmp_path / f"{name}.set.vqc").tokens) == own, f"{name}: made under {setting}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_logits(models):
    from prior.context_integer import IntegerContext, IntegerContextNet

    ctx = load_context(models["dir"] / "image" / "context")
    ic = IntegerContext.from_float(ctx)
    cpu, gpu = IntegerContextNet(ic, "cpu"), IntegerContextNet(ic, "cuda")
    tokens = torch.randint(32, (3, 9, 13), generator=torch.Generator().manual_seed(0))
    inside = torch.ones(tokens.shape, dtype=torch.bool)
    rows, cols = torch.arange(9)[:, None], torch.arange(13)[None]
    for level, group in ctx.config.passes():
        a = cpu.pass_logits(tokens, inside, rows, cols, level, group)
        b = gpu.pass_logits(*(t.cuda() for t in (tokens, inside, rows, cols)), level, group).cpu()
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def coded_files(models):
    files = {}
    for modality in ("image", "audio"):
        opts = dict(sample_rate=16000) if modality == "audio" else {}
        data = codec.compress(_input(modality), models[modality], chunk_tokens=60, packed_if_smaller=False, **opts)
        files[modality] = (data, codec.decompress(data).tokens)
    return files


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_crafted_payloads_decode_exactly_or_raise_corrupt(coded_files, data):
    name, blob = data.draw(crafted(coded_files))
    t0 = time.perf_counter()
    try:
        out = codec.decompress(blob)
    except CorruptFileError as e:
        assert "\n" not in str(e)
        out = None
    assert time.perf_counter() - t0 < 10
    if out is not None:
        torch.testing.assert_close(out.tokens, coded_files[name][1], rtol=0, atol=0)


def test_chunk_coder_round_trips_any_split():
    """The coder alone, on a grid with random tokens and chunks of every awkward kind."""
    torch.manual_seed(0)
    cfg = ContextConfig(levels=3, residual=True, codebook_size=37, embed=4, hidden=8, depth=1)
    net = context_coder.context_net(ContextPrior(cfg).eval())
    layout, n = (3, 7, 9), 3 * 7 * 9
    flat = np.random.default_rng(0).integers(0, 37, n)
    for bounds in ([0, n], [0, 50, 100, n], [0, 1, 17, 160, n], list(range(0, n, 4)) + [n]):
        starts = bounds[:-1]
        chunks = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        payloads = context_coder.encode_chunks(net, layout, starts, chunks)
        back = context_coder.decode_chunks(net, layout, starts, [len(c) for c in chunks], payloads)
        assert all(np.array_equal(a, b) for a, b in zip(chunks, back))
    # audio: one row; a chunk's window is its own frames, not the whole row
    layout, n = (3, 1, 40), 120
    flat = np.random.default_rng(1).integers(0, 37, n)
    for bounds in ([0, n], [0, 7, 50, 99, n]):
        starts = bounds[:-1]
        chunks = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        payloads = context_coder.encode_chunks(net, layout, starts, chunks)
        back = context_coder.decode_chunks(net, layout, starts, [len(c) for c in chunks], payloads)
        assert all(np.array_equal(a, b) for a, b in zip(chunks, back))
    window = context_coder._Window((8, 1, 1_000_000), 8 * 500_000 + 3, 800)
    assert window.tokens.shape == (8, 1, 101) and window.cols[0, 0] == 500_000
    with pytest.raises(ValueError, match="whole 32-bit words"):
        context_coder.decode_chunks(net, layout, [0], [n], [b"abc"])
