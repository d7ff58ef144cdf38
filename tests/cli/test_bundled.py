"""Bundled models: the packaging tool (fp16 weights, the prior re-paired with the rounded codec) on tiny models,
and the models shipped in codec/models (load by name, sizes, the examples through the CLI in both directions)."""

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import codec
from codec import Codec, ImageCodecConfig, QuantizerConfig
from codec.cli import main as cli_main
from codec.core.spectral import mel_distance
from codec.errors import ModelMismatchError
from codec.media.audio_io import read_audio
from codec.media.image_io import read_image
from prior.checkpoint import load_prior, save_prior
from prior.config import PriorConfig
from prior.context import ContextConfig, ContextPrior
from prior.context_checkpoint import load_context, save_context
from prior.context_integer import IntegerContext
from prior.model import TokenPrior

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import bundle_models  # noqa: E402
from synth_media import make_image  # noqa: E402


def test_bundle_rounds_to_fp16_and_repairs_the_prior(tmp_path):
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, num_quantizers=2)
    m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    m(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp_path / "run", m.eval())
    m = codec.load(tmp_path / "run", device="cpu")
    p = TokenPrior(PriorConfig.for_codec(m, dim=32, depth=1, heads=2, context=8)).eval()
    save_prior(tmp_path / "run" / "prior", p)
    dest = tmp_path / "models"
    args = ["--codec", str(tmp_path / "run"), "--prior", str(tmp_path / "run" / "prior"), "--name", "tiny"]
    assert bundle_models.main([*args, "--dest", str(dest)]) == 0
    for rel in ("model.safetensors", "prior/model.safetensors"):
        state = load_file(dest / "tiny" / rel)
        assert all(t.dtype == torch.float16 for t in state.values() if t.is_floating_point())
    bundled = codec.load_model(dest / "tiny", device="cpu")
    stored = load_file(dest / "tiny" / "model.safetensors")
    sums = [k for k in m.state_dict() if k.endswith(".embed_sum")]
    assert sums and not any(k in stored for k in sums)  # the codebooks' EMA sums are left out
    for name, t in m.state_dict().items():  # weights are the fp16 rounding of the originals
        if name in sums:  # rebuilt on loading: codes times their EMA counts
            prefix = name.removesuffix("embed_sum")
            rebuilt = stored[prefix + "embed"].float() * stored[prefix + "cluster_size"].float()[:, None]
            assert torch.equal(bundled.state_dict()[name], rebuilt), name
        else:
            assert torch.equal(bundled.state_dict()[name], t.half().to(t.dtype)), name
    assert codec.model_hash(bundled) != codec.model_hash(m)
    assert codec.model_hash(codec.load_model(dest / "tiny", device="cpu")) == codec.model_hash(bundled)
    with pytest.raises(ModelMismatchError):  # the original prior belongs to the unrounded codec
        load_prior(tmp_path / "run" / "prior", codec=bundled, device="cpu")
    prior = load_prior(dest / "tiny" / "prior", codec=bundled, device="cpu")
    assert json.loads((dest / "tiny" / "prior" / "config.json").read_text())["codec_hash"] == codec.model_hash(bundled)
    assert prior.config.codec_hash == codec.model_hash(bundled)
    before = {p: p.read_bytes() for p in (dest / "tiny").rglob("*") if p.is_file()}
    assert bundle_models.main([*args, "--dest", str(dest), "--max-mb", "0.001"]) == 1  # over the size limit
    assert {p: p.read_bytes() for p in (dest / "tiny").rglob("*") if p.is_file()} == before  # old bundle kept
    assert sorted(p.name for p in dest.iterdir()) == ["tiny"]  # no temporary folder left


