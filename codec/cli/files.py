"""The ``encode`` and ``decode`` subcommands of the ``codec`` CLI (see ``codec.cli.main``; ``info`` is in ``info``).

Outputs are written atomically and never overwrite an existing file without ``--force``. Each file gets a report
line on stdout (sizes, rate, levels); a folder is processed recursively, with one summary line at the end, and a
file that fails is reported on one line and skipped (the command then exits with status 2). Progress bars appear
only on a terminal; ``--quiet`` leaves errors and warnings only.
"""

import argparse
import collections
import sys
from pathlib import Path

from codec.cli.common import (
    PROG,
    add_quiet,
    bitrate,
    fatal,
    margin_pixels,
    plural,
    positive_float,
    positive_int,
    refine_steps,
    report,
    show_progress,
)
from codec.core.windows import IMAGE_MARGIN
from codec.errors import VQCodecError

ENCODE_EXAMPLES = """examples:
  codec encode photo.png                                       # photo.png.vqc: bundled image model and its prior
  codec encode photo.png -o photo.vqc --bpp 0.3                # the most residual levels within 0.3 bits/pixel
  codec encode speech.wav -o speech.vqc --bitrate 3kbps        # the most levels within 3 kbps (or 3k, 3000)
  codec encode speech.wav -o speech.vqc --quantizers 2         # or the number of residual levels itself
  codec encode photo.png -o photo.vqc --model runs/img --prior runs/img/prior
  codec encode photo.png -o photo.vqc --prior image/prior      # the bundled Transformer instead of image/context
  codec encode photo.png -o photo.vqc --model runs/img --no-prior   # fixed-width indices, no prior needed
  codec encode photos/ -o compressed/ --quiet                  # every image and audio file inside, recursively

--bitrate and --bpp count the tokens bit-packed (levels x ceil(log2 K) bits per frame or per f x f pixels); the
prior makes files smaller, the header (about 0.25 KB) larger. With --fit coded they keep the most levels whose real
file is within the rate instead. In a folder each applies to its kind of file.
"""

DECODE_EXAMPLES = """examples:
  codec decode photo.vqc -o photo.png        # output format from the extension; alpha kept in PNG, WebP, TIFF
  codec decode photo.vqc -o photo.webp --force
  codec decode speech.vqc -o speech.flac     # at the original's sample rate and channel count
  codec decode compressed/ -o restored/      # every .vqc inside; names and formats from the metadata
  codec decode photo.vqc -o photo.png --model runs/img --prior runs/img-prior
"""

_IMAGE_EXT = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
_AUDIO_EXT = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3", "AIFF": ".aiff"}
_MODE_WORDS = {"prior": "prior-coded", "packed": "bit-packed"}
_DEVICE_HELP = "cpu, cuda or cuda:N for the codec (default: cuda when available)"


