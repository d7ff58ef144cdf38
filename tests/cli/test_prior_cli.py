"""The prior's CLI end to end on tiny codecs: tokenize -> train-prior -> sample, resuming tokenize and
train-prior after an interruption, and one-line errors for user mistakes.

Runs the subcommands through ``codec.cli.main``."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

import codec
import codec.train.loop
import prior.data
from codec import AudioCodecConfig, Codec, ImageCodecConfig, QuantizerConfig
from codec.cli import main
from codec.media.audio_io import write_audio
from codec.media.image_io import read_image, write_image

TINY = {
    "prior": {"dim": 32, "depth": 2, "heads": 2, "context": 16},
    "train": {"batch_size": 4, "warmup_steps": 2, "log_every": 2},
}


@pytest.fixture
def image_run(tmp_path):
    """A tiny image codec run directory, 7 images of two sizes and one corrupt file, and a tiny prior config."""
    q = QuantizerConfig(codebook_size=32)
    m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    m(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp_path / "codec", m.eval())
    data = tmp_path / "data"
    data.mkdir()
    for i in range(7):
        write_image(data / f"img{i}.png", torch.rand(3 if i % 3 else 1, 32, 40 if i % 2 else 48))
    (data / "broken.png").write_bytes(b"not a png")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    return tmp_path


def run(*argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:  # user errors: one line, status 2
        return e.code


def test_tokenize_train_sample_images(image_run, capsys):
    d = image_run
    assert run("tokenize", "--codec", d / "codec", "--data", d / "data", "--out", d / "tokens") == 0
    out, err = capsys.readouterr()
    assert "codec: warning:" in err and "broken.png" in err  # the CLI prints warnings on one line each
    assert "tokenized 7 files" in out and "1 unreadable files skipped" in out
    index = json.loads((d / "tokens" / "index.json").read_text())
    assert index["codec_hash"] == codec.model_hash(codec.load(d / "codec"))
    args = ("train-prior", "--tokens", d / "tokens", "--out", d / "prior", "--config", d / "tiny.json")
    assert run(*args, "--steps", "4") == 0
    assert "held-out" in capsys.readouterr().out
    log = [json.loads(line) for line in (d / "prior" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "eval" and "val_bits" in r for r in log)
    assert [r["step"] for r in log if r["kind"] == "train"] == [2, 4]  # log_every 2, as the config says
    cfg = json.loads((d / "prior" / "config.json").read_text())
    assert cfg["sample_shape"] == [4, 6] and cfg["codec_hash"] == index["codec_hash"]  # 4 of 7 are 32 x 48
    samples = d / "samples"
    assert run("sample", "--codec", d / "codec", "--prior", d / "prior", "-n", 3, "-o", samples, "--seed", 1) == 0
    names = sorted(p.name for p in samples.iterdir())
    assert names == ["grid.png", "sample_000.png", "sample_001.png", "sample_002.png"]
    assert read_image(samples / "sample_000.png").pixels.shape == (3, 32, 48)
    first = read_image(samples / "sample_000.png").pixels
    assert run("sample", "--codec", d / "codec", "--prior", d / "prior", "-n", 1, "-o", d / "again", "--seed", 1) == 0
    assert torch.equal(read_image(d / "again" / "sample_000.png").pixels, first)  # same seed, same image
    assert run("sample", "--codec", d / "codec", "--prior", d / "prior", "-n", 2, "-o", samples, "--size", "17x30") == 0
    assert read_image(samples / "sample_000.png").pixels.shape == (3, 24, 32)  # whole tokens: ceil(17/8) x ceil(30/8)


def test_tokenize_train_context_and_encode_with_it(image_run, capsys):
    """`codec train-prior --context` writes a context model; stored in RUN_DIR/context, encode uses it by default
    and decode finds it; --prior RUN_DIR/prior still picks the Transformer."""
    d = image_run
    assert run("tokenize", "--codec", d / "codec", "--data", d / "data", "--out", d / "tokens", "-q") == 0
    cfg = {"prior": {"embed": 4, "hidden": 8, "depth": 1}, "train": {"batch_size": 2, "crop": 4, "eval_every": 3}}
    (d / "ctx.json").write_text(json.dumps(cfg))
    args = ("train-prior", "--context", "--tokens", d / "tokens", "--out", d / "codec" / "context")
    assert run(*args, "--config", d / "ctx.json", "--steps", 3) == 0
    assert "context model in" in capsys.readouterr().out
    assert json.loads((d / "codec" / "context" / "config.json").read_text())["kind"] == "context"
    assert run(*args, "--config", d / "ctx.json", "--steps", 3) == 2  # a fresh run over a checkpoint: one line
    assert "codec: error:" in capsys.readouterr().err
    img = d / "data" / "img1.png"
    assert run("encode", img, "-o", d / "a.vqc", "--model", d / "codec", "-q") == 0
    meta = codec.read_info(d / "a.vqc")
    assert meta.mode == "packed" or meta.coder == "context-1"  # packed when no smaller (a 3-step model)
    assert run("encode", img, "-o", d / "b.vqc", "--model", d / "codec", "--prior", d / "codec" / "context", "-q") == 0
    assert codec.read_info(d / "b.vqc").coder == "context-1"
    assert run("decode", d / "b.vqc", "-o", d / "b.png", "-q") == 0
    assert read_image(d / "b.png").pixels.shape == read_image(img).pixels.shape


def test_sample_shows_one_progress_bar_on_a_terminal_and_none_otherwise(image_run, monkeypatch, capsys):
    from prior.checkpoint import save_prior
    from prior.config import PriorConfig
    from prior.model import TokenPrior

    d = image_run
    model = codec.load(d / "codec")
    config = PriorConfig.for_codec(model, **TINY["prior"], sample_shape=(4, 6))
    save_prior(d / "prior", TokenPrior(config))
    args = ("sample", "--codec", d / "codec", "--prior", d / "prior", "-n", 3, "--batch-size", 2, "--seed", 1, "-o")
    assert run(*args, d / "plain") == 0  # stderr is not a terminal here: no bar debris
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert run(*args, d / "bar") == 0
    err = capsys.readouterr().err
    assert "sample" in err and "48/48" in err  # two batches of 4 x 6 token positions, one bar over both
    assert run(*args, d / "quiet", "-q") == 0
    assert capsys.readouterr() == ("", "")


def test_tokenize_resumes_after_an_interruption(image_run, monkeypatch, capsys):
    d = image_run
    args = ("tokenize", "--codec", d / "codec", "--data", d / "data", "--out")
    real, calls = prior.data._read_item, []  # files in plan order: broken.png, img0.png, ..., img6.png

    def flaky(model, path):
        calls.append(path)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(model, path)

    monkeypatch.setattr(prior.data, "_read_item", flaky)
    assert run(*args, d / "tokens", "--shard-size", 2) == 130  # interrupted
    assert sorted(p.name for p in (d / "tokens").glob("shard_*")) == [
        "shard_00000.safetensors",
        "shard_00001.safetensors",
    ]
    monkeypatch.setattr(prior.data, "_read_item", real)
    assert run(*args, d / "tokens", "--shard-size", 2) == 0  # broken.png was in a finished shard: no warning
    out = capsys.readouterr().out
    assert "2 shards already done" in out and "1 unreadable files skipped" in out
    assert run(*args, d / "clean", "--shard-size", 2) == 0
    assert "broken.png" in capsys.readouterr().err
    for shard in sorted(p.name for p in (d / "clean").glob("shard_*")):
        a, b = load_file(d / "tokens" / shard), load_file(d / "clean" / shard)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(prior.data.load_tokens(d / "tokens").names) == 7
    other = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8))
    codec.save_model(d / "other", other.eval())
    assert run("tokenize", "--codec", d / "other", "--data", d / "data", "--out", d / "tokens") == 2
    assert "another codec" in capsys.readouterr().err


def test_tokenize_with_the_search_gives_the_searched_tokens(image_run, capsys):
    """`codec tokenize --refine STEPS` stores what `Codec.tokenize(items, refine=STEPS)` gives for each file (the
    tokens of `codec encode --refine`), records it, and refuses to resume with another value."""
    d = image_run
    args = ("tokenize", "--codec", d / "codec", "--data", d / "data", "--shard-size", 3, "--out", d / "tokens")
    assert run(*args, "--refine", 4) == 0
    capsys.readouterr()
    assert json.loads((d / "tokens" / "index.json").read_text())["refine"] == 4
    m = codec.load(d / "codec")
    items = prior.data.load_tokens(d / "tokens")
    changed = 0
    for name, tokens in zip(items.names, items.tokens, strict=True):
        x = read_image(d / "data" / name).pixels
        assert torch.equal(tokens.long(), m.tokenize([x], refine=4)[0].reshape(tokens.shape))
        changed += not torch.equal(tokens.long(), m.tokenize([x])[0].reshape(tokens.shape))
    assert changed > 0  # the search moved some files' tokens
    assert run(*args, "--refine", 2) == 2
    assert "refine=4, not 2" in capsys.readouterr().err
    assert run(*args[:-1], d / "bad", "--refine", -1) == 2


def test_train_prior_resume_matches_an_uninterrupted_run(image_run, monkeypatch, capsys):
    d = image_run
    run("tokenize", "--codec", d / "codec", "--data", d / "data", "--out", d / "tokens")
    cfg = {"prior": TINY["prior"], "train": {**TINY["train"], "save_every": 2, "eval_every": 3}}
    (d / "cfg.json").write_text(json.dumps(cfg))
    base = ("train-prior", "--tokens", d / "tokens", "--config", d / "cfg.json", "--steps", 6, "--out")
    assert run(*base, d / "straight") == 0

    real = codec.train.loop.write_train_state

    def crash_at_4(out, meta, tensors):
        real(out, meta, tensors)
        if meta["step"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(codec.train.loop, "write_train_state", crash_at_4)
    assert run(*base, d / "resumed") == 130  # interrupted after the checkpoint of step 4
    monkeypatch.setattr(codec.train.loop, "write_train_state", real)
    assert run(*base, d / "resumed") == 2  # not without --resume
    assert "--resume" in capsys.readouterr().err
    assert run(*base, d / "resumed", "--resume") == 0
    assert run(*base, d / "fresh", "--resume") == 2  # --resume needs a checkpoint, as for codecs
    assert "no checkpoint to resume from" in capsys.readouterr().err
    a, b = load_file(d / "straight" / "model.safetensors"), load_file(d / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sample_refuses_another_codec(image_run, capsys):
    d = image_run
    run("tokenize", "--codec", d / "codec", "--data", d / "data", "--out", d / "tokens")
    run("train-prior", "--tokens", d / "tokens", "--out", d / "prior", "--config", d / "tiny.json", "--steps", 1)
    other = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=QuantizerConfig(32)))
    codec.save_model(d / "other", other.eval())
    capsys.readouterr()
    assert run("sample", "--codec", d / "other", "--prior", d / "prior", "-n", 1, "-o", d / "s") == 2
    err = capsys.readouterr().err
    assert err.startswith("codec: error:") and "trained on codec" in err and err.count("\n") == 1
    assert run("sample", "--codec", d / "other", "-n", 1, "-o", d / "s") == 2  # no --prior, none stored with it
    assert "a codec with no prior stored beside it" in capsys.readouterr().err


def test_tokenize_train_sample_audio(tmp_path):
    q = QuantizerConfig(codebook_size=32, num_quantizers=4, quantizer_dropout=1.0)
    m = Codec(AudioCodecConfig(base_channels=8, latent_dim=8, sample_rate=16000, quantizer=q))
    m(torch.rand(2, 1, 320 * 8) * 2 - 1)
    codec.save_model(tmp_path / "codec", m.eval())
    (tmp_path / "data").mkdir()
    for i in range(3):
        write_audio(tmp_path / "data" / f"a{i}.wav", torch.rand(2 if i else 1, 16000 // (i + 2)) - 0.5, 16000)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    assert run("tokenize", "--codec", tmp_path / "codec", "--data", tmp_path / "data", "--out", tmp_path / "tok") == 0
    items = prior.data.load_tokens(tmp_path / "tok")
    assert [t.shape for t in items.tokens] == [(4, 25), (4, 17), (4, 13)]  # ceil(T / 320) frames
    args = ("train-prior", "--tokens", tmp_path / "tok", "--out", tmp_path / "p", "--config", tmp_path / "tiny.json")
    assert run(*args, "--steps", 2) == 0
    out = tmp_path / "s"
    assert (
        run("sample", "--codec", tmp_path / "codec", "--prior", tmp_path / "p", "-n", 2, "-o", out, "--seconds", 0.1)
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["sample_000.wav", "sample_001.wav"]


def test_train_prior_init_starts_from_a_priors_weights(image_run, capsys):
    d = image_run
    run("tokenize", "--codec", d / "codec", "--data", d / "data", "--out", d / "tokens")
    base = ("train-prior", "--tokens", d / "tokens", "--config", d / "tiny.json")
    assert run(*base, "--out", d / "first", "--steps", 3) == 0
    # one step at a negligible rate from --init: the saved weights are the init prior's
    same = ("train-prior", "--tokens", d / "tokens", "--out", d / "same", "--init", d / "first", "--steps", 1)
    assert run(*same, "--config", d / "lr0.json") == 2  # no such config file yet: one line
    (d / "lr0.json").write_text(json.dumps({"train": {"lr": 1e-12, "warmup_steps": 0, "weight_decay": 0.0}}))
    capsys.readouterr()
    assert run(*same, "--config", d / "lr0.json") == 0
    a, b = load_file(d / "first" / "model.safetensors"), load_file(d / "same" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-9) for k in a)
    assert json.loads((d / "same" / "config.json").read_text()) == json.loads((d / "first" / "config.json").read_text())
    # the architecture is the init prior's: changing it is refused, and so is --resume with --init
    (d / "wider.json").write_text(json.dumps({"prior": {"dim": 64}}))
    assert run(*base[:3], "--out", d / "w", "--init", d / "first", "--config", d / "wider.json") == 2
    assert "cannot change prior setting 'dim'" in capsys.readouterr().err
    assert run(*base, "--out", d / "first", "--init", d / "first", "--resume") == 2
    # another codec with the same token layout (a fine-tuned one): the init is a start, the new prior is its
    other = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=QuantizerConfig(32)))
    other(torch.rand(2, 3, 32, 32))
    codec.save_model(d / "other", other.eval())
    run("tokenize", "--codec", d / "other", "--data", d / "data", "--out", d / "other_tokens")
    assert (
        run("train-prior", "--tokens", d / "other_tokens", "--out", d / "x", "--init", d / "first", "--steps", 1) == 0
    )
    assert json.loads((d / "x" / "config.json").read_text())["codec_hash"] == codec.model_hash(codec.load(d / "other"))
    # another token layout is refused
    residual = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=QuantizerConfig(32, 2)))
    residual(torch.rand(2, 3, 32, 32))
    codec.save_model(d / "residual", residual.eval())
    run("tokenize", "--codec", d / "residual", "--data", d / "data", "--out", d / "res_tokens")
    capsys.readouterr()
    assert run("train-prior", "--tokens", d / "res_tokens", "--out", d / "y", "--init", d / "first") == 2
    assert "--init prior has" in capsys.readouterr().err
