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
import make_image_corpus  # noqa: E402


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
