"""The ``encode``, ``decode`` and ``info`` subcommands of the ``codec`` CLI (see ``codec.cli.main``).

Outputs are written atomically and never overwrite an existing file without ``--force``. A folder given as
input is processed recursively with one progress bar; a file that fails is reported on one line and skipped,
and the command then exits with status 2.
"""

import argparse
import contextlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from codec.cli.common import PROG
from codec.errors import VQCodecError

ENCODE_EXAMPLES = """examples:
  codec encode photo.png -o photo.vqc                          # bundled image model and its prior
  codec encode speech.wav -o speech.vqc --quantizers 2         # audio at 1.5 kbps (2 of 8 levels)
  codec encode photo.png -o photo.vqc --model runs/img --prior runs/img-prior
  codec encode photo.png -o photo.vqc --model runs/img --no-prior   # fixed-width indices, no prior needed
  codec encode photos/ -o compressed/                          # every image and audio file inside, recursively
"""

DECODE_EXAMPLES = """examples:
  codec decode photo.vqc -o photo.png        # output format from the extension
  codec decode photo.vqc -o photo.webp --force
  codec decode speech.vqc -o speech.flac     # at the original's sample rate and channel count
  codec decode compressed/ -o restored/      # every .vqc inside; names and formats from the metadata
  codec decode photo.vqc -o photo.png --model runs/img --prior runs/img-prior
"""

INFO_EXAMPLES = """examples:
  codec info photo.vqc
  codec info speech.vqc --json
"""

_IMAGE_EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
_AUDIO_EXT = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}


