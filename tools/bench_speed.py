"""Speed and peak memory of ``codec encode`` / ``codec decode`` on big inputs, as a user runs them: each call a
fresh process, start-up included, in the default mode (the codec's stored prior; packed if that is smaller).

Cases and targets (issue 16; a 2-core CPU):

- image 3000 x 2000 (a photograph, JPEG): encode and decode each under 30 s;
- image 512 px (512 x 341): under 3 s each way;
- audio, 10 minutes at 24 kHz: encode and decode each faster than 20x real time (under 30 s);
- memory: an 8000 x 8000 image and a 1-hour recording: the peak memory of the process and its workers, reported;
  ``--memory-mode packed`` (default; the coder's own memory is one job of chunks per worker, whatever the input)
  or ``prior`` (the default mode, the context model's range coding: 2.5x the time of packed at 8000 x 8000).

Memory is the summed proportional set size of a call's process tree, sampled every 0.25 s (reading it costs CPU
time, so it is not sampled faster), and reported for every case.

Inputs are made from ``--photo`` (default examples/icecold.png; pass a large photograph for realistic content),
resized with Lanczos and saved as JPEG quality 92, and ``--recording`` (default examples/speech.flac), repeated
to length at 24 kHz and saved as FLAC. ``--breakdown`` adds, per timed case, where the time goes, measured in one
process: start-up (import, model and entropy model loading), the codec's networks, and the range coding with the
entropy model encode uses (the context model where the codec has one).

    python tools/bench_speed.py --image-model runs/image --audio-model runs/audio   # default: the bundled models
    python tools/bench_speed.py --photo big.jpg --skip-memory --breakdown
    python tools/bench_speed.py --quick          # small inputs: checks the tool itself

Prints a table with the machine's load average and writes JSON (default bench_results/bench_speed.json).
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CODEC = [sys.executable, "-m", "codec.cli"]
SAMPLE_RATE = 24000


# ----------------------------------------------------------------------------------------------- inputs
def make_image(photo: Path, width: int, height: int, out: Path) -> Path:
    from PIL import Image

    with Image.open(photo) as im:
        im.convert("RGB").resize((width, height), Image.LANCZOS).save(out, quality=92)
    return out


def make_recording(source: Path, seconds: float, out: Path) -> Path:
    """``source`` at 24 kHz mono, repeated (each repeat a little louder or softer) to ``seconds``; FLAC."""
    import numpy as np
    import soundfile as sf

    from codec.media import read_audio

    clip = read_audio(source, sample_rate=SAMPLE_RATE).samples.mean(0).numpy()
    n = int(seconds * SAMPLE_RATE)
    reps = -(-n // len(clip))
    gains = 0.6 + 0.4 * np.abs(np.sin(np.arange(reps) * 0.7))
    signal = np.concatenate([clip * g for g in gains])[:n]
    sf.write(out, np.clip(signal, -1, 1).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return out


# ---------------------------------------------------------------------------------------------- running
def _tree_pss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            total += p.memory_full_info().pss
    return total


def _busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used so far (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_seconds() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run_cli(args: list, interval: float = 0.25) -> dict:
    """Run ``codec ARGS`` in a fresh process: wall seconds, the peak summed PSS of it and its workers, and the share
    of the machine's CPUs that other processes used meanwhile (``others_cpu``: 0 on a quiet machine)."""
    busy0, ours0, t0 = _busy_seconds(), _children_seconds(), time.perf_counter()
    proc = subprocess.Popen([*CODEC, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, _tree_pss(ps))
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"codec {' '.join(map(str, args))} failed: {err.strip()[-500:]}")
    others = None
    if busy0 is not None:
        ours = _children_seconds() - ours0  # the call and its workers (waited for)
        others = max(0.0, (_busy_seconds() - busy0 - ours) / (seconds * psutil.cpu_count()))
    return {"seconds": seconds, "peak_mib": peak / 2**20, "others_cpu": others, "stdout": out.strip()}


