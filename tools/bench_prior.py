"""Speed of the TokenPrior: sampling with and without the key/value cache, and teacher-forced scoring.

- sampling: tokens/s for ``prior.sample`` of one image-shaped grid of ``--lengths`` tokens (256 = 16 x 16,
  1024 = 32 x 32), with the cache (incremental decoding) and without it (the whole prefix recomputed at every
  step), on the CPU and on CUDA when present. Both must give the same tokens for the same seed (checked).
  Target: the cache at least 5x faster than recomputation at 1024 tokens;
- scoring: tokens/s for ``token_bits`` (teacher forced, chunked cached path) on a batch of ``--score-batch``
  grids, and for ``incremental_logits`` on one grid (one token at a time: the entropy coder's path);
- held-out bits/token of trained priors (``--prior DIR --tokens DIR``, repeatable, in pairs) against log2 K, on
  the items their training held out (same split: ``val_fraction`` from the run's checkpoint).

Weights are random (training does not change speed). Times are medians of ``--reps`` runs after one warm-up
(recomputation: ``--uncached-reps`` runs, no warm-up; it is slow). The model is ``PriorConfig()`` unless
``--dim`` / ``--depth`` / ``--heads`` / ``--context`` / ``--codebook-size`` say otherwise.

    python tools/bench_prior.py                                   # defaults: 256 and 1024 tokens
    python tools/bench_prior.py --dim 64 --depth 2 --lengths 64 256 --reps 2
    python tools/bench_prior.py --prior priors/images --tokens tokens/images --lengths 256

Prints a table and writes JSON (default bench_results/bench_prior.json).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

from prior import PriorConfig, TokenPrior


def fatal(msg: str) -> None:
    print(f"bench_prior: {msg}", file=sys.stderr)
    sys.exit(1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, reps: int, warmup: bool = True) -> tuple[float, object]:
    """Median seconds of ``fn()`` over ``reps`` runs (after one warm-up run), and its last result."""
    if warmup:
        fn()
        _sync(device)
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def grid_shape(n: int) -> tuple[int, int]:
    """An (h, w) token grid of n tokens, as square as n allows."""
    h = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return (h, n // h)


def speed_rows(prior: TokenPrior, device: torch.device, args) -> list[dict]:
    rows = []
    K = prior.config.codebook_size
    for n in args.lengths:
        shape = grid_shape(n)
        sample = partial(prior.sample, args.batch, shape, seed=0, device=device)
        cached_s, cached = _timed(partial(sample, use_cache=True), device, args.reps)
        row = {"device": device.type, "tokens": n, "shape": list(shape), "batch": args.batch}
        row["cached_s"], row["cached_tok_s"] = cached_s, args.batch * n / cached_s
        if n <= args.max_uncached:
            uncached_s, uncached = _timed(partial(sample, use_cache=False), device, args.uncached_reps, warmup=False)
            row["uncached_s"], row["uncached_tok_s"] = uncached_s, args.batch * n / uncached_s
            row["speedup"] = uncached_s / cached_s
            row["same_tokens"] = bool(torch.equal(cached, uncached))
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, K, (args.score_batch, *shape), generator=g).to(device)
        score_s, _ = _timed(partial(prior.token_bits, tokens), device, args.reps)
        row["score_batch"], row["score_tok_s"] = args.score_batch, args.score_batch * n / score_s
        incremental_s, _ = _timed(partial(prior.incremental_logits, tokens[:1]), device, args.reps)
        row["incremental_tok_s"] = n / incremental_s
        rows.append(row)
        _print_row(row)
    return rows


def _print_header(cfg: PriorConfig, params: int, args) -> None:
    print(
        f"prior: dim {cfg.dim}, depth {cfg.depth}, heads {cfg.heads}, context {cfg.context}, K {cfg.codebook_size}, "
        f"{params / 1e6:.2f}M params; sampling batch {args.batch}, scoring batch {args.score_batch}; "
        f"median of {args.reps} (uncached: {args.uncached_reps})"
    )
    print(
        f"{'device':<7}{'tokens':>7}{'cached tok/s':>14}{'uncached tok/s':>16}{'speedup':>9}{'same':>6}"
        f"{'score tok/s':>13}{'incremental tok/s':>19}"
    )


def _print_row(r: dict) -> None:
    unc = f"{r['uncached_tok_s']:>16.1f}{r['speedup']:>8.1f}x{str(r['same_tokens']):>6}" if "speedup" in r else ""
    unc = unc or f"{'skipped':>16}{'':>9}{'':>6}"
    print(
        f"{r['device']:<7}{r['tokens']:>7}{r['cached_tok_s']:>14.1f}{unc}{r['score_tok_s']:>13.0f}"
        f"{r['incremental_tok_s']:>19.1f}",
        flush=True,
    )


def held_out_rows(pairs: list[tuple[str, str]]) -> list[dict]:
    """Bits/token of each trained prior on the whole items its training held out, against log2 K."""
    import prior as prior_pkg
    from codec.train.data import split_files
    from codec.train.state import STATE_NAME, read_checkpoint_meta
    from prior.data import load_tokens
    from prior.train import TrainPriorConfig

    rows = []
    for prior_dir, tokens_dir in pairs:
        p = prior_pkg.load(prior_dir, device="cpu")
        items = load_tokens(tokens_dir)
        val_fraction = TrainPriorConfig().val_fraction
        if (Path(prior_dir) / STATE_NAME).exists():
            val_fraction = read_checkpoint_meta(prior_dir)["train_config"]["val_fraction"]
        _, held_out = split_files(items.names, val_fraction)
        by_name = dict(zip(items.names, items.tokens))
        bits = count = 0.0
        for name in held_out:
            t = by_name[name][None]
            bits, count = bits + float(p.token_bits(t).sum()), count + t.numel()
        log2_k = math.log2(p.config.codebook_size)
        row = {"prior": prior_dir, "tokens": tokens_dir, "held_out_items": len(held_out), "held_out_tokens": count}
        row.update(bits_per_token=bits / max(count, 1), log2_K=log2_k, ratio=bits / max(count, 1) / log2_k)
        print(
            f"{prior_dir}: held-out {row['bits_per_token']:.4f} bits/token on {len(held_out)} items ({int(count)} "
            f"tokens) vs log2 K = {log2_k:g} ({100 * row['ratio']:.1f}%)"
        )
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CPU, plus CUDA if any")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (torch.set_num_threads)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024], help="tokens per sampled grid")
    ap.add_argument("--batch", type=int, default=1, help="grids sampled at once")
    ap.add_argument("--score-batch", type=int, default=8, help="grids scored at once (teacher forced)")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per measurement (median reported)")
    ap.add_argument("--uncached-reps", type=int, default=1, help="timed runs of sampling without the cache")
    ap.add_argument("--max-uncached", type=int, default=4096, help="skip recomputation above this many tokens")
    defaults = PriorConfig()
    ap.add_argument("--dim", type=int, default=defaults.dim)
    ap.add_argument("--depth", type=int, default=defaults.depth)
    ap.add_argument("--heads", type=int, default=defaults.heads)
    ap.add_argument("--context", type=int, default=defaults.context)
    ap.add_argument("--codebook-size", type=int, default=defaults.codebook_size)
    ap.add_argument("--prior", action="append", default=[], help="trained prior run directory (with --tokens)")
    ap.add_argument("--tokens", action="append", default=[], help="its tokens directory (one per --prior)")
    ap.add_argument("--json", default="bench_results/bench_prior.json", help="where to write the results")
    args = ap.parse_args(argv)
    if min(args.threads, args.reps, args.uncached_reps, args.batch, args.score_batch, *args.lengths) < 1:
        fatal("--threads, --reps, --uncached-reps, --batch, --score-batch and --lengths must be >= 1")
    if len(args.prior) != len(args.tokens):
        fatal("give one --tokens directory per --prior")
    if args.device == "cuda" and not torch.cuda.is_available():
        fatal("--device cuda given but no CUDA device is available")
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))

    cfg = PriorConfig(
        dim=args.dim, depth=args.depth, heads=args.heads, context=args.context, codebook_size=args.codebook_size
    )
    torch.manual_seed(0)
    model = TokenPrior(cfg).eval()
    load_before = os.getloadavg()
    _print_header(cfg, sum(p.numel() for p in model.parameters()), args)
    rows = []
    for device in devices:
        rows += speed_rows(model.to(device), device, args)
    load_after = os.getloadavg()
    targets = {}
    for r in rows:
        if r["tokens"] == 1024 and "speedup" in r:
            targets[r["device"]] = {"speedup_1024": r["speedup"], "pass": r["speedup"] >= 5.0}
            verdict = "PASS" if r["speedup"] >= 5.0 else "FAIL"
            print(
                f"target {r['device']}: cache >= 5x faster than recomputation at 1024 tokens: {verdict} "
                f"({r['speedup']:.1f}x)"
            )
    held_out = held_out_rows(list(zip(args.prior, args.tokens)))
    if not held_out:
        print("held-out bits/token: no trained priors given (--prior DIR --tokens DIR)")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}; {args.threads} torch threads")

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "prior_config": {k: getattr(cfg, k) for k in ("dim", "depth", "heads", "context", "codebook_size")},
        "args": vars(args),
    }
    result = {"meta": meta, "speed": rows, "targets": targets, "held_out": held_out}
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
