"""What a new user runs into with ``codec``: devices that are not there, a .vqc named like a photo, progress bars
in captured output, --quiet, unknown output formats, folder reports, and images with alpha. Every user error is
one ``codec: error: ...`` line with exit status 2."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import error_line, make_runs, run
from PIL import Image

import codec
from codec.media.image_io import read_image, write_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("rough"))


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("device", "needle"),
    [("cuda", "device 'cuda' is not available: "), ("tpu", "unknown device 'tpu'; use cpu or cuda")],
)
def test_missing_or_unknown_device_is_one_line_in_every_command(runs, tmp_path, capsys, no_cuda, device, needle):
    vqc = tmp_path / "a.vqc"
    assert run("encode", runs / "media" / "a.png", "-o", vqc, "--model", runs / "img") == 0
    capsys.readouterr()
    commands = [
        ("encode", runs / "media" / "a.png", "-o", tmp_path / "x.vqc", "--model", runs / "img"),
        ("encode", runs / "media", "-o", tmp_path / "folder", "--model", runs / "img"),  # once, not once a file
        ("decode", vqc, "-o", tmp_path / "x.png"),
        ("decode", tmp_path, "-o", tmp_path / "decoded"),
        ("sample", "--codec", runs / "img", "-n", 1, "-o", tmp_path / "samples"),
        ("tokenize", "--codec", runs / "img", "--data", runs / "media", "--out", tmp_path / "tokens"),
    ]
    for argv in commands:
        assert run(*argv, "--device", device) == 2, argv
        assert needle in error_line(capsys), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.vqc"]  # nothing written


def test_encode_writes_only_vqc_names(runs, tmp_path, capsys):
    args = ("encode", runs / "media" / "a.png", "--model", runs / "img")
    for name in ("photo.jpg", "photo.png", "photo"):
        assert run(*args, "-o", tmp_path / name) == 2
        assert f"{name}: encode writes .vqc files; name the output photo.vqc" in error_line(capsys)
    assert not list(tmp_path.iterdir())
    (tmp_path / "out").mkdir()
    assert run(*args, "-o", tmp_path / "out", "--quiet") == 0  # an existing folder: the file goes inside
    assert (tmp_path / "out" / "a.png.vqc").is_file()
    assert run("decode", tmp_path / "out" / "a.png.vqc", "-o", f"{tmp_path / 'restored'}/", "--quiet") == 0
    assert (tmp_path / "restored" / "a.png").is_file()


def test_encode_of_an_unknown_kind_of_file_lists_the_known_ones(runs, tmp_path, capsys):
    (tmp_path / "talk.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")  # AAC: libsndfile cannot read it
    assert run("encode", tmp_path / "talk.m4a", "--model", runs / "aud") == 2
    line = error_line(capsys)
    assert "talk.m4a: not a supported image or audio file (.m4a; known: .aif, .aiff, .bmp, .flac, .gif" in line
    assert ".png" in line and ".wav" in line and ".webp" in line
    assert not (tmp_path / "talk.m4a.vqc").exists()


def test_a_folder_says_which_files_it_left_out(runs, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(runs / "media" / "a.png", src / "a.png")
    for name in ("talk.m4a", "sub/more.M4A", "notes.txt", "README", ".hidden.m4a"):
        (src / name).write_bytes(b"x")
    assert run("encode", src, "-o", tmp_path / "enc", "--model", runs / "img") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "left out, of no kind encode reads: 2 .m4a, 1 .txt, 1 no extension"  # hidden files are not
    assert out[-1].startswith("encoded 1 files: ")
    (src / "a.png").unlink()
    assert run("encode", src, "-o", tmp_path / "enc2", "--model", runs / "img") == 2
    assert f"{src}: no image or audio files inside (left out: 2 .m4a, 1 .txt, 1 no extension)" in error_line(capsys)
    enc = tmp_path / "enc"
    (enc / "a.png.vqc").rename(enc / "A.VQC")  # the extension in any case
    (enc / "list.txt").write_text("x")
    assert run("decode", enc, "-o", tmp_path / "dec") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "left out, not .vqc: 1 .txt" and out[-1].startswith("decoded 1 files: ")
    (enc / "A.VQC").unlink()
    assert run("decode", enc, "-o", tmp_path / "dec2") == 2
    assert f"{enc}: no .vqc files inside (left out: 1 .txt)" in error_line(capsys)


def test_decode_to_an_unknown_format_lists_the_formats(runs, tmp_path, capsys):
    img, aud = tmp_path / "a.vqc", tmp_path / "c.vqc"
    assert run("encode", runs / "media" / "a.png", "-o", img, "--model", runs / "img", "-q") == 0
    assert run("encode", runs / "media" / "c.wav", "-o", aud, "--model", runs / "aud", "-q") == 0
    capsys.readouterr()
    assert run("decode", img, "-o", tmp_path / "x.txt") == 2
    line = error_line(capsys)
    exts = ".bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp"
    assert f"x.txt: .txt is not an image format this can write; use {exts}" in line
    assert run("decode", aud, "-o", tmp_path / "x.png") == 2
    line = error_line(capsys)
    assert ".png is not an audio format this can write; use " in line and ".flac" in line and ".wav" in line
    assert run("decode", img, "-o", tmp_path / "noext") == 2
    assert "a name without an extension is not an image format" in error_line(capsys)


def test_usage_errors_are_one_line_too(capsys):
    for argv in (("encode",), ("encode", "x.png", "--bitrate", "3q"), ("encode", "x.png", "--bpp", "-1"), ()):
        assert run(*argv) == 2
        assert "(see 'codec" in error_line(capsys)


def test_eval_help_states_its_defaults(capsys):
    assert run("eval", "--help") == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "see above" not in text
    assert "every count from 1 to the model's" in text and "1.5, 3 and 6 kbps" in text


def test_progress_bars_only_on_a_terminal_and_never_with_quiet(runs, tmp_path, capsys, monkeypatch):
    args = ("encode", runs / "media" / "a.png", "--model", runs / "img", "--prior", runs / "img" / "prior")
    assert run(*args, "-o", tmp_path / "1.vqc") == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith(f"{runs / 'media' / 'a.png'} -> {tmp_path / '1.vqc'}: ")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as on a terminal
    assert run(*args, "-o", tmp_path / "2.vqc") == 0
    assert "encode" in capsys.readouterr().err  # the bar
    assert run(*args, "-o", tmp_path / "3.vqc", "--quiet") == 0
    assert capsys.readouterr() == ("", "")


def test_a_failing_command_captured_by_a_script_prints_one_line(runs, tmp_path):
    good = tmp_path / "good.vqc"
    prior = ("--prior", runs / "img" / "prior")
    assert run("encode", runs / "media" / "a.png", "-o", good, "--model", runs / "img", *prior, "-q") == 0
    data = bytearray(good.read_bytes())
    data[-3] ^= 0xFF  # the last chunk: decoding starts, then fails
    (tmp_path / "bad.vqc").write_bytes(bytes(data))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "codec", "decode", str(tmp_path / "bad.vqc"), "-o", str(tmp_path / "bad.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    last = codec.read_info(good).num_chunks - 1
    want = f"codec: error: {tmp_path / 'bad.vqc'}: chunk {last} checksum mismatch (the data is damaged)"
    assert proc.stderr.splitlines() == [want]  # no progress bar debris before it


def test_folders_report_each_file_and_a_summary(runs, tmp_path, capsys):
    src = runs / "media"
    images = [src / "a.png", src / "sub" / "b.jpg"]
    assert run("encode", src, "-o", tmp_path / "enc", "--model", runs / "img") == 2  # c.wav fails: an image codec
    out, err = capsys.readouterr()
    lines = out.splitlines()
    outputs = [tmp_path / "enc" / "a.png.vqc", tmp_path / "enc" / "sub" / "b.jpg.vqc"]
    for image, vqc in zip(images, outputs):
        assert any(line.startswith(f"{image} -> {vqc}: {vqc.stat().st_size} bytes, ") and " bpp; 1 level, " in line
                   for line in lines), lines  # fmt: skip
    size_in, size_out = sum(p.stat().st_size for p in images), sum(p.stat().st_size for p in outputs)
    assert lines[-1] == f"encoded 2 files: {size_in} bytes in, {size_out} bytes out ({size_in / size_out:.1f}:1)"
    assert "c.wav" in err and "1 of 3 files failed" in err
    assert run("decode", tmp_path / "enc", "-o", tmp_path / "dec") == 0
    lines = capsys.readouterr().out.splitlines()
    decoded = [tmp_path / "dec" / "a.png", tmp_path / "dec" / "sub" / "b.jpg"]
    assert lines[-1] == (f"decoded 2 files: {size_out} bytes in, {sum(p.stat().st_size for p in decoded)} bytes out")
    assert f"{outputs[0]} -> {decoded[0]}: {size_out - outputs[1].stat().st_size} -> " in lines[0]
    assert run("encode", src, "-o", tmp_path / "quiet", "--model", runs / "img", "--quiet") == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 2  # the failing file and the count


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_survives_encode_and_decode(runs, tmp_path, capsys, mode):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 56, len(mode)), dtype=np.uint8)
    pixels[..., -1] = np.where(np.add.outer(np.arange(40), np.arange(56)) > 50, 255, rng.integers(0, 256, (40, 56)))
    Image.fromarray(pixels, mode).save(tmp_path / "logo.png")
    assert run("encode", tmp_path / "logo.png", "--model", runs / "img") == 0
    assert capsys.readouterr().out.rstrip().endswith("alpha kept")
    assert run("info", tmp_path / "logo.png.vqc") == 0
    info = capsys.readouterr().out
    assert f"image {len(mode) - 1}x40x56 with alpha (PNG)" in info and "alpha:    lossless, 8 bits" in info
    for ext in (".png", ".webp", ".tif"):
        assert run("decode", tmp_path / "logo.png.vqc", "-o", tmp_path / f"back{ext}") == 0
        back = read_image(tmp_path / f"back{ext}")
        assert np.array_equal((back.alpha[0] * 255).round().byte().numpy(), pixels[..., -1]), ext
    capsys.readouterr()
    assert run("decode", tmp_path / "logo.png.vqc", "-o", tmp_path / "back.jpg") == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"codec: warning: {tmp_path / 'back.jpg'}: JPEG has no alpha channel; alpha dropped"]


def test_the_alpha_of_a_folder_image_is_kept_too(runs, tmp_path):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "x.png", torch.rand(4, 16, 16))
    assert run("encode", tmp_path / "in", "-o", tmp_path / "enc", "--model", runs / "img", "-q") == 0
    assert run("decode", tmp_path / "enc", "-o", tmp_path / "dec", "-q") == 0
    assert read_image(tmp_path / "dec" / "x.png").alpha is not None
