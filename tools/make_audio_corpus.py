"""Build an audio corpus of synthetic speech and music from Debian packages, at 24 kHz.

    apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng \\
        fluidsynth fluid-soundfont-gm fortunes fortunes-min
    pip install -e ".[data]"                      # mido, to write the MIDI files
    python tools/make_audio_corpus.py --out data/audio

- Speech: English sentences from the ``fortunes`` databases (quotations, literature, wisdom, ...), each spoken
  once, either by ``festival`` (``text2wave`` with one of its installed English voices) or by ``espeak-ng`` (one of
  its English accents and voice variants, at a random speed and pitch). Mono.
- Music: MIDI pieces generated here (random key, mode, tempo, chord progression, General MIDI instruments for
  chords, bass and melody, and a drum pattern), rendered by ``fluidsynth`` with the ``FluidR3_GM`` sound font
  from ``fluid-soundfont-gm``. Stereo.

Everything is deterministic (``--seed``) and written as 16-bit FLAC at 24 kHz (resampled with soxr where a voice
speaks at another rate) under ``train/{speech,music}`` and ``heldout/{speech,music}``; a clip is held out by a
hash of its id (``--heldout-fraction``), and no sentence is used twice. ``sources.json`` records for each clip
its generator, voice or instruments, text and the packages (with licences) it came from.

Licences of the inputs (see /usr/share/doc/PKG/copyright): festival and its voices are under X11/BSD-style
licences (CMU / Edinburgh), espeak-ng GPL-3+, fluid-soundfont-gm MIT, fortunes BSD-4-clause and public-domain
quotations; the rendered audio is our own output of these free programs.
"""

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from codec.train.data import unit_hash

RATE = 24000
FORTUNE_DIR = Path("/usr/share/games/fortunes")
FORTUNE_FILES = (
    "fortunes", "literature", "wisdom", "people", "science", "food", "work", "education", "humorists",
    "songs-poems", "love", "pets", "men-women", "miscellaneous", "platitudes", "riddles", "goedel", "kids",
    "law", "magic", "medicine", "news", "politics", "sports", "startrek", "translate-me", "zippy",
)  # fmt: skip
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
ESPEAK_VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
LICENCES = {
    "festival": "X11-style (University of Edinburgh, CMU)",
    "festvox-kallpc16k": "free, CMU/OGI (see copyright)",
    "festvox-kdlpc16k": "free, CMU/OGI (see copyright)",
    "festvox-us-slt-hts": "BSD-style (CMU ARCTIC, HTS)",
    "espeak-ng": "GPL-3+",
    "fluidsynth": "LGPL-2.1+",
    "fluid-soundfont-gm": "MIT",
    "fortunes": "BSD-4-clause / public-domain quotations",
}
FESTIVAL_PACKAGE = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}


# ----------------------------------------------------------------------------------------------- text
def sentences(min_chars: int = 40, max_chars: int = 240) -> list[str]:
    """Prose entries of the fortune databases: ASCII, mostly letters, one line of speakable text each."""
    out = []
    for name in FORTUNE_FILES:
        path = FORTUNE_DIR / name
        if not path.is_file():
            continue
        for entry in path.read_text(encoding="latin-1").split("\n%\n"):
            entry = re.sub(r"\n\s*--.*$", "", entry, flags=re.S)  # a final attribution line ("\t-- Author")
            text = re.sub(r"\s+", " ", entry).strip()
            if not min_chars <= len(text) <= max_chars or not text.isascii():
                continue
            letters = sum(c.isalpha() or c == " " for c in text)
            if letters / len(text) < 0.85 or re.search(r"[<>{}\[\]|\\_=#@]|\d{3,}", text):
                continue
            out.append(text)
    return sorted(set(out))


# -------------------------------------------------------------------------------------------- speech
def festival_voices() -> list[str]:
    have = subprocess.run(["festival", "--pipe"], input="(print (voice.list))", capture_output=True, text=True)
    return [v for v in FESTIVAL_VOICES if re.search(rf"\b{v}\b", have.stdout)]


def speak(text: str, engine: str, voice: str, rng: np.random.Generator, tmp: Path) -> tuple[np.ndarray, int, dict]:
    """One utterance -> (samples (T,), rate, settings)."""
    wav = tmp / "speech.wav"
    if engine == "festival":
        txt = tmp / "speech.txt"
        txt.write_text(text)
        cmd = ["text2wave", "-o", str(wav), "-eval", f"(voice_{voice})", str(txt)]
        settings = {"voice": voice}
    else:
        speed, pitch = int(rng.integers(130, 200)), int(rng.integers(25, 75))
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text]
        settings = {"voice": voice, "speed": speed, "pitch": pitch}
    subprocess.run(cmd, check=True, capture_output=True)
    x, rate = sf.read(wav, dtype="float32", always_2d=True)
    return x.mean(axis=1), rate, settings