@pytest.mark.parametrize("where", ["by name", "a copy elsewhere"])
def test_rebundling_a_shipped_codec_keeps_its_tensors_and_hash(tmp_path, where):
    # the way a new context model joins a shipped codec: the codec's file (EMA sums included) and hash stay, told
    # by its float16 weights wherever it lies
    shipped = ROOT / "codec" / "models" / "audio"
    source = "audio"
    if where == "a copy elsewhere":
        source = str(tmp_path / "copy")
        shutil.copytree(shipped, source, ignore=shutil.ignore_patterns("prior", "context"))
    args = ["--codec", source, "--prior", "audio/prior", "--name", "audio", "--dest", str(tmp_path / "models")]
    assert bundle_models.main(args) == 0
    out = tmp_path / "models" / "audio"
    assert (out / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    again = codec.load_model(out, device="cpu")
    assert codec.model_hash(again) == codec.model_hash(codec.load("audio", device="cpu"))
    load_prior(out / "prior", codec=again, device="cpu")


def test_bundle_refuses_a_prior_of_another_codec(tmp_path, capsys):
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, num_quantizers=2)
    runs = []
    for i in range(2):
        m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
        m(torch.rand(2, 3, 32, 32))
        codec.save_model(tmp_path / f"run{i}", m.eval())
        runs.append(codec.load(tmp_path / f"run{i}", device="cpu"))
    p = TokenPrior(PriorConfig.for_codec(runs[1], dim=32, depth=1, heads=2, context=8)).eval()
    save_prior(tmp_path / "run1" / "prior", p)
    args = ["--codec", str(tmp_path / "run0"), "--prior", str(tmp_path / "run1" / "prior"), "--name", "x"]
    assert bundle_models.main([*args, "--dest", str(tmp_path / "models")]) == 2
    assert "trained on" in capsys.readouterr().err
    assert not (tmp_path / "models" / "x").exists()


def test_bundle_pairs_the_start_models_prior_with_a_frozen_encoder_fine_tune(tmp_path, capsys):
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, num_quantizers=2)
    start = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    start(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp_path / "start", start.eval())
    save_prior(tmp_path / "start" / "prior", TokenPrior(PriorConfig.for_codec(start, dim=32, depth=1, heads=2)))
    tuned = codec.load(tmp_path / "start", device="cpu")
    with torch.no_grad():
        next(tuned.decoder.parameters()).add_(0.1)  # what a frozen-encoder fine-tune changes: the decoder only
    codec.save_model(tmp_path / "tuned", tuned)
    moved = codec.load(tmp_path / "start", device="cpu")
    with torch.no_grad():
        next(moved.encoder.parameters()).add_(1e-3)  # any change outside the decoder changes the tokens
    codec.save_model(tmp_path / "moved", moved)
    common = ["--prior", str(tmp_path / "start" / "prior"), "--dest", str(tmp_path / "models")]
    assert bundle_models.main(["--codec", str(tmp_path / "tuned"), *common, "--name", "a"]) == 2  # not its prior
    assert "trained on" in capsys.readouterr().err
    ok = ["--codec", str(tmp_path / "tuned"), *common, "--tokens-of", str(tmp_path / "start"), "--name", "a"]
    assert bundle_models.main(ok) == 0
    bundled = codec.load(tmp_path / "models" / "a", device="cpu")
    load_prior(tmp_path / "models" / "a" / "prior", codec=bundled, device="cpu")  # paired with the new codec
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(bundled.encode(x), codec.load(tmp_path / "start", device="cpu").half().float().encode(x))
    bad = ["--codec", str(tmp_path / "moved"), *common, "--tokens-of", str(tmp_path / "start"), "--name", "b"]
    assert bundle_models.main(bad) == 2
    assert "encoders or codebooks differ" in capsys.readouterr().err
    assert not (tmp_path / "models" / "b").exists()


def test_bundle_repairs_the_context_model_and_files_use_it(tmp_path, capsys):
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, num_quantizers=2)
    m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    m(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp_path / "run", m.eval())
    m = codec.load(tmp_path / "run", device="cpu")
    save_prior(tmp_path / "run" / "prior", TokenPrior(PriorConfig.for_codec(m, dim=32, depth=1, heads=2)))
    save_context(tmp_path / "ctx", ContextPrior(ContextConfig.for_codec(m, embed=4, hidden=8, depth=1)))
    other = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    save_context(tmp_path / "other", ContextPrior(ContextConfig.for_codec(other, embed=4, hidden=8, depth=1)))
    base = ["--codec", str(tmp_path / "run"), "--prior", str(tmp_path / "run" / "prior"), "--dest", str(tmp_path / "m")]
    assert bundle_models.main([*base, "--context", str(tmp_path / "other"), "--name", "b"]) == 2  # another codec's
    assert "trained on" in capsys.readouterr().err
    assert bundle_models.main([*base, "--context", str(tmp_path / "ctx"), "--name", "a"]) == 0
    bundled = codec.load(tmp_path / "m" / "a", device="cpu")
    ctx = load_context(tmp_path / "m" / "a", codec=bundled)  # re-paired with the rounded codec
    stored = load_file(tmp_path / "m" / "a" / "context" / "model.safetensors")  # compact: 8-bit weight rows
    assert stored["head"].dtype == torch.int8 and "head.exp2" in stored
    half = load_context(tmp_path / "ctx")
    with torch.no_grad():
        for t in half.parameters():
            t.copy_(t.half().float())
    got, want = IntegerContext.from_float(ctx).tensors(), IntegerContext.from_float(half).tensors()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)  # float16's network
    x = torch.rand(3, 40, 48)
    data = codec.compress(x, tmp_path / "m" / "a", packed_if_smaller=False)  # "auto": the context model
    meta = codec.read_info(data)
    assert meta.coder == "context-1" and meta.prior["name"] == str((tmp_path / "m" / "a" / "context").resolve())
    torch.testing.assert_close(codec.decompress(data).tokens, bundled.encode(x[None], margin=2)[0], rtol=0, atol=0)
    assert ctx.config.codec_hash == codec.model_hash(bundled)


