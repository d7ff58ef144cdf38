"""Rates in the user's units through the CLI: ``encode --bitrate / --bpp`` pick the residual levels and say which,
conflicting flags are errors, and ``info`` reports the real rate and the coding mode without misleading figures."""

import json
import shutil

import pytest
import torch
from cli_helpers import error_line, make_runs, run

import codec
import codec.store.registry
from codec.media.image_io import write_image


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny models (audio: 4 levels of K = 32 at 16 kHz, hop 320: 250 bits/s a level; image: one level of
    K = 32 at f = 8: 5/64 bpp), also installed as the bundled "image" and "audio" of a fake package."""
    tmp = make_runs(tmp_path_factory.mktemp("rates"))
    shutil.copytree(tmp / "img", tmp / "bundled" / "image")
    shutil.copytree(tmp / "aud", tmp / "bundled" / "audio")
    return tmp


@pytest.fixture
def bundled(runs, monkeypatch):
    monkeypatch.setattr(codec.store.registry, "BUNDLED_DIR", runs / "bundled")


@pytest.mark.parametrize(
    ("rate", "levels", "said"), [("1kbps", 2, "1 kbps"), ("2kbps", 4, "2 kbps"), ("1.6k", 3, "1.6 kbps")]
)
def test_bitrate_picks_the_levels_and_says_which(runs, tmp_path, capsys, rate, levels, said):
    """c.wav is stereo, coded as mid and side: the two streams share the rate (250 bits/s a level each)."""
    out = tmp_path / "c.vqc"
    assert run("encode", runs / "media" / "c.wav", "-o", out, "--model", runs / "aud", "--bitrate", rate) == 0
    line = capsys.readouterr().out.strip()
    packed = f"{2 * levels * 0.25:.4g} kbps bit-packed, stereo as mid and side"
    assert f" kbps; {levels} levels for --bitrate {said} ({packed}), " in line, line
    assert codec.read_info(out).token_shape[0] == levels


def test_a_rate_below_the_lowest_uses_one_level_with_a_warning(runs, tmp_path, capsys):
    out = tmp_path / "c.vqc"
    assert run("encode", runs / "media" / "c.wav", "-o", out, "--model", runs / "aud", "--bitrate", "100") == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        "codec: warning: 0.1 kbps is below the lowest rate this codec offers, 0.5 kbps (1 level for each of mid and "
        "side); using 1 level"
    )
    assert "1 level for --bitrate 0.1 kbps" in captured.out and codec.read_info(out).token_shape[0] == 1


def test_bpp_for_images(runs, tmp_path, capsys):
    assert run("encode", runs / "media" / "a.png", "-o", tmp_path / "a.vqc", "--model", runs / "img", "--bpp", 1) == 0
    assert "; 1 level for --bpp 1 (0.0781 bpp bit-packed), " in capsys.readouterr().out


def test_conflicting_or_misplaced_rate_flags_are_errors(runs, tmp_path, capsys):
    wav, png = runs / "media" / "c.wav", runs / "media" / "a.png"
    to_wav, to_png = ("encode", wav, "--model", runs / "aud"), ("encode", png, "--model", runs / "img")
    cases = [
        ((*to_wav, "--bitrate", "1k", "--quantizers", 2), "give it or --bitrate"),
        ((*to_png, "--bpp", "0.2", "--quantizers", 1), "give it or --bitrate"),
        ((*to_png, "--bitrate", "1k"), f"{png}: --bitrate is for audio; for images use --bpp"),
        ((*to_wav, "--bpp", "0.3"), f"{wav}: --bpp is for images; for audio use --bitrate"),
        ((*to_wav, "--bitrate", "fast"), "bitrate 'fast' is not understood"),
        ((*to_png, "--bpp", "0"), "argument --bpp: must be > 0"),
    ]
    for argv, needle in cases:
        assert run(*argv, "-o", tmp_path / "x.vqc") == 2, argv
        assert needle in error_line(capsys), argv
    assert not (tmp_path / "x.vqc").exists()


def test_in_a_folder_each_flag_applies_to_its_kind(runs, tmp_path, capsys, bundled):
    # c.wav is stereo: 1 kbps shared by mid and side is 2 levels each
    assert run("encode", runs / "media", "-o", tmp_path / "enc", "--bitrate", "1000", "--bpp", "1") == 0
    out = capsys.readouterr().out
    assert "2 levels for --bitrate 1 kbps" in out and out.count("1 level for --bpp 1 ") == 2
    assert codec.read_info(tmp_path / "enc" / "c.wav.vqc").token_shape[0] == 2
    assert run("encode", runs / "media", "-o", tmp_path / "enc2", "--bitrate", "1000") == 0  # images: all levels
    assert codec.read_info(tmp_path / "enc2" / "c.wav.vqc").token_shape[0] == 2


def test_info_reports_the_real_rate_and_the_mode(runs, tmp_path, capsys):
    out = tmp_path / "c.vqc"
    args = ("encode", runs / "media" / "c.wav", "-o", out, "--model", runs / "aud", "--prior", runs / "aud" / "prior")
    assert run(*args, "--quantizers", 3, "-q") == 0
    assert run("info", out, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    size, seconds = out.stat().st_size, 5000 / 22050
    assert info["bytes"] == size and info["mode"] == "prior" and info["levels"] == 3
    assert info["header_bytes"] + info["chunk_header_bytes"] + info["token_bytes"] == size
    assert info["kbps"] == pytest.approx(size * 8 / seconds / 1000)
    assert info["kbps_without_header"] == pytest.approx((size - info["header_bytes"]) * 8 / seconds / 1000)
    assert info["bits_per_token"] == pytest.approx(info["token_bytes"] * 8 / info["tokens"])  # no header inside
    assert run("info", out) == 0
    text = capsys.readouterr().out
    assert f"file:     {out}: {size} bytes (header {info['header_bytes']}, chunk heads " in text
    coded = "coded as mid and side, each by the 1-channel codec, at 16000 Hz"
    assert f"content:  audio, 2 channels, 0.23 s at 22050 Hz (WAV); {coded}" in text
    assert f"rate:     {info['kbps']:.3f} kbps; {info['kbps_without_header']:.3f} kbps without the header" in text
    change = (1 - info["bits_per_token"] / 5) * 100
    side = "below" if change >= 0 else "above"
    bits = info["bits_per_token"]
    want = f"coding:   prior-coded: {bits:.3f} bits per coded token, {abs(change):.1f}% {side} bit-packed"
    assert want in text and "(3 residual levels)" in text and "prior:    " in text
    assert "; coder integer-1, exact on any machine" in text


def test_info_of_a_packed_image(runs, tmp_path, capsys):
    write_image(tmp_path / "g.png", torch.rand(1, 16, 24))
    assert run("encode", tmp_path / "g.png", "--model", runs / "img", "--no-prior", "-q") == 0
    assert run("info", tmp_path / "g.png.vqc") == 0
    text = capsys.readouterr().out
    assert "content:  image 1x16x24 (PNG)" in text and "coding:   packed: 5 bits per token (ceil(log2 32))" in text
    assert "prior:" not in text and "bpp without the header" in text


def test_info_of_a_truncated_extended_or_damaged_file_is_one_error_line(runs, tmp_path, capsys):
    """info checks every chunk's bounds and CRC and the file's end before it describes anything."""
    good = tmp_path / "a.vqc"
    assert run("encode", runs / "media" / "a.png", "-o", good, "--model", runs / "img") == 0
    data = good.read_bytes()
    capsys.readouterr()
    header = len(codec.bitstream.container.header_bytes(codec.read_info(data)))
    damaged = bytearray(data)
    damaged[header + 14] ^= 0xFF  # a payload byte of the first chunk
    cases = {"cut.vqc": data[:-3], "long.vqc": data + b"\0", "bad.vqc": bytes(damaged)}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        assert run("info", tmp_path / name) == 2, name
        line = error_line(capsys)
        assert str(tmp_path / name) in line, line
    assert run("info", good) == 0


def test_fit_coded_is_passed_to_compress_and_said(runs, tmp_path, capsys):
    """The CLI's file is the API's with fit="coded" (the rule itself: tests/bitstream/test_fit_coded.py); --fit
    with --quantizers, or with no rate to fit, is an error."""
    wav, out = runs / "media" / "c.wav", tmp_path / "c.vqc"
    assert run("encode", wav, "-o", out, "--model", runs / "aud", "--bitrate", "1k", "--fit", "coded") == 0
    assert " for --bitrate 1 kbps, --fit coded (1 kbps bit-packed, stereo as mid and side), " in capsys.readouterr().out
    assert out.read_bytes() == codec.compress(wav, codec.load(runs / "aud"), bitrate="1k", fit="coded")
    argv = ("encode", wav, "-o", tmp_path / "x.vqc", "--model", runs / "aud", "--quantizers", 2, "--fit", "coded")
    assert run(*argv) == 2
    assert "--fit chooses the levels for --bitrate / --bpp; --quantizers sets them itself" in error_line(capsys)
    assert not (tmp_path / "x.vqc").exists()
    assert run("encode", wav, "-o", tmp_path / "x.vqc", "--model", runs / "aud", "--fit", "coded") == 2
    assert "--fit coded chooses the levels for --bitrate / --bpp: give one of them" in error_line(capsys)
    assert not (tmp_path / "x.vqc").exists()