def time_case(src: Path, tmp: Path, model: str, reps: int, extra: list) -> dict:
    """Median encode and decode seconds (fresh processes) of ``src``, the file's size and mode, peak memory."""
    vqc, back = tmp / (src.name + ".vqc"), tmp / ("back_" + src.name.rsplit(".", 1)[0] + ".png")
    if src.suffix == ".flac":
        back = back.with_suffix(".flac")
    enc, dec = [], []
    for _ in range(reps):
        enc.append(run_cli(["encode", src, "-o", vqc, "--model", model, "--force", "--quiet", *extra]))
        dec.append(run_cli(["decode", vqc, "-o", back, "--force", "--quiet"]))
    info = json.loads(subprocess.run([*CODEC, "info", vqc, "--json"], capture_output=True, text=True).stdout)
    return {
        "encode_s": statistics.median(r["seconds"] for r in enc),
        "decode_s": statistics.median(r["seconds"] for r in dec),
        "others_cpu": max((r["others_cpu"] or 0.0) for r in enc + dec),
        "encode_peak_mib": max(r["peak_mib"] for r in enc),
        "decode_peak_mib": max(r["peak_mib"] for r in dec),
        "bytes": vqc.stat().st_size,
        "mode": info.get("mode"),
        "tokens": info.get("tokens"),
        "chunks": info.get("chunks"),
    }


BREAKDOWN = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, codec
from codec.bitstream.compress import compress
from codec.bitstream.models import resolve_prior
from codec.bitstream.decompress import decompress
from codec.media import read_audio, read_image
t_import = time.perf_counter() - t0
path, model_dir = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
m = codec.load(model_dir, device="cpu")
p, _ = resolve_prior("auto", m, codec.model_hash(m))  # what encode uses: the context model when there is one
codec.model_hash(p)
t_load = time.perf_counter() - t0
x = read_image(path).pixels if m.modality == "image" else read_audio(path, sample_rate=m.sample_rate).samples
rate = m.sample_rate
t0 = time.perf_counter()
tokens = m.encode(x[None])
t_net_enc = time.perf_counter() - t0
t0 = time.perf_counter()
data = compress(x, model=m, prior=p, sample_rate=rate)
t_comp = time.perf_counter() - t0
t0 = time.perf_counter()
y = m.decode(tokens, shape=x.shape)
t_net_dec = time.perf_counter() - t0
t0 = time.perf_counter()
out = decompress(data, model=m, prior=p)
t_decomp = time.perf_counter() - t0
print(json.dumps(dict(entropy_model=type(p).__name__, import_s=t_import, load_s=t_load,
                      net_encode_s=t_net_enc, coding_encode_s=t_comp - t_net_enc,
                      net_decode_s=t_net_dec, coding_decode_s=t_decomp - t_net_dec, tokens=int(tokens.numel()),
                      threads=torch.get_num_threads())))
