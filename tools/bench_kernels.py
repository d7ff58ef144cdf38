"""Benchmark of ``kernels.nearest_code`` against full-matrix baselines, faiss and a bare GEMM.

    python tools/bench_kernels.py --quick                 # N in {4096, 65536}, D=64, K=1024, float32
    python tools/bench_kernels.py --device cpu --threads 2  # the full sweep
    python tools/bench_kernels.py --n 65536 --d 256 --k 8192 --dtypes float32 bfloat16 --methods nearest-triton gemm

Sweep: N in {4096, 65536, 1048576}, D in {64, 256}, K in {1024, 8192}, dtypes float32, float16, bfloat16
(faiss runs in float32 only). Methods:

    nearest-torch   kernels.nearest_code(backend="torch"), the chunked PyTorch path
    nearest-triton  kernels.nearest_code(backend="triton"), CUDA only (the Triton interpreter is never timed)
    addmm-argmin    torch.addmm(||c||^2, x, c.T, alpha=-2).argmin(1), builds the full N x K matrix
    cdist-argmin    torch.cdist(x, c).argmin(1), builds the full N x K matrix
    faiss-flat      faiss-cpu IndexFlatL2.search(x, k=1), CPU and float32 only
    gemm            x @ c.T, the roofline: the same flops, no argmin

The three full-matrix methods are skipped ("skipped: needs X GiB") when the N x K float32 matrix would exceed
``--max-matrix-gib``. faiss and triton are optional: without them their rows say "unavailable".

Timing: on CUDA ``triton.testing.do_bench`` (L2 flushed between calls); on the CPU warm-up calls for
0.25 s (at least one, at most 10), then ``--reps`` calls timed with ``time.perf_counter``. Calls over 1 s
get at most 5 timed repeats and calls over 5 s get 3. Reported: median and the 20% / 80% quantiles
(linear interpolation, as do_bench), and GFLOP/s = 2 N K D / median.

Peak extra memory: the most memory the call holds at once beyond its inputs, outputs included (the
(N,) indices and distances of nearest_code, faiss's (N, 1) results, the N x K matrix of the baselines).

- CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
  ``memory_allocated()`` before the call (inputs allocated, warm-up and autotuning done). Exact for
  everything that goes through the PyTorch allocator, which is every method benchmarked on CUDA.
- CPU: PyTorch keeps no allocator statistics, so every CPU case runs in a fresh subprocess and the
  kernel's own high-water mark of the process RSS is used. After the inputs exist and the timed calls
  (warm-up included, so one-time costs such as thread pools are not counted) are done, the worker makes
  glibc return freed memory to the kernel (``mallopt(M_MMAP_THRESHOLD, 64 KiB)``, ``M_TRIM_THRESHOLD``
  0, ``malloc_trim(0)``: otherwise blocks kept by malloc from earlier calls would be reused and the
  call would look free), reads VmRSS, resets VmHWM by writing 5 to ``/proc/self/clear_refs``, runs the
  call once and reports VmHWM - VmRSS. This is exact at page granularity and misses no short-lived
  peak. Pages of a buffer that is allocated but never written do not count, as they are never resident.
  Where clear_refs cannot be written (not Linux), a thread samples the RSS with psutil every 1 ms, which
  can miss peaks shorter than that; the JSON records which method was used for each row.

Targets, printed as PASS / FAIL when their rows were measured: CPU (2 threads) nearest-torch within 1.2x
of faiss-flat at N=65536, D=64, K=1024 float32, and its peak extra memory <= 64 MiB at N=1M, K=8192;
CUDA nearest-triton >= 2x faster than addmm-argmin and within 1.3x of gemm at N=65536, D=256, K=8192 in
float32 and bfloat16.

Results go to a table on stdout and to ``--json`` (default bench_results/bench_kernels.json).
"""

import argparse
import gc
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from memprobe import peak_extra_cpu

REPO_ROOT = Path(__file__).resolve().parents[1]

METHODS = ("nearest-torch", "nearest-triton", "addmm-argmin", "cdist-argmin", "faiss-flat", "gemm")
FULL_MATRIX_METHODS = ("addmm-argmin", "cdist-argmin", "gemm")
FP32_ONLY_METHODS = ("faiss-flat",)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

SWEEP_N = (4096, 65536, 1048576)
SWEEP_D = (64, 256)
SWEEP_K = (1024, 8192)
QUICK_N, QUICK_D, QUICK_K, QUICK_DTYPES = (4096, 65536), (64,), (1024,), ("float32",)

MIB = 1 << 20
GIB = 1 << 30
RESULT_TAG = "@@bench-result "


