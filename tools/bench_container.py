"""File size of ``prior`` against ``packed`` coding, and entropy-coding throughput, on held-out files.

    python tools/bench_container.py --model runs/img --data data/images/heldout
    python tools/bench_container.py --model runs/audio --prior runs/audio/prior --data data/audio/heldout --quantizers 8

For every file: real ``.vqc`` sizes from ``codec.compress`` in both modes (whole files: header and chunk heads
included), checked to decode to the same tokens; then the range coder alone, timed: encode and decode of the
file's tokens with the file's coder (the integer prior of format version 5, ``codec.bitstream.integer_coding``,
over the same chunks and groups as the file), in tokens per second, in one process and as ``compress`` and
``decompress`` run it with ``--workers`` forked processes (default: one per CPU). ``--compare-float`` also times
the float coder of versions 1-4 (``codec.bitstream.range_coding``) on the same chunks and reports how many more
bits the integer prior's payloads take than the float one's. Targets: prior files at most 75% of packed ones
(issue 5); at least 4,000 tokens/s each way on the CPU with the bundled priors, and at most 2% more bits than the
float prior (issue 13). The load average is recorded: on a shared machine the speeds are noisy.

Prints a table and writes JSON (``--out``, default bench_results/container.json).
"""

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import codec
from codec.bitstream import packing
from codec.bitstream.coders import prior_decoder, prior_encoder
from codec.bitstream.compress import DEFAULT_GROUP
from codec.bitstream.models import default_prior_dir, load_named_prior
from codec.bitstream.parallel import map_groups, work_units
from codec.media.audio_io import is_audio_file
from codec.media.image_io import is_image_file
from prior.checkpoint import check_codec
from prior.layout import raster
from prior.model import TokenPrior


def time_entropy(prior, meta, tokens: torch.Tensor, float_coder: bool = False) -> tuple[float, float, int]:
    """Seconds to range-encode and to range-decode one file's tokens, as compress / decompress chunk them, and the
    payloads' bytes; with the file's coder, or with the float coder of versions 1-4 (``float_coder``)."""
    flat = raster(tokens, meta.residual).numpy()
    layout = prior.layout(meta.token_shape)
    meta = dataclasses.replace(meta, coder=None) if float_coder else meta
    encode, decode = prior_encoder(meta, prior), prior_decoder(meta, prior)  # derives the integer prior once
    enc = dec = 0.0
    size = 0
    for group_chunks in meta.groups():
        starts, chunks = [a for _, a, _ in group_chunks], [flat[a:b] for _, a, b in group_chunks]
        t0 = time.perf_counter()
        payloads = encode(layout, starts, chunks)
        t1 = time.perf_counter()
        back = decode(layout, starts, [len(c) for c in chunks], payloads)
        t2 = time.perf_counter()
        assert all(np.array_equal(x, y) for x, y in zip(back, chunks)), "range coder round trip failed"
        enc, dec, size = enc + t1 - t0, dec + t2 - t1, size + sum(map(len, payloads))
    return enc, dec, size