def register(subparsers) -> None:
    """Register ``encode`` and ``decode``."""
    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "encode",
        help="compress an image or audio file (or a folder of them) into .vqc files",
        description="Compress images (PNG, JPEG, WebP, BMP, TIFF, GIF) or audio (WAV, FLAC, OGG, Opus, MP3, AIFF) "
        "into .vqc files. With an entropy model the tokens are range coded with its probabilities ('prior' mode); "
        "without one they are bit-packed ('packed' mode). The default is the codec's context model "
        "(RUN_DIR/context, fast), else its Transformer prior (RUN_DIR/prior). With the default a file is "
        "bit-packed instead whenever that is no larger; a prior named with --prior is always used. An image's "
        "alpha channel is kept losslessly beside its colour tokens.",
        epilog=ENCODE_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("input", metavar="INPUT", help="an image or audio file, or a folder (scanned recursively)")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output .vqc file, or folder (default: INPUT.vqc beside a file input; a folder input needs one)",
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
        help="entropy model, always used: a prior or context model directory, or a bundled name such as image/prior "
        "(default: the codec's context model, else its prior; packed if smaller)",
    )
    group.add_argument("--no-prior", action="store_true", help="bit-pack the tokens; no prior needed to decode")
    p.add_argument(
        "--bitrate",
        type=bitrate,
        metavar="RATE",
        help="audio: the most residual levels whose bit-packed rate is at most RATE (3kbps, 3k or 3000 bits/s; "
        "the lowest level when even that is above)",
    )
    p.add_argument("--bpp", type=positive_float, metavar="BPP", help="images: the same in bits per pixel")
    p.add_argument(
        "--quantizers", type=positive_int, metavar="N", help="residual levels to keep, instead of --bitrate / --bpp"
    )
    p.add_argument(
        "--fit",
        choices=("packed", "coded"),
        default="packed",
        help="how --bitrate / --bpp choose the levels: by their bit-packed rate (default; the same for any content) "
        "or 'coded': the most levels whose real file, header included, is within the rate (codes each further "
        "level count in turn; slower)",
    )
    p.add_argument(
        "--margin",
        type=margin_pixels,
        default=IMAGE_MARGIN,
        metavar="PX",
        help="images: code at least PX pixels of replicated edge around the image, so its edges come out as well as "
        f"its interior (default {IMAGE_MARGIN}); 0 codes the grid of the image alone, as model.encode(x) makes it",
    )
    p.add_argument(
        "--refine",
        type=refine_steps,
        default=0,
        metavar="STEPS",
        help="search STEPS steps for tokens that decode closer to the input (images 30: +0.4 to +1.5 dB; audio "
        "20 to 40: PESQ-WB +0.4 on speech; each step costs a decoder pass forward and back; decoding is "
        "unchanged). Default 0",
    )
    p.add_argument("--device", help=_DEVICE_HELP)
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_quiet(p)
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
    p.add_argument("--device", help=_DEVICE_HELP)
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_quiet(p)
    p.set_defaults(func=cmd_decode)


# ------------------------------------------------------------------------------------------- helpers
def _about(e: Exception, path: Path, out: Path | None = None) -> str:
    """An error's message on one line, naming the file it is about (``path`` unless it names ``out`` already)."""
    msg = " ".join(str(e).split())
    return msg if str(path) in msg or (out is not None and str(out) in msg) else f"{path}: {msg}"


def _run_one(path: Path, work, out: Path | None, *args) -> int:
    """work(path, out, *args) for a single file; its error, naming the file, is the command's one line."""
    try:
        work(path, out, *args)
    except (VQCodecError, ValueError, OSError) as e:
        fatal(_about(e, path, out))
    return 0


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)