# ----------------------------------------------------------------------------------- shipped models
SHIPPED = codec.bundled_models()
needs_shipped = pytest.mark.skipif(SHIPPED != ["audio", "image"], reason="bundled models not in this checkout")


@needs_shipped
def test_shipped_models_fit_the_size_limit_and_pair_with_their_priors_and_context_models():
    total = sum(p.stat().st_size for p in (ROOT / "codec" / "models").rglob("*.safetensors"))
    assert total <= 40e6
    image, audio = codec.load("image", device="cpu"), codec.load("audio", device="cpu")
    assert image.modality == "image" and image.residual and image.num_quantizers >= 3
    assert audio.modality == "audio" and audio.sample_rate == 24000 and audio.num_quantizers == 8
    for m in (image, audio):
        prior = load_prior(codec.model_dir(m.name) / "prior", codec=m, device="cpu")
        assert prior.config.levels == m.num_quantizers
        ctx = load_context(m.name, codec=m)  # the context model beside it, by the codec's name
        assert ctx.config.levels == m.num_quantizers and ctx.name == f"{m.name}/context"
        assert codec.model_dir(f"{m.name}/context") == codec.BUNDLED_DIR / m.name / "context"


@needs_shipped
def test_examples_round_trip_through_the_cli_with_the_bundled_models(tmp_path, capsys):
    assert cli_main(["encode", str(ROOT / "examples"), "-o", str(tmp_path / "vqc")]) == 0
    assert sorted(p.name for p in (tmp_path / "vqc").iterdir()) == ["icecold.png.vqc", "speech.flac.vqc"]
    meta = codec.read_info(tmp_path / "vqc" / "icecold.png.vqc")
    assert meta.codec["name"] == "image" and meta.mode == "prior" and meta.prior is not None
    # bundled models are recorded by name, not by where the package happens to be installed
    assert meta.prior["name"] == "image/context" and meta.coder == "context-1"  # the fast coder, by default
    assert codec.read_info(tmp_path / "vqc" / "speech.flac.vqc").codec["name"] == "audio"
    assert cli_main(["decode", str(tmp_path / "vqc"), "-o", str(tmp_path / "out")]) == 0
    x = read_image(ROOT / "examples" / "icecold.png").pixels
    y = read_image(tmp_path / "out" / "icecold.png").pixels
    assert y.shape == x.shape
    mse = float(((x - y) ** 2).mean())
    assert mse < 0.01  # > 20 dB: a real reconstruction, not noise or a blank image
    ref = read_audio(ROOT / "examples" / "speech.flac").samples
    out = sorted((tmp_path / "out").glob("speech.*"))
    assert len(out) == 1
    got = read_audio(out[0]).samples
    assert got.shape == ref.shape
    # a real reconstruction: far closer in log-mel than white noise of the same level (3.2 on this clip) or
    # near-silence (4.3); the bundled model measures 0.88
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(0)) * ref.std()
    baseline = float(mel_distance(noise[None], ref[None], 24000)[0])
    assert float(mel_distance(got[None], ref[None], 24000)[0]) < min(1.2, 0.5 * baseline)


@needs_shipped
def test_bundled_prior_is_found_by_its_recorded_name(tmp_path):
    """A codec given as a copy without its prior: the file's prior is loaded by the name it records."""
    x = read_image(ROOT / "examples" / "icecold.png").pixels[:, :64, :96]
    blob = codec.compress(x, "image", "image/prior", num_quantizers=1)  # a bundled prior named explicitly
    assert codec.read_info(blob).prior["name"] == "image/prior"
    assert codec.model_dir("image/prior") == codec.BUNDLED_DIR / "image" / "prior"
    shutil.copy(codec.BUNDLED_DIR / "image" / "config.json", tmp_path / "config.json")
    shutil.copy(codec.BUNDLED_DIR / "image" / "model.safetensors", tmp_path / "model.safetensors")
    ref = codec.decompress(blob).data
    got = codec.decompress(blob, model=tmp_path).data
    assert torch.equal(got, ref)