def fatal(msg: str) -> None:
    print(f"bench_kernels: {msg}", file=sys.stderr)
    sys.exit(1)


@dataclass(frozen=True)
class Case:
    method: str
    dtype: str
    n: int
    d: int
    k: int

    @property
    def flops(self) -> int:
        return 2 * self.n * self.k * self.d


# ---------------------------------------------------------------------------------------------------
# Availability and skips (decided in the parent, before any input is allocated)
# ---------------------------------------------------------------------------------------------------


def unavailable_reason(method: str, device: str) -> str | None:
    """Why ``method`` cannot run on ``device`` in this environment, or None."""
    if method == "nearest-triton":
        if device != "cuda":
            return "triton needs CUDA (the interpreter is not benchmarked)"
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed"
        if os.environ.get("TRITON_INTERPRET", "0") == "1":
            return "TRITON_INTERPRET=1 is set"
    if method == "faiss-flat":
        if device != "cpu":
            return "faiss-cpu runs on the CPU only"
        if importlib.util.find_spec("faiss") is None:
            return "faiss is not installed"
    return None


def skip_reason(case: Case, max_matrix_gib: float) -> str | None:
    """Full-matrix methods are skipped when the N x K float32 matrix exceeds the budget."""
    if case.method not in FULL_MATRIX_METHODS:
        return None
    need = case.n * case.k * 4 / GIB
    return f"needs {need:.1f} GiB" if need > max_matrix_gib else None


# ---------------------------------------------------------------------------------------------------
# One case: inputs, the timed callable, timing, peak extra memory
# ---------------------------------------------------------------------------------------------------


