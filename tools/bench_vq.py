"""One EMA-VQ training step, vqcodec's VectorQuantizer against vector-quantize-pytorch's VectorQuantize.

Matching settings: EMA codebook, decay 0.99, k-means init, dead-code threshold 2, commitment 0.25, plain
straight-through estimator (the peer's rotation trick off). Both see the same inputs:

- time per step (forward, backward, EMA update) on N x D inputs with K codes, median and quantiles;
- codebook usage after ``--steps`` steps on a Gaussian mixture: the fraction of codes chosen at least once
  for a held-out sample of the same mixture (eval mode), plus the perplexity of that assignment;
- a breakdown of our step (search alone, EMA statistics alone) that decides whether fusing the statistics
  into the search kernel would pay.

    python tools/bench_vq.py                       # N=16384, D=64, K=1024, 200 steps, 2 threads
    python tools/bench_vq.py --steps 20 --n 4096   # quick

Prints a table and writes JSON (default bench_results/bench_vq.json).
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from codec.core.quantizer import VectorQuantizer
from kernels import nearest_code


def _mixture_sampler(d: int, clusters: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centers = 4.0 * torch.randn(clusters, d, generator=g)
    scales = 0.3 + torch.rand(clusters, 1, generator=g)

    def sample(n: int) -> torch.Tensor:
        which = torch.randint(0, clusters, (n,), generator=g)
        return centers[which] + scales[which] * torch.randn(n, d, generator=g)

    return sample


def _ours(d, k):
    vq = VectorQuantizer(d, k, decay=0.99, dead_code_threshold=2.0, kmeans_init=True, commitment_weight=0.25)

    def step(z):
        out = vq(z)
        return out.quantized, out.loss

    def assign(z):
        vq.eval()
        idx = vq(z).indices
        vq.train()
        return idx

    return vq, step, assign


def _peer(d, k):
    from vector_quantize_pytorch import VectorQuantize

    vq = VectorQuantize(
        dim=d,
        codebook_size=k,
        decay=0.99,
        kmeans_init=True,
        kmeans_iters=10,
        threshold_ema_dead_code=2,
        commitment_weight=0.25,
        rotation_trick=False,
    )

    def step(z):
        quantized, _, loss = vq(z[None])
        return quantized[0], loss

    def assign(z):
        vq.eval()
        with torch.no_grad():
            _, idx, _ = vq(z[None])
        vq.train()
        return idx[0]

    return vq, step, assign


def _run(name, factory, args, sample, held_out):
    torch.manual_seed(args.seed)
    _, step, assign = factory(args.d, args.k)
    times = []
    for i in range(args.steps):
        z = sample(args.n).requires_grad_(True)
        t0 = time.perf_counter()
        quantized, loss = step(z)
        (quantized.square().mean() + loss).backward()
        times.append(time.perf_counter() - t0)
        if i == 0:
            first = times[-1]
    timed = times[1:] or times  # the first step also runs k-means: reported apart
    idx = assign(held_out).reshape(-1)
    counts = torch.bincount(idx, minlength=args.k).float()
    p = counts / counts.sum()
    q = statistics.quantiles(timed, n=10) if len(timed) > 1 else [timed[0]] * 9
    return {
        "name": name,
        "first_step_ms": 1e3 * first,
        "median_ms": 1e3 * statistics.median(timed),
        "p20_ms": 1e3 * q[1],
        "p80_ms": 1e3 * q[7],
        "usage": float((counts > 0).float().mean()),
        "perplexity": float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum())),
    }


def _breakdown(args, sample):
    """Median ms of our search alone and of the EMA statistics alone, on one batch."""
    z = sample(args.n)
    codebook = z[torch.randperm(args.n)[: args.k]].clone()
    idx, _ = nearest_code(z, codebook)

    def stats():
        torch.bincount(idx, minlength=args.k)
        torch.zeros(args.k, args.d).index_add_(0, idx, z)

    out = {}
    for label, fn in (("search", lambda: nearest_code(z, codebook)), ("ema_stats", stats)):
        fn()
        ts = []
        for _ in range(20):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[label + "_ms"] = 1e3 * statistics.median(ts)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16384, help="vectors per step")
    ap.add_argument("--d", type=int, default=64, help="vector size")
    ap.add_argument("--k", type=int, default=1024, help="codebook size")
    ap.add_argument("--steps", type=int, default=200, help="training steps per quantizer")
    ap.add_argument("--clusters", type=int, default=512, help="Gaussian mixture components")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="bench_results/bench_vq.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    for name, factory in (("vqcodec VectorQuantizer", _ours), ("vector-quantize-pytorch", _peer)):
        sample = _mixture_sampler(args.d, args.clusters, seed=args.seed)  # same data stream for both
        held_out = _mixture_sampler(args.d, args.clusters, seed=args.seed)(4 * args.n)
        try:
            rows.append(_run(name, factory, args, sample, held_out))
        except ImportError as e:
            rows.append({"name": name, "error": f"unavailable: {e}"})
    breakdown = _breakdown(args, _mixture_sampler(args.d, args.clusters, seed=args.seed))

    print(f"EMA VQ step: N={args.n} D={args.d} K={args.k}, {args.steps} steps, {args.threads} threads, CPU")
    print(f"{'quantizer':<26}{'median ms':>10}{'p20':>9}{'p80':>9}{'1st step':>10}{'usage':>8}{'perplex':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<26}{r['error']}")
            continue
        print(
            f"{r['name']:<26}{r['median_ms']:>10.1f}{r['p20_ms']:>9.1f}{r['p80_ms']:>9.1f}"
            f"{r['first_step_ms']:>10.1f}{r['usage']:>8.3f}{r['perplexity']:>9.1f}"
        )
    print(
        f"our step breakdown: search {breakdown['search_ms']:.1f} ms, "
        f"EMA statistics (bincount + index_add) {breakdown['ema_stats_ms']:.1f} ms"
    )
    ours, peer = rows[0], rows[1]
    verdicts = {}
    if "error" not in peer:
        verdicts["no_slower"] = ours["median_ms"] <= peer["median_ms"]
        verdicts["usage_at_least_as_high"] = ours["usage"] >= peer["usage"]
        print(
            f"target no slower: {'PASS' if verdicts['no_slower'] else 'FAIL'} "
            f"({peer['median_ms'] / ours['median_ms']:.2f}x)"
        )
        print(f"target usage at least as high: {'PASS' if verdicts['usage_at_least_as_high'] else 'FAIL'}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "machine": platform.machine(), "args": vars(args)}
    path.write_text(json.dumps({"meta": meta, "rows": rows, "breakdown": breakdown, "targets": verdicts}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