# --------------------------------------------------------------------------------------------- music
MODES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10)}
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4), (5, 3, 0, 4), (0, 0, 3, 4), (1, 4, 0, 0))
CHORD_PROGRAMS = (0, 4, 6, 16, 19, 24, 25, 46, 48, 49, 52, 88, 89)  # pianos, organs, guitars, strings, pads
LEAD_PROGRAMS = (0, 11, 13, 40, 56, 65, 68, 71, 73, 80, 81)  # piano, vibes, xylophone, violin, brass, reeds, leads
BASS_PROGRAMS = (32, 33, 34, 38, 42)


def make_midi(path: Path, seconds: float, rng: np.random.Generator) -> dict:
    """Write a random piece of about ``seconds``: chords, bass, melody and drums. Returns its settings."""
    import mido

    tpb = 480
    bpm = int(rng.integers(70, 150))
    root = 48 + int(rng.integers(0, 12))
    mode_name = str(rng.choice(list(MODES)))
    scale = MODES[mode_name]
    prog = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    programs = {
        "chords": int(rng.choice(CHORD_PROGRAMS)),
        "bass": int(rng.choice(BASS_PROGRAMS)),
        "lead": int(rng.choice(LEAD_PROGRAMS)),
    }
    bars = max(1, round(seconds * bpm / 60 / 4))
    events: list[tuple[int, int, int, int, int]] = []  # (tick, order, channel, note, velocity); order: off first

    def note(ch: int, start: int, length: int, pitch: int, vel: int) -> None:
        events.append((start, 1, ch, pitch, vel))
        events.append((start + length, 0, ch, pitch, 0))

    def degree(d: int, octave: int = 0) -> int:
        return root + 12 * (octave + d // 7) + scale[d % 7]

    melody = int(rng.integers(7, 12))
    for bar in range(bars):
        chord = prog[bar % len(prog)]
        t0 = bar * 4 * tpb
        voicing = [degree(chord + i, 0) for i in (0, 2, 4)]
        if rng.random() < 0.5:  # sustained chord, else arpeggio in eighths
            for p in voicing:
                note(0, t0, 4 * tpb - 10, p, int(rng.integers(50, 80)))
        else:
            for k in range(8):
                note(0, t0 + k * tpb // 2, tpb // 2, voicing[k % 3] + 12 * (k // 3 % 2), int(rng.integers(45, 75)))
        for beat in range(4):  # bass on each beat: root or fifth
            p = degree(chord + (4 if beat % 2 else 0), -1)
            note(1, t0 + beat * tpb, tpb - 20, p, int(rng.integers(70, 100)))
        t = 0
        while t < 4 * tpb:  # melody: a random walk on the scale, eighths to halves
            length = int(rng.choice([tpb // 2, tpb, tpb, 2 * tpb]))
            melody = int(np.clip(melody + rng.integers(-2, 3), 5, 16))
            if rng.random() < 0.85:
                note(2, t0 + t, min(length, 4 * tpb - t) - 10, degree(melody, 1), int(rng.integers(60, 100)))
            t += length
        for k in range(8):  # drums (channel 10): kick, snare, hats
            tick = t0 + k * tpb // 2
            note(9, tick, 60, 42, int(rng.integers(40, 70)))
            if k in (0, 4) or (k == 6 and rng.random() < 0.3):
                note(9, tick, 60, 36, 100)
            if k in (2, 6):
                note(9, tick, 60, 38, 90)

    mid = mido.MidiFile(ticks_per_beat=tpb)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
    for ch, name in enumerate(("chords", "bass", "lead")):
        track.append(mido.Message("program_change", channel=ch, program=programs[name]))
    now = 0
    for tick, _, ch, pitch, vel in sorted(events):
        kind = "note_on" if vel else "note_off"
        track.append(mido.Message(kind, channel=ch, note=pitch, velocity=vel, time=tick - now))
        now = tick
    mid.save(path)
    return {"bpm": bpm, "root": root, "mode": mode_name, "progression": list(prog), "programs": programs}


def render(mid: Path, wav: Path) -> tuple[np.ndarray, int]:
    cmd = ["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(RATE), "-F", str(wav), str(SOUNDFONT), str(mid)]
    subprocess.run(cmd, check=True, capture_output=True)
    x, rate = sf.read(wav, dtype="float32", always_2d=True)
    return x, rate


# ---------------------------------------------------------------------------------------------- main
def finish(x: np.ndarray, rate: int) -> np.ndarray:
    """(T,) or (T, C) to 24 kHz, silence (below -60 dBFS on every channel) trimmed at both ends, peak 0.9."""
    if rate != RATE:
        x = soxr.resample(x, rate, RATE)
    loud = np.flatnonzero((np.abs(x) if x.ndim == 1 else np.abs(x).max(axis=1)) > 1e-3)
    if len(loud):
        x = x[max(0, loud[0] - RATE // 20) : loud[-1] + 1 + RATE // 20]
    peak = float(np.abs(x).max()) or 1.0
    return (x / peak * 0.9).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (train/, heldout/, sources.json)")
    ap.add_argument("--speech", type=int, default=600, help="speech clips (default 600)")
    ap.add_argument("--music", type=int, default=120, help="music clips (default 120)")
    ap.add_argument("--music-seconds", type=float, default=15.0, help="length of a music clip (default 15)")
    ap.add_argument("--festival-share", type=float, default=0.4, help="share of speech spoken by festival")
    ap.add_argument("--heldout-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    missing = [t for t in ("text2wave", "espeak-ng", "fluidsynth") if shutil.which(t) is None]
    if missing or not SOUNDFONT.is_file() or not (FORTUNE_DIR / "fortunes").is_file():
        raise SystemExit(f"missing tools or data ({', '.join(missing) or 'sound font / fortunes'}); see --help")
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    for split in ("train", "heldout"):
        for kind in ("speech", "music"):
            (out / split / kind).mkdir(parents=True, exist_ok=True)
    texts = sentences()
    if len(texts) < args.speech:
        raise SystemExit(f"only {len(texts)} usable sentences for {args.speech} speech clips")
    texts = [texts[i] for i in rng.permutation(len(texts))[: args.speech]]
    voices = festival_voices()
    record = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i, text in enumerate(texts):
            if voices and rng.random() < args.festival_share:
                engine, voice = "festival", str(rng.choice(voices))
                packages = ["festival", FESTIVAL_PACKAGE[voice], "fortunes"]
            else:
                engine = "espeak-ng"
                voice = str(rng.choice(ESPEAK_VOICES)) + str(rng.choice(ESPEAK_VARIANTS))
                packages = ["espeak-ng", "fortunes"]
            try:
                x, rate, settings = speak(text, engine, voice, rng, tmp)
            except subprocess.CalledProcessError as e:  # festival crashes on a few sentences: skip them
                print(f"[speech {i + 1}/{len(texts)}] skipped: {engine} {voice} failed ({e})", flush=True)
                continue
            clip = f"speech_{i:04d}"
            split = "heldout" if unit_hash(clip) < args.heldout_fraction else "train"
            sf.write(out / split / "speech" / f"{clip}.flac", finish(x, rate), RATE, subtype="PCM_16")
            record.append({"clip": clip, "split": split, "engine": engine, **settings, "text": text,
                           "packages": {p: LICENCES[p] for p in packages}})  # fmt: skip
            print(f"[speech {i + 1}/{len(texts)}] {split:7s} {engine} {voice}", flush=True)
        for i in range(args.music):
            clip = f"music_{i:04d}"
            settings = make_midi(tmp / "piece.mid", args.music_seconds, rng)
            x, rate = render(tmp / "piece.mid", tmp / "piece.wav")
            split = "heldout" if unit_hash(clip) < args.heldout_fraction else "train"
            sf.write(out / split / "music" / f"{clip}.flac", finish(x, rate), RATE, subtype="PCM_16")
            packages = ("fluidsynth", "fluid-soundfont-gm")
            record.append({"clip": clip, "split": split, "engine": "fluidsynth", **settings,
                           "packages": {p: LICENCES[p] for p in packages}})  # fmt: skip
            print(f"[music {i + 1}/{args.music}] {split:7s} {settings['bpm']} bpm {settings['mode']}", flush=True)
    (out / "sources.json").write_text(json.dumps(record, indent=1) + "\n")
    n_held = sum(r["split"] == "heldout" for r in record)
    print(f"{len(record)} clips: {len(record) - n_held} train, {n_held} held out -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
