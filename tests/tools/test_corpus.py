"""The corpus builders of the bundled models' recipe (tools/make_image_corpus.py, tools/make_audio_corpus.py):
the split keeps every file of a photograph on one side, crops have the asked size and never come from an
upscaled file, licences are recorded; audio clips are trimmed on every channel and fortunes lose only their
attribution line."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_audio_corpus  # noqa: E402
import make_device_corpus  # noqa: E402
import make_image_corpus  # noqa: E402
import make_recorded_speech  # noqa: E402


def _photo(path: Path, w: int, h: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_image_corpus_split_by_photograph_with_licences(tmp_path):
    wall, back = tmp_path / "wallpapers", tmp_path / "backgrounds"
    for k, size in enumerate(((320, 180), (200, 150))):  # one Plasma wallpaper in two sizes
        _photo(wall / "Foo" / "contents" / "images" / f"{size[0]}x{size[1]}.png", *size, k)
    (wall / "Foo" / "metadata.json").write_text(json.dumps({"KPlugin": {"License": "CC-BY-SA-4.0", "Authors": [
        {"Name": "A. Painter"}]}}))  # fmt: skip
    _photo(back / "bar.jpg", 240, 160, 2)
    _photo(back / "bar_3840x2160.jpg", 300, 200, 3)  # the same photograph at another size
    for i in range(6):
        _photo(back / f"p{i}-l.png", 180, 130, 10 + i)
        _photo(back / f"p{i}-d.png", 180, 130, 20 + i)  # GNOME's light / dark pair
    _photo(back / "mini.png", 50, 40, 8)  # train side, smaller than a crop: never upscaled, so skipped
    _photo(back / "small.png", 60, 50, 9)  # held-out side, smaller than the held-out crop: skipped
    out = tmp_path / "corpus"
    args = ["--roots", str(wall), str(back), "--out", str(out), "--crop", "64", "--crops", "3", "--scales", "96", "400"]
    assert make_image_corpus.main([*args, "--heldout-size", "64", "--heldout-fraction", "0.5"]) == 0
    record = {r["photo"]: r for r in json.loads((out / "sources.json").read_text())}
    assert sorted(record) == ["Foo", "bar", "p0", "p1", "p2", "p3", "p4", "p5"]  # mini and small skipped
    assert len(record["Foo"]["files"]) == 2 and len(record["bar"]["files"]) == 2 and len(record["p3"]["files"]) == 2
    assert record["Foo"]["license"] == "CC-BY-SA-4.0" and record["Foo"]["authors"] == ["A. Painter"]
    assert {r["split"] for r in record.values()} == {"train", "heldout"}  # both sides used
    for key, r in record.items():  # every output of a photograph lies on its own side of the split
        stem = key[:40]
        train = [p for p in (out / "train").iterdir() if p.name[5:].startswith(stem + "_")]
        held = [p for p in (out / "heldout").iterdir() if p.name[5:] == stem + ".png"]
        if r["split"] == "train":
            assert not held and len(train) == 3, key
            assert all(Image.open(p).size == (64, 64) for p in train)
        else:
            assert not train and len(held) == 1 and Image.open(held[0]).size == (64, 64), key
    assert not list((out / "train").glob("*_mini_*")) and not list((out / "heldout").glob("*_small.png"))


def test_audio_finish_trims_silence_on_every_channel():
    x = np.zeros((12000, 2), np.float32)
    x[5000:6000, 0] = -0.5  # loud only on the left, and negative
    y = make_audio_corpus.finish(x, make_audio_corpus.RATE)
    pad = make_audio_corpus.RATE // 20
    assert y.shape == (1000 + 2 * pad, 2)
    assert np.abs(y).max() == pytest.approx(0.9)


def test_fortunes_lose_their_attribution_but_keep_dashes(tmp_path, monkeypatch):
    body = "Some sentence with a dash -- right in the middle of it, and long enough to be kept."
    (tmp_path / "fortunes").write_text(f"{body}\n\t\t-- Mark Twain\n%\nToo short.\n%\n", encoding="latin-1")
    monkeypatch.setattr(make_audio_corpus, "FORTUNE_DIR", tmp_path)
    assert make_audio_corpus.sentences() == [body]


HAVE_TOOLS = all(shutil.which(t) for t in ("text2wave", "espeak-ng", "fluidsynth")) and (
    make_audio_corpus.SOUNDFONT.is_file() and (make_audio_corpus.FORTUNE_DIR / "fortunes").is_file()
)


@pytest.mark.skipif(not HAVE_TOOLS, reason="apt-get install festival espeak-ng fluidsynth fluid-soundfont-gm fortunes")
def test_audio_corpus_builds_speech_and_music(tmp_path):
    import soundfile as sf

    out = tmp_path / "audio"
    args = ["--out", str(out), "--speech", "3", "--music", "1", "--music-seconds", "2", "--heldout-fraction", "0"]
    assert make_audio_corpus.main(args) == 0
    record = json.loads((out / "sources.json").read_text())
    assert [r["clip"] for r in record if r["engine"] == "fluidsynth"] == ["music_0000"]
    assert len(record) >= 3 and all(r["split"] == "train" for r in record)
    for r in record:
        kind = "music" if r["engine"] == "fluidsynth" else "speech"
        info = sf.info(out / "train" / kind / f"{r['clip']}.flac")
        assert info.samplerate == 24000 and info.frames > 24000 * 0.3
        assert r["packages"] and all(r["packages"].values())


def test_recorded_speech_is_held_out_by_speaker_with_its_licence(tmp_path, monkeypatch):
    import soundfile as sf

    sounds = tmp_path / "sounds"
    lengths = {"en_US_f_Allison": [2.0, 0.5, 3.0], "it_IT_m_Carlo": [2.5, 3.5, 4.0, 3.2, 5.0], "ru_RU_f_Ivr": [1.6]}
    for voice, secs in lengths.items():
        for i, sec in enumerate(secs):
            (sounds / voice / "digits").mkdir(parents=True, exist_ok=True)
            (sounds / voice / "digits" / f"{i}.g722").write_bytes(int(sec * 1000).to_bytes(4, "little"))
    (sounds / "en").mkdir()  # language links and folders without a speaker name are not voices
    (sounds / "en_US").symlink_to(sounds / "en_US_f_Allison")

    def fake_decode(path):  # a 200 Hz tone of the length the file names, at 16 kHz
        n = int.from_bytes(path.read_bytes(), "little") * 16
        return (0.5 * np.sin(2 * np.pi * 200 * np.arange(n) / 16000)).astype(np.float32), 16000

    monkeypatch.setattr(make_recorded_speech, "SOUNDS", sounds)
    monkeypatch.setattr(make_recorded_speech, "decode_g722", fake_decode)
    monkeypatch.setattr(make_recorded_speech.shutil, "which", lambda name: "/usr/bin/" + name)
    out = tmp_path / "corpus"
    assert (
        make_recorded_speech.main(["--out", str(out), "--heldout-speakers", "it_IT_m_Carlo", "--eval-clips", "2"]) == 0
    )
    train = sorted(p.relative_to(out / "train").as_posix() for p in (out / "train").rglob("*.flac"))
    held = sorted(p.relative_to(out / "heldout").as_posix() for p in (out / "heldout").rglob("*.flac"))
    assert train == [  # the 0.5 s clip is too short
        "speech_recorded/en_US_f_Allison/digits-0.flac",
        "speech_recorded/en_US_f_Allison/digits-2.flac",
        "speech_recorded/ru_RU_f_Ivr/digits-0.flac",
    ]
    assert held == [f"speech_recorded/it_IT_m_Carlo/digits-{i}.flac" for i in range(5)]
    # the evaluation set: of the held-out clips of at least 3 s (digits-1..4), the first and the last
    evaluation = sorted(p.name for p in (out / "eval_recorded" / "speech" / "it_IT_m_Carlo").iterdir())
    assert (
        evaluation == ["digits-1.flac", "digits-4.flac"]
        and not (out / "eval_recorded" / "speech" / "en_US_f_Allison").exists()
    )
    x, rate = sf.read(out / "heldout" / held[0])
    assert rate == 24000 and abs(len(x) / rate - 2.5) < 0.01 and abs(np.abs(x).max() - 0.9) < 1e-3
    record = json.loads((out / "sources_recorded.json").read_text())
    assert {(r["speaker"], r["split"]) for r in record} == {
        ("Allison", "train"),
        ("Ivr", "train"),
        ("Carlo", "heldout"),
    }
    assert all(r["licence"].startswith("CC-BY-SA-3.0") for r in record)


def test_recorded_speech_evaluation_pick_is_spread_evenly():
    clips = [Path(f"c{i:02d}.flac") for i in range(10)]
    assert make_recorded_speech.eval_subset(clips[::-1], 4) == [clips[0], clips[3], clips[6], clips[9]]
    assert make_recorded_speech.eval_subset(clips, 1) == [clips[0]]
    assert make_recorded_speech.eval_subset(clips[:3], 8) == clips[:3]


@pytest.mark.skipif(
    shutil.which("ffmpeg") is None or not make_recorded_speech.speakers(), reason="needs ffmpeg and Asterisk prompts"
)
def test_g722_prompts_decode_to_wideband_speech():
    path = next(make_recorded_speech.speakers()[0].rglob("*.g722"))
    x, rate = make_recorded_speech.decode_g722(path)
    assert rate == 16000 and x.dtype == np.float32 and len(x) > 4000
    # G.722 is wideband: energy above 4 kHz, which telephone-band (8 kHz) recordings lack
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    assert spectrum[freqs > 4000].sum() > 1e-4 * spectrum.sum()


def test_device_corpus_order_keeps_each_folders_share_and_alternates_sources():
    """Hand-worked order: folder a holds 8 files (sources x: 6, y: 2), folder b 4 (source z). Within a, the
    sources alternate (x0 y0 x1 y1 x2 x3 x4 x5); the folders interleave by position (i + 0.5) / n, so every
    prefix holds about 2 of a for each of b, and a folder of many one-file sources (recorded prompts) cannot
    crowd out the others."""
    files = [Path(f"a/x_{i}.png") for i in range(6)] + [Path(f"a/y_{i}.png") for i in range(2)]
    files += [Path(f"b/z_{i}.png") for i in range(4)]
    order = [f"{p.parent.name}/{p.stem}" for p in make_device_corpus.round_robin(files[::-1])]
    assert order == ["a/x_0", "b/z_0", "a/y_0", "a/x_1", "b/z_1", "a/y_1", "a/x_2",
                     "b/z_2", "a/x_3", "a/x_4", "b/z_3", "a/x_5"]  # fmt: skip
    prompts = [Path(f"rec/prompt-{i}.ogg") for i in range(30)] + [Path(f"music/m_{i}.ogg") for i in range(10)]
    first = make_device_corpus.round_robin(prompts)[:8]
    assert sum(p.parent.name == "music" for p in first) == 2  # 10 of 40 files: a quarter of any prefix


def test_device_corpus_audio_is_lossless_flac_by_default(tmp_path):
    """FLAC keeps every 16-bit sample of the mono mix (the near-silent floor included); Vorbis is the smaller,
    lossy choice."""
    import io

    import soundfile as sf

    rng = np.random.default_rng(5)
    stereo = (rng.integers(-2000, 2000, (2400, 2)) * 2).astype(np.int16)  # even: the mean of two is exact in 16 bit
    stereo[:, 1] = stereo[:, 0] // 2 * 2 + 2 * rng.integers(-3, 4, 2400)  # a quiet difference between the channels
    src = tmp_path / "clip.wav"
    sf.write(src, stereo, 24000, subtype="PCM_16")
    mono, rate = sf.read(io.BytesIO(make_device_corpus.audio_bytes(src, "flac")), dtype="int16")
    assert rate == 24000 and mono.shape == (2400,)
    np.testing.assert_array_equal(mono, ((stereo[:, 0].astype(np.int32) + stereo[:, 1]) // 2).astype(np.int16))
    vorbis = make_device_corpus.audio_bytes(src, "vorbis")
    assert vorbis[:4] == b"OggS"
