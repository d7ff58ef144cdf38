"""Peak memory of the default codecs on large inputs (CPU): the issue's bounded-memory targets.

- image: encode + decode a 4096 x 4096 RGB image (target: under 3 GiB of RAM for the whole process);
- audio: encode a 1-hour 24 kHz mono signal, then decode it (target: encoding under 2 GiB).

Each case runs in a fresh process and reports the process's peak RSS (VmHWM, including Python, torch and
the input itself) and the extra peak over the RSS after the input was created (see memprobe.py), plus the
time taken (under the probe's malloc settings, so slower than normal: bench_codec.py measures speed).
Random weights: memory does not depend on training.

    python tools/bench_memory.py                  # both cases (several minutes on 2 CPU threads)
    python tools/bench_memory.py --audio-seconds 600 --image-size 2048   # smaller

Prints a table and writes JSON (default bench_results/bench_memory.json).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

GIB = 1 << 30


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def worker(case: str, size: int, threads: int) -> dict:
    import torch
    from memprobe import peak_extra_cpu

    from codec import AudioCodecConfig, Codec, ImageCodecConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if case == "image":
        m = Codec(ImageCodecConfig())
        m(torch.rand(2, 3, 64, 64))  # k-means init
        x = torch.rand(1, 3, size, size)
    else:
        m = Codec(AudioCodecConfig())
        m(torch.rand(2, 1, 24000) * 2 - 1)
        x = torch.rand(1, 1, 24000 * size) * 2 - 1
    m.eval()
    t0 = time.perf_counter()
    holder = {}
    enc_peak, _ = peak_extra_cpu(lambda: holder.setdefault("tokens", m.encode(x)))
    t_enc = time.perf_counter() - t0
    enc_hwm = _status_kib("VmHWM") * 1024
    t0 = time.perf_counter()
    dec_peak, method = peak_extra_cpu(lambda: m.decode(holder["tokens"], shape=x.shape[1:]))
    t_dec = time.perf_counter() - t0
    return {
        "case": case,
        "size": size,
        "input_mib": x.numel() * 4 / (1 << 20),
        "encode_s": t_enc,
        "decode_s": t_dec,
        "encode_extra_mib": enc_peak / (1 << 20),
        "decode_extra_mib": dec_peak / (1 << 20),
        "encode_process_peak_gib": enc_hwm / GIB,
        "process_peak_gib": max(enc_hwm, _status_kib("VmHWM") * 1024) / GIB,
        "method": method,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=4096)
    ap.add_argument("--audio-seconds", type=int, default=3600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-image", action="store_true")
    ap.add_argument("--skip-audio", action="store_true")
    ap.add_argument("--json", default="bench_results/bench_memory.json")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.threads)))
        return
    cases = []
    if not args.skip_image:
        cases.append(("image", args.image_size))
    if not args.skip_audio:
        cases.append(("audio", args.audio_seconds))
    rows = []
    for case, size in cases:
        cmd = [sys.executable, __file__, "--worker", case, str(size), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            rows.append({"case": case, "size": size, "error": out.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"default codecs, CPU, {args.threads} threads")
    print(
        f"{'case':<24}{'input MiB':>10}{'enc s':>8}{'dec s':>8}{'enc extra MiB':>14}{'dec extra MiB':>14}"
        f"{'enc peak GiB':>13}{'peak GiB':>10}"
    )
    verdicts = {}
    for r in rows:
        label = f"{r['case']} {r['size']}" + (" px" if r["case"] == "image" else " s")
        if "error" in r:
            print(f"{label:<24}error: {r['error']}")
            continue
        print(
            f"{label:<24}{r['input_mib']:>10.0f}{r['encode_s']:>8.1f}{r['decode_s']:>8.1f}"
            f"{r['encode_extra_mib']:>14.0f}{r['decode_extra_mib']:>14.0f}"
            f"{r['encode_process_peak_gib']:>13.2f}{r['process_peak_gib']:>10.2f}"
        )
        if r["case"] == "image" and r["size"] >= 4096:
            verdicts["image_4096_under_3GiB"] = r["process_peak_gib"] < 3.0
        if r["case"] == "audio" and r["size"] >= 3600:
            verdicts["audio_1h_encode_under_2GiB"] = r["encode_process_peak_gib"] < 2.0
    for name, ok in verdicts.items():
        print(f"target {name}: {'PASS' if ok else 'FAIL'}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows, "targets": verdicts}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
