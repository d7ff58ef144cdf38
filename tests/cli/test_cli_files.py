"""``codec encode`` / ``decode`` / ``info`` end to end: files and folders, both coding modes, and the one-line
errors (exit status 2) for every user mistake."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_helpers import error_line, make_runs, run
from PIL import Image

import codec
import codec.store.registry
from codec import Codec, ImageCodecConfig, QuantizerConfig
from codec.media.audio_io import read_audio
from codec.media.image_io import read_image, write_image


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny image and audio codecs with priors beside them, and a few media files."""
    return make_runs(tmp_path_factory.mktemp("cli"))


@pytest.mark.parametrize("mode", ["prior", "packed"])
def test_image_encode_decode_info(runs, tmp_path, capsys, mode):
    src = runs / "media" / "a.png"
    out = tmp_path / "a.vqc"
    extra = ["--no-prior"] if mode == "packed" else ["--prior", runs / "img" / "prior"]  # explicit: always used
    assert run("encode", src, "-o", out, "--model", runs / "img", *extra) == 0
    assert run("decode", out, "-o", tmp_path / "a.png") == 0  # codec and prior found from the file
    m = codec.load(runs / "img")
    x = read_image(src).pixels
    want = m.decode(m.encode(x[None], margin=2), shape=x.shape, margin=2)[0]  # files code images in a margin
    got = read_image(tmp_path / "a.png").pixels
    assert (got - want).abs().max() <= 0.5 / 255 + 1e-6  # only 8-bit rounding
    capsys.readouterr()
    assert run("info", out, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["metadata"]["mode"] == mode and info["bytes"] == out.stat().st_size
    assert info["bpp"] == pytest.approx(out.stat().st_size * 8 / (40 * 56))
    assert run("info", out) == 0
    text = capsys.readouterr().out
    assert f"coding:   {mode}" in text and "image 3x40x56 (PNG)" in text and "bpp without the header" in text


def test_audio_encode_decode_keeps_rate_channels_and_length(runs, tmp_path):
    out = tmp_path / "c.vqc"
    assert run("encode", runs / "media" / "c.wav", "-o", out, "--model", runs / "aud", "--quantizers", 2) == 0
    assert run("decode", out, "-o", tmp_path / "c.flac") == 0
    back = read_audio(tmp_path / "c.flac")
    assert (back.sample_rate, back.channels, back.samples.shape[1], back.format) == (22050, 2, 5000, "FLAC")
    assert codec.read_info(out.read_bytes()).token_shape[0] == 2


def test_same_input_same_bytes_and_no_silent_overwrite(runs, tmp_path, capsys):
    a, b = tmp_path / "1.vqc", tmp_path / "2.vqc"
    for out in (a, b):
        assert run("encode", runs / "media" / "a.png", "-o", out, "--model", runs / "img") == 0
    assert a.read_bytes() == b.read_bytes()
    capsys.readouterr()
    assert run("encode", runs / "media" / "a.png", "-o", a, "--model", runs / "img") == 2
    assert "exists" in error_line(capsys)
    assert run("encode", runs / "media" / "a.png", "-o", a, "--model", runs / "img", "--force") == 0


def test_gif_in_gif_out_by_default(runs, tmp_path):
    """A GIF encodes like any image, and its .vqc decodes to a GIF beside it (the original's extension); the
    decoded pixels are the API's decoded image after GIF's palette (at most 256 colours: this one has 4)."""
    img = Image.fromarray((np.arange(27 * 30).reshape(27, 30) // 203).astype(np.uint8), "P")
    img.putpalette([255, 165, 0, 0, 0, 128, 10, 200, 30, 255, 255, 255])
    (tmp_path / "src").mkdir()
    img.save(tmp_path / "src" / "c.gif")
    assert run("encode", tmp_path / "src" / "c.gif", "-o", tmp_path / "c.gif.vqc", "--model", runs / "img") == 0
    assert run("decode", tmp_path / "c.gif.vqc") == 0
    back = read_image(tmp_path / "c.gif")
    assert back.format == "GIF" and back.pixels.shape == (3, 27, 30)
    decoded = codec.decompress((tmp_path / "c.gif.vqc").read_bytes()).data  # (3, 27, 30) in [0, 1]
    assert (back.pixels - decoded).abs().max() <= 0.5  # palette-quantized, the right picture and layout
    assert (back.pixels - decoded).abs().mean() < 0.05


def test_folders_round_trip_with_one_progress_bar(runs, tmp_path, capsys):
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    # two modalities in one folder: each file gets the codec of its kind through the default lookup (the
    # bundled models; tests/test_bundled.py covers that), so name the tiny test codec here: images only
    shutil.copytree(runs / "media", tmp_path / "in", ignore=shutil.ignore_patterns("*.wav"))
    assert run("encode", tmp_path / "in", "-o", enc, "--model", runs / "img") == 0
    assert sorted(p.relative_to(enc).as_posix() for p in enc.rglob("*.vqc")) == ["a.png.vqc", "sub/b.jpg.vqc"]
    assert run("decode", enc, "-o", dec) == 0
    assert sorted(p.relative_to(dec).as_posix() for p in dec.rglob("*") if p.is_file()) == ["a.png", "sub/b.jpg"]
    assert read_image(dec / "sub" / "b.jpg").pixels.shape == (1, 24, 33)


def test_folder_with_a_bad_file_reports_it_and_exits_2(runs, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "ok.png", torch.rand(3, 16, 16))
    (tmp_path / "in" / "bad.png").write_bytes(b"not a png")
    capsys.readouterr()
    assert run("encode", tmp_path / "in", "-o", tmp_path / "out", "--model", runs / "img") == 2
    err = capsys.readouterr().err
    assert "bad.png" in err and "1 of 2 files failed" in err and "Traceback" not in err
    assert (tmp_path / "out" / "ok.png.vqc").is_file() and not (tmp_path / "out" / "bad.png.vqc").exists()


def test_user_errors_are_one_line_and_status_2(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(codec.store.registry, "BUNDLED_DIR", tmp_path / "no-models")  # an install without them
    good = tmp_path / "good.vqc"
    assert run("encode", runs / "media" / "a.png", "-o", good, "--model", runs / "img") == 0
    data = good.read_bytes()
    (tmp_path / "trunc.vqc").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.vqc").write_bytes(np.random.default_rng(0).bytes(300))
    (tmp_path / "notes.txt").write_text("hello")
    other = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=QuantizerConfig(32)))
    codec.save_model(tmp_path / "other", other.eval())
    shutil.copytree(runs / "img", tmp_path / "moved")
    moved = tmp_path / "moved.vqc"
    assert run("encode", runs / "media" / "a.png", "-o", moved, "--model", tmp_path / "moved", "--no-prior") == 0
    shutil.rmtree(tmp_path / "moved")
    capsys.readouterr()
    cases = [
        (("encode", tmp_path / "missing.png", "-o", tmp_path / "x.vqc"), "no such file"),
        (("encode", tmp_path / "notes.txt", "-o", tmp_path / "x.vqc", "--model", runs / "img"), "not a supported"),
        (("encode", runs / "media" / "a.png", "-o", tmp_path / "x.vqc"), "none installed"),  # no default model
        (("encode", runs / "media" / "a.png", "-o", tmp_path / "x.vqc", "--model", runs / "aud"), "input is image"),
        (("decode", tmp_path / "trunc.vqc", "-o", tmp_path / "t.png"), "truncated"),
        (("decode", tmp_path / "junk.vqc", "-o", tmp_path / "j.png"), "not a .vqc file"),
        (("decode", good, "-o", tmp_path / "o.png", "--model", tmp_path / "other"), "encoded with codec"),
        (("decode", moved, "-o", tmp_path / "m.png"), "cannot be loaded"),
        (
            ("decode", good, "-o", tmp_path / "o.wav"),
            ".wav is not an image format this can write; use .bmp, .gif, .jpeg",
        ),
        (("info", tmp_path / "junk.vqc"), "not a .vqc file"),
        (("info", tmp_path / "nothing.vqc"), "no such file"),
    ]
    for argv, needle in cases:
        assert run(*argv) == 2, argv
        line = error_line(capsys)
        assert needle in line, (argv, line)
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "o.png").exists()


def test_help_is_complete_with_examples():
    for sub in ("encode", "decode", "info"):
        out = subprocess.run([sys.executable, "-m", "codec", sub, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "examples:" in out.stdout and f"codec {sub} " in out.stdout
    out = subprocess.run([sys.executable, "-m", "codec", "--help"], capture_output=True, text=True)
    for sub in ("encode", "decode", "info", "train", "train-prior", "tokenize", "sample"):
        assert sub in out.stdout


def test_building_the_parser_loads_no_torch():
    """Every subcommand's parser (its argparse types included) is built without torch: `codec --help` is quick."""
    code = "import sys; from codec.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_console_script_quick_exit_keeps_every_output(runs, tmp_path):
    """encode, decode and info end with os._exit (codec.cli.main.QUICK_EXIT): in a real process, with stdout a
    pipe, the file written and the text printed are complete and the same as from main() in this process."""

    def cli(*argv):
        cmd = [sys.executable, "-m", "codec", *map(str, argv)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    src, model = runs / "media" / "a.png", runs / "img"
    proc = cli("encode", src, "-o", tmp_path / "sub.vqc", "--model", model)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{src} -> {tmp_path / 'sub.vqc'}: "), proc
    assert run("encode", src, "-o", tmp_path / "here.vqc", "--model", model, "-q") == 0
    assert (tmp_path / "sub.vqc").read_bytes() == (tmp_path / "here.vqc").read_bytes()
    proc = cli("info", tmp_path / "sub.vqc", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["bytes"] == (tmp_path / "sub.vqc").stat().st_size
    proc = cli("decode", tmp_path / "sub.vqc", "-o", tmp_path / "sub.png", "-q")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert run("decode", tmp_path / "here.vqc", "-o", tmp_path / "here.png", "-q") == 0
    assert (tmp_path / "sub.png").read_bytes() == (tmp_path / "here.png").read_bytes()
    proc = cli("decode", tmp_path / "missing.vqc", "-o", tmp_path / "x.png")  # errors: the normal exit
    assert proc.returncode == 2 and proc.stderr.startswith("codec: error: ") and len(proc.stderr.splitlines()) == 1


def test_a_reader_that_leaves_is_not_an_error(runs, tmp_path):
    """``codec info f | head -1``: stdout a pipe whose reader is gone. No error line, no traceback: status 141
    (128 + SIGPIPE, as a shell reports it), whether the write fails while printing or in the final flush."""
    assert run("encode", runs / "media" / "a.png", "-o", tmp_path / "a.vqc", "--model", runs / "img", "-q") == 0
    for argv in (["info", tmp_path / "a.vqc", "--json"], ["info", tmp_path / "a.vqc"]):
        read, write = os.pipe()
        os.close(read)  # the reader left before a byte was written: every write fails with EPIPE
        try:
            cmd = [sys.executable, "-m", "codec", *map(str, argv)]
            proc = subprocess.run(cmd, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
        finally:
            os.close(write)
        assert (proc.returncode, proc.stderr) == (141, ""), proc


def test_encode_margin_option(runs, tmp_path, capsys):
    """--margin PX (default 2) is recorded and decodes to the image; --margin 0 writes the layout of model.encode(x)
    (no media.margin); a margin out of range is one error line, status 2."""
    src, model = runs / "media" / "a.png", runs / "img"
    x = read_image(src).pixels
    m = codec.load(model)
    for margin in (None, 0, 5):
        out = tmp_path / f"m{margin}.vqc"
        extra = [] if margin is None else ["--margin", margin]
        assert run("encode", src, "-o", out, "--model", model, "--no-prior", "-q", *extra) == 0
        data = out.read_bytes()
        meta = codec.read_info(data)
        want = 2 if margin is None else margin
        assert data[4] == 7 and meta.margin == want and ("margin" in meta.media) == (want > 0)
        assert codec.decompress(data).tokens.equal(m.encode(x[None], margin=want)[0])
    capsys.readouterr()
    assert run("encode", src, "-o", tmp_path / "bad.vqc", "--margin", "65") == 2
    assert "--margin: must be an int in [0, 64], got 65" in error_line(capsys)