def _media_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(image and audio files, the other files) under ``root``: ``visible_files``, recursively with hidden ones
    left out, as training finds them."""
    from codec.media import is_audio_file, is_image_file
    from codec.media.files import visible_files

    media, others = [], []
    for name in visible_files(root):
        (media if is_image_file(name) or is_audio_file(name) else others).append(root / name)
    return media, others


def _left_out(others: list[Path]) -> str:
    """Files a folder command did not take, counted by extension: "2 .m4a, 1 .txt" ("" when none)."""
    counts = collections.Counter(p.suffix.lower() or "no extension" for p in others)
    return ", ".join(f"{n} {ext}" for ext, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _run_many(args, jobs: list[tuple[Path, Path | None]], work, verb: str) -> int:
    """Run work(src, dst) -> (bytes in, bytes out) for every job with one progress bar (on a terminal); failures
    are reported and skipped; then a summary line."""
    from tqdm import tqdm

    failed, done, size_in, size_out = 0, 0, 0, 0
    with tqdm(jobs, desc=verb, unit="file", disable=len(jobs) < 2 or not show_progress(args)) as bar:
        for src, dst in bar:
            try:
                a, b = work(src, dst)
            except (VQCodecError, ValueError, OSError) as e:
                failed += 1
                tqdm.write(f"{PROG}: error: {_about(e, src, dst)}", file=sys.stderr)
                continue
            done, size_in, size_out = done + 1, size_in + a, size_out + b
    ratio = f" ({size_in / size_out:.1f}:1)" if verb == "encoded" and size_out else ""
    report(args, f"{verb} {done} files: {size_in} bytes in, {size_out} bytes out{ratio}")
    if failed:
        print(f"{PROG}: {failed} of {len(jobs)} files failed", file=sys.stderr)
        return 2
    return 0


def _is_folder(output: str | None) -> bool:
    """-o names a folder: an existing one, or a name ending with a separator."""
    return bool(output) and (Path(output).is_dir() or output.endswith(("/", "\\")))


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
def _level_options(args, path: Path, modality: str, single: bool) -> dict:
    """compress's level options for one file: --quantizers, or --bitrate for audio and --bpp for images (in a
    folder each applies to its kind; a single file given only the other kind's flag is an error)."""
    if args.quantizers is not None:
        if args.fit != "packed":
            raise ValueError("--fit chooses the levels for --bitrate / --bpp; --quantizers sets them itself")
        return {"num_quantizers": args.quantizers}
    if args.fit != "packed" and args.bitrate is None and args.bpp is None:
        raise ValueError(f"--fit {args.fit} chooses the levels for --bitrate / --bpp: give one of them")
    mine, other = ("bitrate", "bpp") if modality == "audio" else ("bpp", "bitrate")
    if single and getattr(args, mine) is None and getattr(args, other) is not None:
        kinds = {"bpp": "images", "bitrate": "audio"}
        raise ValueError(f"{path}: --{other} is for {kinds[other]}; for {kinds[mine]} use --{mine}")
    if getattr(args, mine) is None:
        return {mine: None}
    return {mine: getattr(args, mine), "fit": args.fit}


def _encode_line(src: Path, out: Path, data: bytes, model, options: dict) -> str:
    """'a.png -> a.vqc: 5930 bytes, 0.483 bpp; 3 levels, prior-coded' (with the choice --bitrate / --bpp made)."""
    from codec.bitstream.rate import describe, format_rate, level_rate, read_sizes

    meta, sizes = read_sizes(data)
    info = describe(meta, sizes)
    rate = f"{info['bpp']:.3f} bpp" if meta.modality == "image" else f"{info['kbps']:.2f} kbps"
    n = info["levels"]
    levels = plural(n, "level")
    ((option, value),) = ((k, v) for k, v in options.items() if k != "fit")  # num_quantizers, bitrate or bpp
    if option != "num_quantizers" and value is not None:
        asked = format_rate("audio", value) if option == "bitrate" else f"{value:g}"
        streams = 2 if meta.has_stereo else 1  # mid and side, each at n levels
        packed = format_rate(meta.modality, streams * n * level_rate(model))
        fit = ", --fit coded" if options.get("fit") == "coded" else ""
        mid_side = ", stereo as mid and side" if streams == 2 else ""
        levels += f" for --{option} {asked}{fit} ({packed} bit-packed{mid_side})"
    alpha = ", alpha kept" if meta.has_alpha else ""
    return f"{src} -> {out}: {len(data)} bytes, {rate}; {levels}, {_MODE_WORDS[meta.mode]}{alpha}"


