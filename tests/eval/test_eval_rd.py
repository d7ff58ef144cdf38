"""tools/eval_rd.py: PSNR against a hand computation, MS-SSIM of identical images, bpp matching against an
exhaustive scan of the peer's qualities, and the whole tool on a tiny codec (JSON and plot written)."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import codec
from codec import AudioCodecConfig, Codec, ImageCodecConfig, QuantizerConfig
from codec.eval import audio as eval_audio
from codec.eval import image as eval_image
from codec.eval import rd as eval_rd
from codec.media.audio_io import read_audio, write_audio
from codec.media.image_io import write_image


def test_psnr_matches_a_hand_computation():
    x = torch.zeros(1, 2, 2)
    y = torch.tensor([[[10 / 255, 0.0], [0.0, 0.0]]])  # one pixel off by 10 levels: MSE = 100 / 4
    assert eval_image.psnr(x, y) == pytest.approx(10 * math.log10(255**2 / 25))
    assert eval_image.psnr(x, x) == float("inf")


def test_ms_ssim_is_one_for_identical_images_and_lower_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 64, 80, generator=g)
    assert eval_image.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.2 * torch.randn(3, 64, 80, generator=g)).clamp(0, 1)
    assert eval_image.ms_ssim(x, noisy) < 0.99


SIZES = [(3, 5), (8, 9), (10, 31), (21, 22), (88, 90), (90, 173), (95, 96), (98, 120), (175, 176)]


@pytest.mark.parametrize("hw", SIZES)
def test_ms_ssim_handles_awkward_sizes(hw):
    """Every size picks parameters torchmetrics accepts (88-98 px used to crash the tool)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, *hw, generator=g)
    assert eval_image.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert eval_image.ms_ssim(x, noisy) < 0.95
    assert math.isnan(eval_image.ms_ssim(x[:, :2], x[:, :2]))  # too small to measure: NaN, not a crash


def test_ms_ssim_uses_the_standard_parameters_on_large_images():
    assert eval_image.ms_ssim_params(176) == (5, 11) and eval_image.ms_ssim_params(512) == (5, 11)


def test_ms_ssim_on_one_scale_is_plain_ssim():
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 21, 30, generator=g)  # short side 21: one scale, 11-tap window
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert eval_image.ms_ssim_params(21) == (1, 11)
    assert eval_image.ms_ssim(x, y) == pytest.approx(float(ssim(y[None], x[None], data_range=1.0)), abs=1e-6)


@pytest.mark.parametrize("peer", ["JPEG", "WebP"])
def test_match_bpp_finds_the_closest_quality(peer):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 40), indexing="ij")
    x = torch.stack([xx, yy, (xx * 7).sin() * 0.5 + 0.5])
    sizes = {q: eval_image.peer_encode(x, peer, q)[0] for q in range(1, 101)}
    target = (sizes[20] + sizes[60]) / 2
    q, size, decoded = eval_image.match_bpp(x, peer, target)
    assert size == sizes[q] and decoded.shape == x.shape
    best = min(abs(s - target) for s in sizes.values())
    assert abs(size - target) <= best * 1.0 + 0.05 * target  # sizes are not strictly monotone in quality


