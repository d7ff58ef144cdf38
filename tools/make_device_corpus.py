"""Build the compact training corpus that travels with the working tree to a GPU machine (no network there).

    python tools/make_device_corpus.py --images data/images/device --audio data/audio/train --out .device_data

(``data/images/device`` holding, say, ``photos/`` and ``colour/``: each subfolder keeps its share of the files.)

A GPU machine lent for a few minutes gets the working tree and nothing else (64 MiB in all, the bundled models
included), so the corpus it trains on must be small: ``--image-mb`` of training crops re-encoded as JPEG
(quality 92, no chroma subsampling) and ``--audio-mb`` of training clips as mono FLAC (16 bit, lossless; or, with
``--audio-format vorbis``, Ogg Vorbis at quality 0.6: about 3.5 times the minutes, but Vorbis drops the
near-silent floor that the codec's log-mel loss weighs like any other band, and audio codecs trained on it, whole
or decoder alone, lost on held-out recorded speech: see the README). Files are taken in a fixed order in which
every subfolder keeps its share of the files and, within a subfolder, consecutive picks come from different
sources (photograph, voice or instrument set: the name before the last ``_``), so a small budget still spans the
corpus. Only training files are read: the held-out splits never travel.

Output: ``OUT/images/*.jpg`` and ``OUT/audio/*.flac`` (or ``*.ogg``), plus ``OUT/manifest.json`` (each file's
source).
"""

import argparse
import io
import json
from collections import defaultdict
from pathlib import Path

import soundfile as sf
from PIL import Image

from codec.media.audio_io import is_audio_file
from codec.media.image_io import is_image_file


def round_robin(files: list[Path]) -> list[Path]:
    """Files ordered so that any prefix spans the corpus.

    Each folder keeps its share of the files (a folder with 24% of the files has about 24% of any prefix:
    photographs against synthetic colour images, synthetic speech against recorded voices and music), and
    within a folder consecutive picks come from different sources (the name before the last '_').
    """
    folders: dict[Path, list[Path]] = defaultdict(list)
    for f in sorted(files):
        folders[f.parent].append(f)
    keyed = []
    for folder in sorted(folders):
        groups: dict[str, list[Path]] = defaultdict(list)
        for f in folders[folder]:
            groups[f.stem.rsplit("_", 1)[0]].append(f)
        queues = [groups[k] for k in sorted(groups)]
        inner = [q[i] for i in range(max(len(q) for q in queues)) for q in queues if i < len(q)]
        keyed += [((i + 0.5) / len(inner), str(folder), f) for i, f in enumerate(inner)]
    return [f for _, _, f in sorted(keyed)]


def jpeg_bytes(path: Path) -> bytes:
    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, "JPEG", quality=92, subsampling=0)
    return buf.getvalue()


def audio_bytes(path: Path, fmt: str) -> bytes:
    """The file's channels mixed to mono, as FLAC (16 bit) or Ogg Vorbis (quality 0.6)."""
    y, rate = sf.read(path, dtype="float32", always_2d=True)
    buf = io.BytesIO()
    if fmt == "flac":
        sf.write(buf, y.mean(axis=1), rate, format="FLAC", subtype="PCM_16")
    else:
        sf.write(buf, y.mean(axis=1), rate, format="OGG", subtype="VORBIS", compression_level=0.4)
    return buf.getvalue()


def fill(files: list[Path], encode, out: Path, ext: str, budget: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    used, record = 0, []
    for i, f in enumerate(round_robin(files)):
        data = encode(f)
        if used + len(data) > budget:
            break
        name = f"{i:05d}_{f.stem}{ext}"
        (out / name).write_bytes(data)
        used += len(data)
        record.append({"file": name, "source": str(f)})
    print(f"{out}: {len(record)} files, {used / 2**20:.1f} MiB")
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="image training folder (make_image_corpus.py's train/)")
    ap.add_argument("--audio", required=True, help="audio training folder (make_audio_corpus.py's train/)")
    ap.add_argument("--out", default=".device_data", help="output folder (default .device_data, git-ignored)")
    ap.add_argument("--image-mb", type=float, default=9.0, help="MiB of images (default 9)")
    ap.add_argument("--audio-mb", type=float, default=8.0, help="MiB of audio (default 8)")
    ap.add_argument("--audio-format", choices=("flac", "vorbis"), default="flac", help="audio store (default flac)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    images = [p for p in Path(args.images).rglob("*") if is_image_file(p)]
    audio = [p for p in Path(args.audio).rglob("*") if is_audio_file(p)]
    if not images or not audio:
        raise SystemExit(f"no images under {args.images} or no audio under {args.audio}")
    record = {
        "images": fill(images, jpeg_bytes, out / "images", ".jpg", int(args.image_mb * 2**20)),
        "audio": fill(
            audio,
            lambda f: audio_bytes(f, args.audio_format),
            out / "audio",
            ".flac" if args.audio_format == "flac" else ".ogg",
            int(args.audio_mb * 2**20),
        ),
    }
    (out / "manifest.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