@needs_shipped
def test_bundled_names_win_over_folders_without_a_model(tmp_path, monkeypatch):
    """A folder ./image of photos (no config.json) does not hide the bundled model of that name."""
    (tmp_path / "image" / "prior").mkdir(parents=True)
    (tmp_path / "image" / "photo.txt").write_text("not a model")
    monkeypatch.chdir(tmp_path)
    assert codec.model_dir("image") == codec.BUNDLED_DIR / "image"
    assert codec.model_dir("image/prior") == codec.BUNDLED_DIR / "image" / "prior"
    assert codec.load("image", device="cpu").name == "image"
    assert codec.portable_name(codec.BUNDLED_DIR / "image" / "prior") == "image/prior"
    assert codec.portable_name(codec.BUNDLED_DIR) == str(codec.BUNDLED_DIR.resolve())  # not a model name
    assert codec.portable_name(tmp_path / "image") == str((tmp_path / "image").resolve())


@needs_shipped
def test_bundled_priors_load_by_name_from_any_directory(tmp_path, monkeypatch):
    """prior.load takes the name `codec info` prints ("image/prior") or the codec's name ("image")."""
    import prior

    monkeypatch.chdir(tmp_path)
    image = codec.load("image", device="cpu")
    by_codec, by_name = prior.load("image", codec=image), prior.load("image/prior", device="cpu")
    assert by_codec.name == by_name.name == "image/prior"
    assert prior.prior_hash(by_codec) == prior.prior_hash(by_name)
    assert by_codec.config.codec_hash == codec.model_hash(image)
    assert prior.load("audio", device="cpu").config.modality == "audio"
    with pytest.raises(ModelMismatchError):
        prior.load("audio", codec=image)


@needs_shipped
def test_sample_with_the_bundled_codec_and_its_prior_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # not the repository: bundled names must not depend on the working directory
    assert cli_main(["sample", "--codec", "image", "-n", "1", "--size", "16x24", "--seed", "0", "-o", "s"]) == 0
    assert read_image(tmp_path / "s" / "sample_000.png").pixels.shape == (3, 16, 24)
    levels = codec.load("image", device="cpu").num_quantizers  # the prior stored with the codec: all its levels
    assert f"token shape ({levels}, 2, 3)" in capsys.readouterr().out


@needs_shipped
def test_refine_brings_the_bundled_image_model_closer_and_files_decode_as_ever(tmp_path, capsys):
    """Encoder-side search (``--refine``) with the bundled model: on two synthetic images (measured +0.27 to +0.42
    dB at 2 levels and 20 steps) at least +0.1 dB through the plain ``decode``; the CLI's file decodes with the
    ordinary decoder, no worse than the plain file; bad step counts are one line and exit 2."""
    m = codec.load("image", device="cpu")
    for seed in (3, 4):
        x = read_image(make_image(tmp_path / f"{seed}.png", size=(96, 72), seed=seed)).pixels[None]
        gains = []
        for steps in (0, 20):
            y = m.decode(m.encode(x, 2, margin=2, refine=steps), shape=x.shape[1:], margin=2)
            gains.append(-10 * math.log10(float(((y * 255).round() / 255 - x).square().mean())))
        assert gains[1] > gains[0] + 0.1, gains
    src = tmp_path / "3.png"
    for name, extra in (("plain", []), ("refined", ["--refine", "10"])):
        assert cli_main(["encode", str(src), "-o", str(tmp_path / f"{name}.vqc"), "--quantizers", "2", *extra]) == 0
        assert cli_main(["decode", str(tmp_path / f"{name}.vqc"), "-o", str(tmp_path / f"{name}.png")]) == 0
    x = read_image(src).pixels
    err = {n: float((read_image(tmp_path / f"{n}.png").pixels - x).square().mean()) for n in ("plain", "refined")}
    assert err["refined"] < err["plain"], err
    capsys.readouterr()
    for bad in ("-1", "1001", "two"):
        with pytest.raises(SystemExit) as e:
            cli_main(["encode", str(src), "-o", str(tmp_path / "bad.vqc"), "--refine", bad])
        assert e.value.code == 2 and "--refine" in capsys.readouterr().err