def time_workers(prior, meta, tokens: torch.Tensor, workers: int) -> tuple[float, float]:
    """Seconds to range-encode and to range-decode one file's tokens as ``compress`` / ``decompress`` do with
    ``workers`` forked processes (``codec.bitstream.parallel``: the chunks cut into runs so every worker gets
    some; the pools' start-up included)."""
    flat = raster(tokens, meta.residual).numpy()
    layout = prior.layout(meta.token_shape)
    encode, decode = prior_encoder(meta, prior), prior_decoder(meta, prior)
    jobs = work_units(list(meta.groups()), workers, lockstep=meta.coder is None)
    t0 = time.perf_counter()
    args = [([a for _, a, _ in job], [flat[a:b] for _, a, b in job]) for job in jobs]
    payloads = list(map_groups(lambda starts, chunks: encode(layout, starts, chunks), args, workers, len(jobs)))
    t1 = time.perf_counter()
    args = [([a for _, a, _ in job], [b - a for _, a, b in job], p) for job, p in zip(jobs, payloads)]
    back = list(map_groups(lambda *a: decode(layout, *a), args, workers, len(jobs)))
    t2 = time.perf_counter()
    got = np.concatenate([t for part in back for t in part])
    assert np.array_equal(got, flat), "range coder round trip failed"
    return t1 - t0, t2 - t1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="codec run directory or bundled name")
    ap.add_argument("--prior", help="prior or context model (default: MODEL/context, else MODEL/prior)")
    ap.add_argument("--data", required=True, help="folder of held-out images or audio")
    ap.add_argument("--quantizers", type=int, help="residual levels to keep (default all)")
    ap.add_argument("--chunk-tokens", type=int, help="tokens per chunk (default: chosen per file)")
    ap.add_argument("--group", type=int, default=DEFAULT_GROUP)
    ap.add_argument("--limit", type=int, help="at most this many files")
    ap.add_argument("--compare-float", action="store_true", help="also time the float coder; compare its bits")
    ap.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="also time coding with this many processes (default: CPUs)"
    )
    ap.add_argument("--out", default="bench_results/container.json")
    args = ap.parse_args(argv)

    model = codec.load(args.model, device="cpu")
    prior_dir = args.prior or default_prior_dir(model)
    if prior_dir is None:
        ap.error("no prior: pass --prior or store one in MODEL/prior")
    prior = load_named_prior(prior_dir)  # a Transformer prior or a context model
    check_codec(prior, codec.model_hash(model), where=str(prior_dir))
    if args.compare_float and not isinstance(prior, TokenPrior):
        ap.error("--compare-float needs a Transformer prior (the float coder of versions 1-4)")
    wanted = is_image_file if model.modality == "image" else is_audio_file
    files = sorted(p for p in Path(args.data).rglob("*") if p.is_file() and wanted(p))[: args.limit]
    if not files:
        ap.error(f"no {model.modality} files under {args.data}")
    opts = dict(num_quantizers=args.quantizers, chunk_tokens=args.chunk_tokens, group=args.group)
    rows = []
    head = f"{'file':32s} {'tokens':>8s} {'packed B':>9s} {'prior B':>9s} {'ratio':>6s} {'bits/tok':>8s} "
    head += f"{'enc tok/s':>9s} {'dec tok/s':>9s} {f'enc x{args.workers}':>9s} {f'dec x{args.workers}':>9s}"
    load = os.getloadavg()
    print(f"codec {args.model}, prior {prior_dir}, torch threads for coding: 1, {platform.processor() or ''}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(head)
    for path in files:
        packed = codec.compress(path, model, prior=None, **opts)
        coded = codec.compress(path, model, prior=prior, **opts)
        out_p, out_c = codec.decompress(packed, model), codec.decompress(coded, model, prior)
        assert torch.equal(out_p.tokens, out_c.tokens), f"{path}: modes decode to different tokens"
        meta = out_c.metadata
        assert meta.coder is not None, "compress wrote a float-coded file"
        enc, dec, size = time_entropy(prior, meta, out_c.tokens)
        p_enc, p_dec = time_workers(prior, meta, out_c.tokens, args.workers)
        n = meta.num_tokens
        row = dict(
            file=path.name,
            tokens=n,
            packed_bytes=len(packed),
            prior_bytes=len(coded),
            ratio=len(coded) / len(packed),
            bits_per_token=len(coded) * 8 / n,
            packed_bits_per_token=packing.bits_per_token(meta.codebook_size),
            encode_tokens_per_s=n / enc,
            decode_tokens_per_s=n / dec,
            workers_encode_tokens_per_s=n / p_enc,
            workers_decode_tokens_per_s=n / p_dec,
            chunks=meta.num_chunks,
            coder=meta.coder,
        )
        if args.compare_float:
            f_enc, f_dec, f_size = time_entropy(prior, meta, out_c.tokens, float_coder=True)
            row.update(float_encode_tokens_per_s=n / f_enc, float_decode_tokens_per_s=n / f_dec)
            row.update(payload_bytes=size, float_payload_bytes=f_size)
        if model.modality == "image":
            row["prior_bpp"] = len(coded) * 8 / (meta.media["height"] * meta.media["width"])
        rows.append(row)
        print(
            f"{path.name[:32]:32s} {n:8d} {len(packed):9d} {len(coded):9d} {row['ratio']:6.3f} "
            f"{row['bits_per_token']:8.3f} {row['encode_tokens_per_s']:9.0f} {row['decode_tokens_per_s']:9.0f} "
            f"{row['workers_encode_tokens_per_s']:9.0f} {row['workers_decode_tokens_per_s']:9.0f}",
            flush=True,
        )
    total_tokens = sum(r["tokens"] for r in rows)
    summary = dict(
        files=len(rows),
        tokens=total_tokens,
        ratio=sum(r["prior_bytes"] for r in rows) / sum(r["packed_bytes"] for r in rows),
        encode_tokens_per_s=total_tokens / sum(r["tokens"] / r["encode_tokens_per_s"] for r in rows),
        decode_tokens_per_s=total_tokens / sum(r["tokens"] / r["decode_tokens_per_s"] for r in rows),
        workers=args.workers,
        workers_encode_tokens_per_s=total_tokens / sum(r["tokens"] / r["workers_encode_tokens_per_s"] for r in rows),
        workers_decode_tokens_per_s=total_tokens / sum(r["tokens"] / r["workers_decode_tokens_per_s"] for r in rows),
        targets=dict(ratio_max=0.75, tokens_per_s_min=4000, integer_extra_bits_max=0.02),
        load_average_start=load,
        load_average_end=os.getloadavg(),
    )
    if args.compare_float:
        summary["integer_extra_bits"] = (
            sum(r["payload_bytes"] for r in rows) / sum(r["float_payload_bytes"] for r in rows) - 1
        )
        for key in ("encode", "decode"):
            summary[f"float_{key}_tokens_per_s"] = total_tokens / sum(
                r["tokens"] / r[f"float_{key}_tokens_per_s"] for r in rows
            )
    print(
        f"{'TOTAL':32s} {total_tokens:8d} {'':9s} {'':9s} {summary['ratio']:6.3f} {'':8s} "
        f"{summary['encode_tokens_per_s']:9.0f} {summary['decode_tokens_per_s']:9.0f} "
        f"{summary['workers_encode_tokens_per_s']:9.0f} {summary['workers_decode_tokens_per_s']:9.0f}"
    )
    if args.compare_float:
        print(
            f"float coder on the same chunks: encode {summary['float_encode_tokens_per_s']:.0f}, decode "
            f"{summary['float_decode_tokens_per_s']:.0f} tok/s; integer payloads "
            f"{100 * summary['integer_extra_bits']:+.3f}% bits"
        )
    end = summary["load_average_end"]
    print(f"load average at end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")
    cfg = prior.config
    result = dict(
        summary=summary,
        rows=rows,
        prior=dict(dataclasses.asdict(cfg), kind=type(prior).__name__, coder=rows[0]["coder"] if rows else None),
        settings=dict(vars(args)),
        torch=torch.__version__,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