"""


def breakdown(src: Path, model: str) -> dict:
    out = subprocess.run([sys.executable, "-c", BREAKDOWN, str(src), model], capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- report
def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {psutil.cpu_count()} CPUs"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-model", default="image", help="codec run directory or bundled name (with its prior)")
    ap.add_argument("--audio-model", default="audio")
    ap.add_argument("--photo", type=Path, default=ROOT / "examples" / "icecold.png")
    ap.add_argument("--recording", type=Path, default=ROOT / "examples" / "speech.flac")
    ap.add_argument("--reps", type=int, default=1, help="runs per timed case (the median is reported)")
    ap.add_argument("--skip-image", action="store_true")
    ap.add_argument("--skip-audio", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-timing", action="store_true", help="only the memory cases")
    ap.add_argument("--memory-mode", choices=("packed", "prior"), default="packed")
    ap.add_argument("--breakdown", action="store_true", help="also time start-up, networks and coding apart")
    ap.add_argument("--quick", action="store_true", help="small inputs (checks the tool, not the targets)")
    ap.add_argument("--json", type=Path, default=Path("bench_results/bench_speed.json"))
    args = ap.parse_args(argv)

    scale = 0.1 if args.quick else 1.0
    big = (round(3000 * scale), round(2000 * scale))
    cases = []  # (label, kind, make, target seconds, duration seconds for audio)
    if not args.skip_image and not args.skip_timing:
        cases.append((f"image {big[0]}x{big[1]}", "image", lambda d: make_image(args.photo, *big, d / "big.jpg"), 30.0))
        cases.append(("image 512x341", "image", lambda d: make_image(args.photo, 512, 341, d / "p512.jpg"), 3.0))
    if not args.skip_audio and not args.skip_timing:
        minutes = 10 * scale
        cases.append(
            (
                f"audio {minutes:g} min",
                "audio",
                lambda d: make_recording(args.recording, 60 * minutes, d / "rec.flac"),
                30 * scale,
            )
        )
    memory = []
    if not args.skip_memory:
        side, hours = (round(8000 * scale), 1.0 * scale)
        if not args.skip_image:
            memory.append(
                (f"image {side}x{side}", "image", lambda d: make_image(args.photo, side, side, d / "huge.jpg"))
            )
        if not args.skip_audio:
            memory.append(
                (
                    f"audio {hours * 60:g} min",
                    "audio",
                    lambda d: make_recording(args.recording, 3600 * hours, d / "long.flac"),
                )
            )

    started = load_line()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, kind, make, target in cases:
            src = make(tmp)
            model = args.image_model if kind == "image" else args.audio_model
            row = {"case": label, "kind": kind, "target_s": target, **time_case(src, tmp, model, args.reps, [])}
            if kind == "audio":
                seconds = 600 * scale
                row["encode_x_realtime"] = seconds / row["encode_s"]
                row["decode_x_realtime"] = seconds / row["decode_s"]
            row["pass"] = row["encode_s"] < target and row["decode_s"] < target
            if args.breakdown:
                row["breakdown"] = breakdown(src, model)
            rows.append(row)
            print(f"  {label}: encode {row['encode_s']:.1f} s, decode {row['decode_s']:.1f} s", file=sys.stderr)
        for label, kind, make in memory:
            src = make(tmp)
            model = args.image_model if kind == "image" else args.audio_model
            extra = ["--no-prior"] if args.memory_mode == "packed" else []
            row = {"case": label, "kind": kind, "memory": True, **time_case(src, tmp, model, 1, extra)}
            row["input_mib"] = src.stat().st_size / 2**20
            rows.append(row)
            print(f"  {label}: peak {max(row['encode_peak_mib'], row['decode_peak_mib']):.0f} MiB", file=sys.stderr)
    ended = load_line()

    print(
        f"codec encode / decode, fresh process per call, {psutil.cpu_count()} CPUs; {started} at the start, "
        f"{ended} at the end"
    )
    print(
        f"{'case':<22}{'mode':>8}{'bytes':>10}{'enc s':>8}{'dec s':>8}{'target':>8}{'x realtime':>13}"
        f"{'peak MiB e/d':>15}{'others':>8}  verdict"
    )
    for r in rows:
        rt = f"{r['encode_x_realtime']:.0f}/{r['decode_x_realtime']:.0f}" if "encode_x_realtime" in r else ""
        target = "" if r.get("memory") else f"<{r['target_s']:g}"
        verdict = "report" if r.get("memory") else ("PASS" if r["pass"] else "FAIL")
        print(
            f"{r['case']:<22}{r['mode'] or '':>8}{r['bytes']:>10}{r['encode_s']:>8.1f}{r['decode_s']:>8.1f}"
            f"{target:>8}{rt:>13}{r['encode_peak_mib']:>8.0f}/{r['decode_peak_mib']:<6.0f}"
            f"{r['others_cpu']:>8.0%}  {verdict}"
        )
    print("others: the largest share of the CPUs other processes used during a call of the case (0% = quiet)")
    for r in rows:
        b = r.get("breakdown")
        if b and "error" not in b:
            print(
                f"  {r['case']}: import {b['import_s']:.1f} s, load models {b['load_s']:.1f} s, networks "
                f"{b['net_encode_s']:.1f} / {b['net_decode_s']:.1f} s, range coding ({b.get('entropy_model', '?')}) "
                f"{b['coding_encode_s']:.1f} / {b['coding_decode_s']:.1f} s "
                f"({b['tokens']} tokens, {b['threads']} threads)"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"load_start": started, "load_end": ended, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
