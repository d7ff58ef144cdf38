"""Add real recorded speech to an audio corpus: the Asterisk voice prompts of Debian, held out by speaker.

    apt-get install ffmpeg asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 \\
        asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722
    python tools/make_recorded_speech.py --out data/audio

The ``asterisk-core-sounds-*-g722`` packages hold studio recordings of telephone prompts (sentences, numbers,
letters, words) by professional speakers, in G.722: 16 kHz wideband speech, content up to about 7 kHz. Each
installed speaker folder (``/usr/share/asterisk/sounds/<lang>_<COUNTRY>_<f|m>_<Name>``) is one voice:
Allison (US English and Mexican Spanish), June (Canadian French), Carlo (Italian, male) and a Russian voice.

Clips of at least ``--min-seconds`` are decoded by ffmpeg, resampled to 24 kHz (soxr), trimmed of silence and
peak-normalised like the synthetic corpus (``make_audio_corpus.finish``), and written as 16-bit FLAC under
``train/speech_recorded/<speaker>/`` or ``heldout/speech_recorded/<speaker>/``. Whole speakers are held out
(``--heldout-speakers``, default Carlo and June: a male and a female voice, two languages), so the held-out
figures measure voices the model never heard. ``--eval-clips`` of each held-out speaker's clips of at least 3 s,
spread evenly over their sorted names, are also copied to ``eval_recorded/speech/<speaker>/``: the fixed set of the
README's recorded-speech figures. ``sources_recorded.json`` records each clip's speaker, language,
package and licence. Evaluate with ``codec eval --speech`` (PESQ-WB and STOI work at 16 kHz, which is what the
recordings carry).

Licence: the Asterisk core sound prompts are CC-BY-SA-3.0 (Digium, Inc.; see
/usr/share/doc/asterisk-core-sounds-*/copyright).
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_audio_corpus import RATE, finish  # noqa: E402

SOUNDS = Path("/usr/share/asterisk/sounds")
LICENCE = "CC-BY-SA-3.0 (Digium, Inc.; see /usr/share/doc/asterisk-core-sounds-*/copyright)"
HELD_OUT = ("it_IT_m_Carlo", "fr_CA_f_June")
EVAL_SECONDS = 3.0  # evaluation clips are at least this long after trimming (PESQ needs a few seconds)


def speakers(root: Path | None = None) -> list[Path]:
    """The installed voice folders (a real folder named lang_COUNTRY_sex_Name holding .g722 files)."""
    root, found = root or SOUNDS, []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.is_dir() and not d.is_symlink() and len(d.name.split("_")) >= 4 and any(d.rglob("*.g722")):
            found.append(d)
    return found


def eval_subset(clips: list[Path], n: int) -> list[Path]:
    """n clips spread evenly over the name-sorted list (the first and the last included): a fixed, reproducible pick."""
    clips = sorted(clips)
    if len(clips) <= n:
        return clips
    return [clips[round(i * (len(clips) - 1) / (n - 1))] for i in range(n)] if n > 1 else clips[:1]


def decode_g722(path: Path) -> tuple[np.ndarray, int]:
    """(T,) float32 samples at 16 kHz of a raw G.722 file, by ffmpeg."""
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "g722", "-i", str(path), "-f", "f32le", "-ac", "1", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<f4").copy(), 16000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="corpus folder (train/ and heldout/ are added to)")
    ap.add_argument("--heldout-speakers", nargs="*", default=list(HELD_OUT), help="voice folders held out")
    ap.add_argument("--min-seconds", type=float, default=1.5, help="shortest clip kept (default 1.5)")
    ap.add_argument(
        "--eval-clips",
        type=int,
        default=8,
        help="clips per held-out speaker also copied to eval_recorded/speech/ (the README's evaluation set; default 8)",
    )
    args = ap.parse_args(argv)
    if shutil.which("ffmpeg") is None or not speakers():
        raise SystemExit("needs ffmpeg and asterisk-core-sounds-*-g722 packages; see --help")
    out, record = Path(args.out), []
    for voice in speakers():
        split = "heldout" if voice.name in args.heldout_speakers else "train"
        folder = out / split / "speech_recorded" / voice.name
        folder.mkdir(parents=True, exist_ok=True)
        kept, long_clips = 0, []
        for path in sorted(voice.rglob("*.g722")):
            x, rate = decode_g722(path)
            if len(x) < args.min_seconds * rate or not np.abs(x).max() > 1e-3:
                continue
            name = "-".join(path.relative_to(voice).with_suffix("").parts)
            y = finish(x, rate)
            sf.write(folder / f"{name}.flac", y, RATE, subtype="PCM_16")
            if len(y) >= EVAL_SECONDS * RATE:
                long_clips.append(folder / f"{name}.flac")
            lang, country, sex, speaker = voice.name.split("_")[:4]
            record.append({"clip": f"{voice.name}/{name}", "split": split, "speaker": speaker, "sex": sex,
                           "language": f"{lang}-{country}", "source": str(path), "licence": LICENCE})  # fmt: skip
            kept += 1
        print(f"{voice.name}: {kept} clips -> {folder}", flush=True)
        if split == "heldout" and args.eval_clips > 0:
            dest = out / "eval_recorded" / "speech" / voice.name
            dest.mkdir(parents=True, exist_ok=True)
            for clip in eval_subset(long_clips, args.eval_clips):
                shutil.copyfile(clip, dest / clip.name)
    (out / "sources_recorded.json").write_text(json.dumps(record, indent=1) + "\n")
    n_held = sum(r["split"] == "heldout" for r in record)
    print(f"{len(record)} recorded clips: {len(record) - n_held} train, {n_held} held out (by speaker)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