def register(subparsers) -> None:
    """Register ``encode``, ``decode`` and ``info``."""
    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "encode",
        help="compress an image or audio file (or a folder of them) into .vqc files",
        description="Compress images (PNG, JPEG, WebP, BMP, TIFF) or audio (WAV, FLAC, OGG, Opus, MP3) into .vqc "
        "files. With a prior the tokens are range coded with its probabilities ('prior' mode); without one they "
        "are bit-packed ('packed' mode). With the default prior (the one stored with the codec) a file is "
        "bit-packed instead whenever that is no larger; a prior named with --prior is always used.",
        epilog=ENCODE_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("input", metavar="INPUT", help="an image or audio file, or a folder (scanned recursively)")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output .vqc file, or folder for a folder input (default: INPUT.vqc beside a file input)",
    )
    p.add_argument(
        "--model",
        metavar="NAME_OR_DIR",
        help="codec run directory or bundled model name (default: the bundled model for the input's modality)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--prior",
        metavar="DIR",
        help="prior run directory, always used (default: the one stored with the codec, or packed if smaller)",
    )
    group.add_argument("--no-prior", action="store_true", help="bit-pack the tokens; no prior needed to decode")
    p.add_argument("--quantizers", type=int, metavar="N", help="residual levels to keep (fewer = smaller files)")
    p.add_argument("--device", help="cpu or cuda for the codec (default: cuda when available)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=cmd_encode)

    p = subparsers.add_parser(
        "decode",
        help="decompress .vqc files back to images or audio",
        description="Decode .vqc files. The output format follows the output's extension; for a folder, or with "
        "no -o, the original file type recorded in the file. The codec and prior are the ones the file names "
        "(bundled models or the directories it was made with) unless --model / --prior are given.",
        epilog=DECODE_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("input", metavar="IN", help="a .vqc file, or a folder of them (scanned recursively)")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        help="output file (its extension picks the format) or "
        "folder (default: IN without .vqc, with the original's extension)",
    )
    p.add_argument("--model", metavar="NAME_OR_DIR", help="the codec the file was made with (default: as recorded)")
    p.add_argument("--prior", metavar="DIR", help="the prior the file was made with (default: as recorded)")
    p.add_argument("--device", help="cpu or cuda for the codec (default: cuda when available)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=cmd_decode)

    p = subparsers.add_parser(
        "info",
        help="describe a .vqc file: modality, sizes, bitrate, models, coding mode",
        description="Print what a .vqc file holds, from its checked header (the chunks are not decoded).",
        epilog=INFO_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("input", metavar="IN", help="a .vqc file")
    p.add_argument("--json", action="store_true", help="print the metadata and sizes as one JSON object")
    p.set_defaults(func=cmd_info)


# ------------------------------------------------------------------------------------------- helpers
def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)


def _media_files(root: Path) -> list[Path]:
    """Image and audio files under ``root`` (recursively, hidden ones left out, as training finds them)."""
    from codec.media import find_files

    found = []
    for modality in ("image", "audio"):
        with contextlib.suppress(ValueError):  # none of this kind
            found += find_files(root, modality)
    return [root / name for name in sorted(found)]


def _run_many(jobs: list[tuple[Path, Path]], work, desc: str) -> int:
    """Run work(src, dst) for every job with one progress bar; failures are reported and skipped."""
    from tqdm import tqdm

    failed = 0
    with tqdm(jobs, desc=desc, unit="file", disable=len(jobs) < 2) as bar:
        for src, dst in bar:
            try:
                work(src, dst)
            except (VQCodecError, ValueError, OSError) as e:
                failed += 1
                tqdm.write(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
    if failed:
        print(f"{PROG}: {failed} of {len(jobs)} files failed", file=sys.stderr)
        return 2
    return 0


class _Models:
    """Codecs and priors loaded once per name for a run over many files."""

    def __init__(self, device):
        self.device, self.codecs, self.priors = device, {}, {}

    def codec(self, name):
        if name not in self.codecs:
            from codec.core.checkpoint import load

            self.codecs[name] = load(name, device=self.device)
        return self.codecs[name]

    def prior(self, name):
        """A prior by directory, on the CPU (compress / decompress check that it fits the codec and the file)."""
        from codec.bitstream.models import load_named_prior

        if name not in self.priors:
            self.priors[name] = load_named_prior(name)
        return self.priors[name]


# -------------------------------------------------------------------------------------------- encode
def cmd_encode(args) -> int:
    from codec.bitstream.compress import compress
    from codec.media import is_audio_file
    from codec.store.files import atomic_write_bytes

    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    models = _Models(args.device)

    def work(path: Path, out: Path) -> None:
        _check_output(out, args.force)
        modality = "audio" if is_audio_file(path) else "image"
        model = models.codec(args.model or modality)
        prior = None if args.no_prior else models.prior(args.prior) if args.prior else "auto"
        data = compress(path, model, prior, num_quantizers=args.quantizers, progress=single)
        atomic_write_bytes(out, data)
        if single:
            print(f"{path} -> {out}: {len(data)} bytes")

    if src.is_dir():
        if not args.output:
            raise ValueError("a folder input needs -o OUTPUT_FOLDER")
        files = _media_files(src)
        if not files:
            raise ValueError(f"{src}: no image or audio files inside")
        single = False
        out_root = Path(args.output)
        return _run_many([(f, out_root / (str(f.relative_to(src)) + ".vqc")) for f in files], work, "encode")
    single = True
    work(src, Path(args.output) if args.output else src.with_name(src.name + ".vqc"))
    return 0


# -------------------------------------------------------------------------------------------- decode
def default_extension(meta) -> str:
    fmt = meta.media.get("format")
    if meta.modality == "image":
        return _IMAGE_EXT.get(fmt, ".png")
    if fmt == "OGG":
        return ".opus" if meta.media.get("subtype") == "OPUS" else ".ogg"
    return _AUDIO_EXT.get(fmt, ".wav")


def default_output(vqc: Path, meta) -> Path:
    """IN without .vqc if what remains names a media file of the right kind, else with the original's extension."""
    from codec.media import is_audio_file, is_image_file

    stem = vqc.with_suffix("") if vqc.suffix.lower() == ".vqc" else vqc
    ok = is_image_file(stem) if meta.modality == "image" else is_audio_file(stem)
    return stem if ok and stem != vqc else stem.with_name(stem.name + default_extension(meta))


def cmd_decode(args) -> int:
    from codec.bitstream.decompress import decompress, read_info
    from codec.media import is_audio_file, is_image_file, write_audio, write_image

    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    models = _Models(args.device)

    def work(path: Path, out: Path | None, default_base: Path | None = None) -> None:
        """Decode ``path`` to ``out``, or to ``default_output(default_base or path)`` when out is None."""
        meta = read_info(path)
        out = out or default_output(default_base or path, meta)
        if meta.modality == "image" and not is_image_file(out) or meta.modality == "audio" and not is_audio_file(out):
            raise ValueError(f"{out}: the extension is not a supported {meta.modality} format for this {meta.modality}")
        _check_output(out, args.force)
        model = models.codec(args.model) if args.model else None
        prior = models.prior(args.prior) if args.prior else None
        result = decompress(path, model, prior, device=args.device, progress=single)
        if meta.modality == "image":
            write_image(out, result.data)
        else:
            write_audio(out, result.data, result.sample_rate)
        if single:
            print(f"{path} -> {out}")

    if src.is_dir():
        if not args.output:
            raise ValueError("a folder input needs -o OUTPUT_FOLDER")
        files = sorted(p for p in src.rglob("*.vqc") if p.is_file())
        if not files:
            raise ValueError(f"{src}: no .vqc files inside")
        single = False
        out_root = Path(args.output)
        return _run_many(
            [(f, None) for f in files], lambda path, _: work(path, None, out_root / path.relative_to(src)), "decode"
        )
    single = True
    work(src, Path(args.output) if args.output else None)
    return 0


# ---------------------------------------------------------------------------------------------- info
def describe(path: Path, meta) -> dict:
    """Sizes and rates of a .vqc file from its metadata and its size on disk."""
    from codec.bitstream.packing import bits_per_token

    size = os.path.getsize(path)
    m = meta.media
    info = {"file": str(path), "bytes": size, "tokens": meta.num_tokens, "chunks": meta.num_chunks}
    info["packed_bits_per_token"] = bits_per_token(meta.codebook_size)
    info["bits_per_token"] = size * 8 / meta.num_tokens
    if meta.modality == "image":
        info["bpp"] = size * 8 / (m["height"] * m["width"])
    else:
        info["seconds"] = m["orig_frames"] / m["orig_sample_rate"]
        info["kbps"] = size * 8 / info["seconds"] / 1000
    return info


def cmd_info(args) -> int:
    from codec.bitstream.container import read_info  # no torch: info starts fast

    path = Path(args.input)
    meta = read_info(path)
    info = describe(path, meta)
    if args.json:
        print(json.dumps({**info, "metadata": asdict(meta)}, sort_keys=True))
        return 0
    m = meta.media
    if meta.modality == "image":
        what = f"image {m['channels']}x{m['height']}x{m['width']} ({m['format'] or 'tensor'})"
        rate = f"{info['bpp']:.4f} bpp"
    else:
        what = (
            f"audio {m['orig_channels']} ch, {info['seconds']:.2f} s at {m['orig_sample_rate']} Hz "
            f"({m['format'] or 'tensor'}; coded at {m['sample_rate']} Hz, {m['channels']} ch)"
        )
        rate = f"{info['kbps']:.3f} kbps"
    lines = [
        f"file:     {path} ({info['bytes']} bytes)",
        f"content:  {what}",
        f"rate:     {rate}, {info['bits_per_token']:.3f} bits/token ({info['packed_bits_per_token']} packed)",
        f"tokens:   {meta.token_shape} = {meta.num_tokens}, codebook {meta.codebook_size}",
        f"coding:   {meta.mode}, {meta.num_chunks} chunks of up to {meta.chunk_tokens} tokens"
        + (f", decoded {meta.group} at a time" if meta.mode == "prior" else ""),
        f"codec:    {meta.codec['name']} ({meta.codec['hash'][:12]})",
    ]
    if meta.prior:
        lines.append(f"prior:    {meta.prior['name']} ({meta.prior['hash'][:12]})")
    print("\n".join(lines))
    return 0