def test_the_tool_writes_json_and_a_plot(tmp_path, capsys):
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, num_quantizers=2)
    m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    m(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp_path / "img", m.eval())
    (tmp_path / "data").mkdir()
    for i in range(2):
        write_image(tmp_path / "data" / f"{i}.png", torch.rand(3, 40, 48))
    (tmp_path / "data" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "rd"
    assert eval_rd.main(["--model", str(tmp_path / "img"), "--data", str(tmp_path / "data"), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert [Path(p).name for p, _ in result["skipped"]] == ["broken.png"]  # reported, the others measured
    assert "skipped" in capsys.readouterr().out
    assert {(s["codec"], s["level"]) for s in result["summary"]} == {
        (c, lvl) for c in ("vqcodec", "JPEG", "WebP") for lvl in (1, 2)
    }
    ours = [r for r in result["rows"] if r["codec"] == "vqcodec"]
    assert all(r["bpp"] == pytest.approx(r["bytes"] * 8 / (40 * 48)) for r in ours)
    assert out.with_suffix(".png").stat().st_size > 1000
    # the fidelity checks reach the JSON, per level (their values: tests/eval/test_fidelity.py)
    assert [c["level"] for c in result["colour"]] == [c["level"] for c in result["colour_sweep"]] == [1, 2]
    assert all(c["colours"] == 176 and 0 <= c["within_tolerance"] <= 1 for c in result["colour_sweep"])


def _speechlike(seconds: float, rate: int, seed: int) -> torch.Tensor:
    """(1, T): a gliding harmonic tone with syllable-like amplitude bursts, enough for PESQ and STOI."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
    voice = sum(torch.sin(k * phase) / k for k in range(1, 8))
    env = (torch.sin(2 * math.pi * 3 * t).clamp_min(0)) ** 2
    return (0.3 * voice * env + 0.01 * torch.randn(t.shape, generator=g))[None]


def test_audio_metrics_rank_clean_above_noisy():
    pytest.importorskip("pesq")
    rate = 24000
    ref = _speechlike(3.0, rate, 0)
    clean = eval_audio.audio_metrics(ref, ref, rate, speech=True)
    g = torch.Generator().manual_seed(5)
    noisy = eval_audio.audio_metrics(ref, ref + 0.05 * torch.randn(ref.shape, generator=g), rate, speech=True)
    assert clean["mel"] == pytest.approx(0.0, abs=1e-6) and clean["si_snr"] > 60
    assert clean["pesq"] > 4.0 and clean["stoi"] > 0.99
    assert noisy["pesq"] < clean["pesq"] - 1 and noisy["stoi"] < clean["stoi"] and noisy["mel"] > 0.1
    music = eval_audio.audio_metrics(ref, ref, rate, speech=False)
    assert music["pesq"] is None and music["stoi"] is None


def test_default_audio_levels_are_the_nominal_bitrates():
    q = QuantizerConfig(codebook_size=1024, num_quantizers=8)
    m = Codec(AudioCodecConfig(base_channels=4, latent_dim=8, quantizer=q))  # 75 frames/s x 10 bits = 0.75 kbps
    assert eval_audio.default_audio_levels(m) == [2, 4, 8]


HAVE_OGG_TOOLS = bool(shutil.which("opusenc") and shutil.which("oggenc"))


@pytest.mark.skipif(not HAVE_OGG_TOOLS, reason="apt-get install opus-tools vorbis-tools")
def test_the_tool_compares_audio_with_opus_and_vorbis(tmp_path):
    pytest.importorskip("pesq")

    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=64, num_quantizers=4)
    m = Codec(AudioCodecConfig(base_channels=4, latent_dim=8, quantizer=q))
    m(torch.randn(2, 1, 3200) * 0.1)
    codec.save_model(tmp_path / "aud", m.eval())
    (tmp_path / "data" / "speech").mkdir(parents=True)
    (tmp_path / "data" / "music").mkdir()
    write_audio(tmp_path / "data" / "speech" / "a.wav", _speechlike(2.0, 16000, 1), 16000)  # resampled to 24 kHz
    stereo = torch.cat([_speechlike(1.5, 24000, 2), _speechlike(1.5, 24000, 3)])
    write_audio(tmp_path / "data" / "music" / "b.flac", stereo, 24000)
    out = tmp_path / "rd"
    args = ["--model", str(tmp_path / "aud"), "--data", str(tmp_path / "data"), "--out", str(out)]
    assert eval_rd.main([*args, "--quantizers", "1", "4", "--opus-kbps", "6", "12"]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert {(r["codec"], r["level"]) for r in rows} == {
        ("vqcodec", 1), ("vqcodec", 4), ("Opus", 0), ("Opus", 1), ("Vorbis", 0)
    }  # fmt: skip
    for r in rows:
        assert r["kbps"] == pytest.approx(r["bytes"] * 8 / r["seconds"] / 1000)
        assert (r["pesq"] is not None) == (r["stoi"] is not None) == r["speech"] == (r["file"] == "a.wav")
    ours = {(r["file"], r["level"]): r for r in rows if r["codec"] == "vqcodec"}
    # the bytes are those of a real .vqc file of the 24 kHz mono evaluation signal
    ref = read_audio(tmp_path / "data" / "music" / "b.flac", sample_rate=24000).samples.mean(0, keepdim=True)
    write_audio(tmp_path / "ref.wav", ref, 24000, subtype="FLOAT")
    loaded = codec.load(tmp_path / "aud", device="cpu")  # as the tool loads it (its name goes in the header)
    assert ours[("b.flac", 4)]["bytes"] == len(codec.compress(tmp_path / "ref.wav", loaded, num_quantizers=4))
    assert ours[("b.flac", 4)]["bytes"] > ours[("b.flac", 1)]["bytes"]
    opus = sorted((r["nominal_kbps"], r["kbps"]) for r in rows if r["codec"] == "Opus" and r["file"] == "a.wav")
    assert opus[0][1] >= 6.0 and opus[1][1] > opus[0][1]  # hard CBR: the file grows with the bitrate


def test_si_snr_matches_a_float64_formula_at_a_known_snr():
    g = torch.Generator().manual_seed(3)
    ref = _speechlike(1.0, 16000, 4).double()
    noise = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    noise = noise * (ref.norm() / noise.norm()) / math.sqrt(10.0)  # 10 dB below the signal
    est = 0.5 * (ref + noise)  # SI-SNR ignores the gain
    r, e = ref[0] - ref.mean(), est[0] - est.mean()
    target = (e @ r) / (r @ r) * r
    expected = 10 * math.log10(float(target @ target) / float((e - target) @ (e - target)))
    got = eval_audio.audio_metrics(ref.float(), est.float(), 16000, speech=False)["si_snr"]
    assert got == pytest.approx(expected, abs=0.01) and got == pytest.approx(10.0, abs=0.5)


def test_speech_is_decided_below_the_evaluated_folder():
    root = Path("/corpora/speech/heldout")
    assert not eval_audio.is_speech(root / "music" / "a.wav", root)
    assert eval_audio.is_speech(root / "speech" / "b.wav", root)
    assert eval_audio.is_speech(Path("/corpora/heldout/speech/c.wav"), Path("/corpora/heldout/speech"))


def test_json_output_has_no_infinities():
    out = eval_rd.json_safe({"rows": [{"psnr": float("inf"), "ms_ssim": float("nan"), "bpp": 0.25}]})
    assert out == {"rows": [{"psnr": None, "ms_ssim": None, "bpp": 0.25}]}
    json.dumps(out, allow_nan=False)


def test_summary_caps_lossless_psnr():
    rows = [
        {"codec": "JPEG", "level": 1, "bpp": 0.2, "psnr": float("inf"), "ms_ssim": 1.0},
        {"codec": "JPEG", "level": 1, "bpp": 0.4, "psnr": 30.0, "ms_ssim": 0.9},
    ]
    (s,) = eval_rd.summarize(rows)
    assert s["psnr"] == pytest.approx((eval_rd.PSNR_CAP + 30.0) / 2) and s["lossless"] == 1
    assert s["bpp"] == pytest.approx(0.3) and s["ms_ssim"] == pytest.approx(0.95)


def test_output_paths_keep_dots_inside_the_name():
    from codec.eval.rd import output_paths

    assert output_paths(Path("r/rd_image")) == (Path("r/rd_image.json"), Path("r/rd_image.png"))
    assert output_paths(Path("r/lam0.015_rec")) == (Path("r/lam0.015_rec.json"), Path("r/lam0.015_rec.png"))
    assert output_paths(Path("r/rd.json")) == (Path("r/rd.json"), Path("r/rd.png"))
    assert output_paths(Path("r/rd.PNG")) == (Path("r/rd.json"), Path("r/rd.png"))