def cmd_encode(args) -> int:
    from codec.bitstream.compress import compress
    from codec.media import is_audio_file
    from codec.store.device import resolve_device
    from codec.store.files import atomic_write_bytes

    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    if args.quantizers is not None and (args.bitrate is not None or args.bpp is not None):
        raise ValueError("--quantizers sets the residual levels itself: give it or --bitrate / --bpp, not both")
    models = _Models(resolve_device(args.device))  # an unknown or missing device: one error, before any file
    single = not src.is_dir()

    def work(path: Path, out: Path) -> tuple[int, int]:
        if out.suffix.lower() != ".vqc":
            hint = f" (decode a .vqc file to get a {out.suffix} file)" if out.suffix else ""
            raise ValueError(f"{out}: encode writes .vqc files; name the output {out.stem}.vqc{hint}")
        _check_output(out, args.force)
        modality = "audio" if is_audio_file(path) else "image"
        model = models.codec(args.model or modality)
        prior = None if args.no_prior else models.prior(args.prior) if args.prior else "auto"
        options = _level_options(args, path, modality, single)
        progress = single and show_progress(args)
        data = compress(path, model, prior, **options, margin=args.margin, refine=args.refine, progress=progress)
        atomic_write_bytes(out, data)
        report(args, _encode_line(path, out, data, model, options))
        return path.stat().st_size, len(data)

    if single:
        name = src.name + ".vqc"
        out = Path(args.output) / name if _is_folder(args.output) else Path(args.output or src.with_name(name))
        return _run_one(src, work, out)
    if not args.output:
        raise ValueError(f"{src}: a folder input needs -o OUTPUT_FOLDER")
    files, skipped = _media_files(src)
    others = _left_out(skipped)
    if not files:
        raise ValueError(f"{src}: no image or audio files inside{f' (left out: {others})' if others else ''}")
    if others:
        report(args, f"left out, of no kind encode reads: {others}")
    out_root = Path(args.output)
    return _run_many(args, [(f, out_root / (str(f.relative_to(src)) + ".vqc")) for f in files], work, "encoded")


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


def _check_format(out: Path, meta) -> None:
    """The output's extension must be a format that can hold the file's content; the error lists them."""
    from codec.media.audio_io import AUDIO_EXTENSIONS
    from codec.media.image_io import IMAGE_EXTENSIONS

    exts = IMAGE_EXTENSIONS if meta.modality == "image" else AUDIO_EXTENSIONS
    if out.suffix.lower() not in exts:
        what = f"{out.suffix} is not" if out.suffix else "a name without an extension is not"
        alpha = " (.png, .webp and .tif keep its alpha)" if meta.has_alpha else ""
        choices = ", ".join(sorted(exts))
        raise ValueError(f"{out}: {what} an {meta.modality} format this can write; use {choices}{alpha}")


def cmd_decode(args) -> int:
    from codec.bitstream.decompress import decompress, read_info
    from codec.media import write_audio, write_image
    from codec.store.device import resolve_device

    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    models = _Models(resolve_device(args.device))
    single = not src.is_dir()

    def work(path: Path, out: Path | None, default_base: Path | None = None) -> tuple[int, int]:
        """Decode ``path`` to ``out``, or to ``default_output(default_base or path)`` when out is None."""
        meta = read_info(path)
        out = out or default_output(default_base or path, meta)
        _check_format(out, meta)
        _check_output(out, args.force)
        model = models.codec(args.model) if args.model else None
        prior = models.prior(args.prior) if args.prior else None
        result = decompress(path, model, prior, device=models.device, progress=single and show_progress(args))
        if meta.modality == "image":
            write_image(out, result.data)
        else:
            write_audio(out, result.data, result.sample_rate)
        report(args, f"{path} -> {out}: {path.stat().st_size} -> {out.stat().st_size} bytes")
        return path.stat().st_size, out.stat().st_size

    if single:
        if _is_folder(args.output):  # a file inside it, named as without -o
            return _run_one(src, work, None, Path(args.output) / src.name)
        return _run_one(src, work, Path(args.output) if args.output else None)
    if not args.output:
        raise ValueError(f"{src}: a folder input needs -o OUTPUT_FOLDER")
    from codec.media.files import visible_files

    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() == ".vqc")
    others = _left_out([src / name for name in visible_files(src) if Path(name).suffix.lower() != ".vqc"])
    if not files:
        raise ValueError(f"{src}: no .vqc files inside{f' (left out: {others})' if others else ''}")
    if others:
        report(args, f"left out, not .vqc: {others}")
    out_root = Path(args.output)
    jobs = [(f, None) for f in files]
    return _run_many(args, jobs, lambda path, _: work(path, None, out_root / path.relative_to(src)), "decoded")