def make_inputs(case: Case, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = DTYPES[case.dtype]
    x = torch.randn(case.n, case.d, generator=gen, device=device, dtype=dtype)  # (N, D)
    codebook = torch.randn(case.k, case.d, generator=gen, device=device, dtype=dtype)  # (K, D)
    return x, codebook


def make_fn(case: Case, x: torch.Tensor, codebook: torch.Tensor, threads: int):
    """The zero-argument callable to time; any setup (faiss index) happens here, not in the call."""
    if case.method in ("nearest-torch", "nearest-triton"):
        from kernels import nearest_code

        backend = case.method.split("-")[1]
        return lambda: nearest_code(x, codebook, backend=backend)
    if case.method == "addmm-argmin":
        return lambda: torch.addmm(codebook.pow(2).sum(dim=1), x, codebook.T, alpha=-2).argmin(dim=1)
    if case.method == "cdist-argmin":
        return lambda: torch.cdist(x, codebook).argmin(dim=1)
    if case.method == "gemm":
        return lambda: x @ codebook.T
    if case.method == "faiss-flat":
        import faiss

        faiss.omp_set_num_threads(threads)
        index = faiss.IndexFlatL2(case.d)
        index.add(codebook.numpy())
        xn = x.numpy()  # shares memory with x: no copy
        return lambda: index.search(xn, 1)
    raise ValueError(f"unknown method {case.method!r}")


def _quantiles(times_ms: list[float]) -> tuple[float, float, float]:
    """(median, 20%, 80%) with linear interpolation between order statistics."""
    if len(times_ms) == 1:
        return times_ms[0], times_ms[0], times_ms[0]
    q = statistics.quantiles(times_ms, n=5, method="inclusive")  # 20, 40, 60, 80 %
    return statistics.median(times_ms), q[0], q[3]


def _reps_for(call_s: float, reps: int) -> int:
    if call_s > 5.0:
        return min(reps, 3)
    if call_s > 1.0:
        return min(reps, 5)
    return reps


def time_cpu(fn, reps: int) -> dict:
    warm_s = []  # the first call pays one-time costs; the fastest warm-up call estimates one call
    warm_end = time.perf_counter() + 0.25
    while not warm_s or (time.perf_counter() < warm_end and len(warm_s) < 10):
        t0 = time.perf_counter()
        fn()
        warm_s.append(time.perf_counter() - t0)
    times_ms = []
    for _ in range(_reps_for(min(warm_s), reps)):
        t0 = time.perf_counter()
        fn()
        times_ms.append((time.perf_counter() - t0) * 1e3)
    median, p20, p80 = _quantiles(times_ms)
    return {"median_ms": median, "p20_ms": p20, "p80_ms": p80, "reps": len(times_ms)}


def time_cuda(fn, reps: int) -> dict:
    from triton.testing import do_bench

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    n = _reps_for(first, reps)
    rep_ms = max(100.0, n * first * 1e3)  # do_bench runs about rep_ms / (one call) timed calls
    median, p20, p80 = do_bench(fn, warmup=25, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    approx_reps = max(1, int(rep_ms / (first * 1e3)))
    return {"median_ms": median, "p20_ms": p20, "p80_ms": p80, "reps": approx_reps}


def peak_extra_cuda(fn) -> tuple[int, str]:
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak, "cuda max_memory_allocated"


def run_case(case: Case, device: str, threads: int, reps: int) -> dict:
    """Time one case and measure its peak extra memory in this process."""
    torch.set_num_threads(threads)
    row = {**asdict(case), "device": device, "threads": threads}
    try:
        x, codebook = make_inputs(case, device)
        fn = make_fn(case, x, codebook, threads)
        with torch.no_grad():
            if device == "cuda":
                # Warm-up (and autotuning) first so that neither counts as extra memory.
                fn()
                peak, how = peak_extra_cuda(fn)
                timing = time_cuda(fn, reps)
            else:
                timing = time_cpu(fn, reps)  # default malloc behaviour while timing
                peak, how = peak_extra_cpu(fn)
    except Exception as e:  # report, do not stop the sweep (dtype not implemented, out of memory, ...)
        return {**row, "status": "error", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    finally:
        if device == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
    gflops = case.flops / (timing["median_ms"] * 1e-3) / 1e9
    return {
        **row,
        "status": "ok",
        **timing,
        "gflops": gflops,
        "peak_extra_bytes": peak,
        "peak_extra_mib": peak / MIB,
        "memory_method": how,
    }


def run_case_subprocess(case: Case, threads: int, reps: int) -> dict:
    """Run one CPU case in a fresh interpreter so that its RSS belongs to that case alone."""
    spec = json.dumps({"case": asdict(case), "threads": threads, "reps": reps})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", spec],
        capture_output=True,
        text=True,
        env=env,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    last = (proc.stderr.strip().splitlines() or [""])[-1][:200]
    return {**asdict(case), "device": "cpu", "threads": threads, "status": "error", "reason": f"worker {why} {last}"}


# ---------------------------------------------------------------------------------------------------
# Table and targets
# ---------------------------------------------------------------------------------------------------

HEADER = (
    f"{'method':<15} {'dtype':<9} {'N':>8} {'D':>4} {'K':>5} {'median ms':>10} {'p20 ms':>9} {'p80 ms':>9} "
    f"{'reps':>4} {'GFLOP/s':>8} {'extra MiB':>9}  note"
)


def format_row(r: dict) -> str:
    head = f"{r['method']:<15} {r['dtype']:<9} {r['n']:>8} {r['d']:>4} {r['k']:>5}"
    if r["status"] != "ok":
        return f"{head} {'':>10} {'':>9} {'':>9} {'':>4} {'':>8} {'':>9}  {r['status']}: {r['reason']}"
    return (
        f"{head} {r['median_ms']:>10.3f} {r['p20_ms']:>9.3f} {r['p80_ms']:>9.3f} {r['reps']:>4} "
        f"{r['gflops']:>8.1f} {r['peak_extra_mib']:>9.1f}"
    )


def check_targets(rows: list[dict], device: str, threads: int) -> list[dict]:
    """The issue's acceptance targets whose rows were measured: name, value, limit, passed."""
    ok = {(r["method"], r["dtype"], r["n"], r["d"], r["k"]): r for r in rows if r["status"] == "ok"}
    targets = []

    def add(name: str, value: float, limit: str, passed: bool) -> None:
        targets.append({"name": name, "value": value, "limit": limit, "passed": passed})

    if device == "cpu":
        mine, faiss_row = (ok.get((m, "float32", 65536, 64, 1024)) for m in ("nearest-torch", "faiss-flat"))
        if mine and faiss_row:
            ratio = mine["median_ms"] / faiss_row["median_ms"]
            name = f"cpu {threads} threads: nearest-torch time / faiss-flat time, N=65536 D=64 K=1024 float32"
            add(name, ratio, "<= 1.2", ratio <= 1.2)
        for r in rows:
            if (r["method"], r["n"], r["k"], r["status"]) == ("nearest-torch", 1048576, 8192, "ok"):
                name = f"cpu {threads} threads: nearest-torch peak extra MiB, N=1048576 D={r['d']} K=8192 {r['dtype']}"
                add(name, r["peak_extra_mib"], "<= 64", r["peak_extra_mib"] <= 64)
    if device == "cuda":
        for dtype in ("float32", "bfloat16"):
            key = (dtype, 65536, 256, 8192)
            mine, addmm, gemm = (ok.get((m, *key)) for m in ("nearest-triton", "addmm-argmin", "gemm"))
            if mine and addmm:
                speedup = addmm["median_ms"] / mine["median_ms"]
                name = f"cuda: addmm-argmin time / nearest-triton time, N=65536 D=256 K=8192 {dtype}"
                add(name, speedup, ">= 2", speedup >= 2)
            if mine and gemm:
                ratio = mine["median_ms"] / gemm["median_ms"]
                add(
                    f"cuda: nearest-triton time / gemm time, N=65536 D=256 K=8192 {dtype}",
                    ratio,
                    "<= 1.3",
                    ratio <= 1.3,
                )
    return targets


def environment(device: str, threads: int) -> dict:
    meta = {
        "device": device,
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
    }
    if Path("/proc/cpuinfo").exists():
        model = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        meta["cpu"] = model.group(1) if model else meta["cpu"]
    for mod in ("triton", "faiss"):
        if importlib.util.find_spec(mod) is not None:
            meta[mod] = getattr(__import__(mod), "__version__", "unknown")
    if device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
        meta["allow_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return meta


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark kernels.nearest_code against full-matrix baselines, faiss and a bare GEMM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads and faiss.omp_set_num_threads")
    p.add_argument("--n", type=int, nargs="+", default=None, help=f"rows of x (default {SWEEP_N})")
    p.add_argument("--d", type=int, nargs="+", default=None, help=f"dimension (default {SWEEP_D})")
    p.add_argument("--k", type=int, nargs="+", default=None, help=f"codebook size (default {SWEEP_K})")
    p.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=None, help="default: all three")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="default: all of them")
    p.add_argument(
        "--quick", action="store_true", help="N=4096,65536; D=64; K=1024; float32 (explicit lists still win)"
    )
    p.add_argument("--reps", type=int, default=20, help="timed repeats (calls over 1 s get 5, over 5 s get 3)")
    p.add_argument(
        "--max-matrix-gib",
        type=float,
        default=4.0,
        help="skip full-matrix methods whose N x K float32 matrix is larger than this",
    )
    p.add_argument("--json", type=Path, default=Path("bench_results/bench_kernels.json"), help="results file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one CPU case, JSON spec
    args = p.parse_args(argv)
    if args.reps < 1 or args.threads < 1:
        p.error("--reps and --threads must be >= 1")
    return args


def worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    row = run_case(Case(**spec["case"]), "cpu", spec["threads"], spec["reps"])
    print(RESULT_TAG + json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> None:
    if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout: make `kernels` importable
        sys.path.insert(0, str(REPO_ROOT))
    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        fatal("--device cuda but CUDA is not available")
    torch.set_num_threads(args.threads)

    ns = args.n or (QUICK_N if args.quick else SWEEP_N)
    ds = args.d or (QUICK_D if args.quick else SWEEP_D)
    ks = args.k or (QUICK_K if args.quick else SWEEP_K)
    dtypes = args.dtypes or (QUICK_DTYPES if args.quick else tuple(DTYPES))
    default_methods = [m for m in METHODS if (m, device) not in (("nearest-triton", "cpu"), ("faiss-flat", "cuda"))]
    methods = args.methods or default_methods

    meta = environment(device, args.threads)
    print(f"device={device} ({meta.get('gpu', meta['cpu'])}), threads={args.threads}, torch {torch.__version__}")
    print(HEADER)
    rows = []
    for n in ns:
        for d in ds:
            for k in ks:
                for dtype in dtypes:
                    for method in methods:
                        if method in FP32_ONLY_METHODS and dtype != "float32":
                            continue
                        case = Case(method, dtype, n, d, k)
                        base = {**asdict(case), "device": device, "threads": args.threads}
                        if why := unavailable_reason(method, device):
                            row = {**base, "status": "unavailable", "reason": why}
                        elif why := skip_reason(case, args.max_matrix_gib):
                            row = {**base, "status": "skipped", "reason": why}
                        elif device == "cuda":
                            row = run_case(case, device, args.threads, args.reps)
                        else:
                            row = run_case_subprocess(case, args.threads, args.reps)
                        rows.append(row)
                        print(format_row(row), flush=True)

    targets = check_targets(rows, device, args.threads)
    print()
    for t in targets:
        print(f"{'PASS' if t['passed'] else 'FAIL'}  {t['name']}: {t['value']:.3g} (target {t['limit']})")
    if not targets:
        print("targets: none of the target rows were measured in this run")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": rows, "targets": targets}, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
