"""The ``info`` subcommand of the ``codec`` CLI: what a ``.vqc`` file holds, what it costs, how it is coded.

Reads the header only (no torch, no chunk decoded), so it answers at once.
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from codec.cli.common import plural

INFO_EXAMPLES = """examples:
  codec info photo.vqc
  codec info speech.vqc --json
"""


def register(subparsers) -> None:
    """Register ``info``."""
    p = subparsers.add_parser(
        "info",
        help="describe a .vqc file: content, rate, coding mode, models",
        description="Print what a .vqc file holds, from its checked header (the chunks are not decoded): the "
        "content, the rate of the whole file and without its header (bpp for images, kbps for audio), the coding "
        "mode with the bits per coded token against bit-packing, and the models.",
        epilog=INFO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="IN", help="a .vqc file")
    p.add_argument("--json", action="store_true", help="print the metadata and sizes as one JSON object")
    p.set_defaults(func=cmd_info)


def info_lines(path: Path, meta, info: dict) -> list[str]:
    """The text of ``codec info``: what the file holds, its real rate, how it is coded, by which models."""
    m = meta.media
    if meta.modality == "image":
        alpha = " with alpha" if meta.has_alpha else ""
        what = f"image {m['channels']}x{m['height']}x{m['width']}{alpha} ({m['format'] or 'tensor'})"
        if meta.margin:
            what += f", coded inside {plural(meta.margin, 'pixel')} of replicated edge"
        rate = f"{info['bpp']:.4f} bpp; {info['bpp_without_header']:.4f} bpp without the header"
    else:
        coded = "mid and side, each by the 1-channel codec," if meta.has_stereo else plural(m["channels"], "channel")
        what = (
            f"audio, {plural(m['orig_channels'], 'channel')}, {info['seconds']:.2f} s at {m['orig_sample_rate']} Hz "
            f"({m['format'] or 'tensor'}); coded as {coded} at {m['sample_rate']} Hz"
        )
        rate = f"{info['kbps']:.3f} kbps; {info['kbps_without_header']:.3f} kbps without the header"
    bits, packed = info["bits_per_token"], info["packed_bits_per_token"]
    if meta.mode == "prior":
        change = (1 - bits / packed) * 100
        versus = f"{abs(change):.1f}% {'below' if change >= 0 else 'above'} bit-packed ({packed} bits/token)"
        coding = f"prior-coded: {bits:.3f} bits per coded token, {versus}"
    else:
        coding = f"packed: {packed} bits per token (ceil(log2 {meta.codebook_size}))"
    parts = [f"header {info['header_bytes']}"]
    if meta.has_alpha:
        parts.append(f"alpha {info['alpha_bytes']}")
    parts.append(f"chunk heads {info['chunk_header_bytes']}, coded tokens {info['token_bytes']}")
    n = info["levels"]
    lines = [
        f"file:     {path}: {info['bytes']} bytes ({', '.join(parts)})",
        f"content:  {what}",
        f"rate:     {rate}",
        f"coding:   {coding}",
        f"tokens:   {meta.token_shape} = {meta.num_tokens} ({plural(n, 'residual level')}), "
        f"codebook {meta.codebook_size}, {plural(meta.num_chunks, 'chunk')} of up to {meta.chunk_tokens}"
        + (f", decoded {meta.group} at a time" if meta.mode == "prior" and meta.coder != "context-1" else ""),
    ]
    if meta.has_alpha:
        lines.append(f"alpha:    lossless, 8 bits ({m['alpha']}), {info['alpha_bytes']} bytes")
    lines.append(f"codec:    {meta.codec['name']} ({meta.codec['hash'][:12]})")
    if meta.prior:
        coder = f"coder {meta.coder}, exact on any machine" if meta.coder else "float coder of .vqc versions 1-4"
        lines.append(f"prior:    {meta.prior['name']} ({meta.prior['hash'][:12]}); {coder}")
    return lines


def cmd_info(args) -> int:
    from codec.bitstream.rate import (
        describe,
        read_sizes,  # no torch: info starts fast
    )
    from codec.errors import CorruptFileError

    path = Path(args.input)
    try:
        meta, sizes = read_sizes(path)
    except CorruptFileError as e:
        raise CorruptFileError(f"{path}: {e}") from None
    info = {"file": str(path), **describe(meta, sizes)}
    if args.json:
        print(json.dumps({**info, "metadata": asdict(meta)}, sort_keys=True))
    else:
        print("\n".join(info_lines(path, meta, info)))
    return 0
