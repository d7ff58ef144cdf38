"""File sizes and times of the entropy models on held-out files: the same inputs bit-packed, coded with the
Transformer prior (``integer-1``) and with the context model (``context-1``), each decoded back to the same tokens.

    python tools/compare_coders.py --model image --data heldout_photos/ --quantizers 6 2
    python tools/compare_coders.py --model audio --data speech/ --quantizers 8

Times are whole ``compress`` / ``decompress`` calls in this process, one worker, torch on one thread. Prints one
JSON line per level count and writes them all to ``--out``.
"""

import argparse
import json
import time
from pathlib import Path

import torch

import codec
from codec.media.audio_io import is_audio_file
from codec.media.image_io import is_image_file


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="codec run directory or bundled name (with prior/ and context/)")
    ap.add_argument("--data", required=True, help="folder of held-out images or audio")
    ap.add_argument("--quantizers", type=int, nargs="+", default=[None], help="level counts (default all)")
    ap.add_argument("--prior", help="Transformer prior (default MODEL/prior)")
    ap.add_argument("--context", help="context model (default MODEL/context)")
    ap.add_argument("--out", default="bench_results/compare_coders.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = codec.load(args.model, device="cpu")
    prior, context = (
        args.prior or codec.model_dir(args.model) / "prior",
        args.context or codec.model_dir(args.model) / "context",
    )
    wanted = is_image_file if model.modality == "image" else is_audio_file
    files = sorted(p for p in Path(args.data).rglob("*") if p.is_file() and wanted(p))
    if not files:
        ap.error(f"no {model.modality} files under {args.data}")
    rows = []
    for n in args.quantizers:
        row = dict(levels=n, files=len(files), packed=0, transformer=0, context=0)
        times = dict(transformer_encode_s=0.0, transformer_decode_s=0.0, context_encode_s=0.0, context_decode_s=0.0)
        for f in files:
            packed = codec.compress(f, model, prior=None, num_quantizers=n)
            want = codec.decompress(packed, model).tokens
            row["packed"] += len(packed)
            for name, entropy_model in (("transformer", prior), ("context", context)):
                t0 = time.perf_counter()
                data = codec.compress(f, model, prior=entropy_model, num_quantizers=n, workers=1)
                t1 = time.perf_counter()
                out = codec.decompress(data, model, workers=1)
                times[f"{name}_encode_s"] += t1 - t0
                times[f"{name}_decode_s"] += time.perf_counter() - t1
                assert torch.equal(out.tokens, want), f"{f}: {name} decoded other tokens"
                row[name] += len(data)
        row.update({k: round(v, 2) for k, v in times.items()})
        row["transformer_ratio"] = round(row["transformer"] / row["packed"], 4)
        row["context_ratio"] = round(row["context"] / row["packed"], 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(model=args.model, data=args.data, rows=rows), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
