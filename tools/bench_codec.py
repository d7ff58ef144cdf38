"""Encode + decode speed of vqcodec's codecs, with EnCodec's 24 kHz model at 6 kbps side by side.

- audio: real-time factor RTF = processing time / audio duration (lower is faster) and x-real-time = 1 / RTF,
  for a ``--seconds`` clip, encode and decode timed apart, at all the model's residual levels; our ``--audio-model``
  (default: the bundled ``audio`` model) against EnCodec's 24 kHz architecture (``encodec`` package,
  ``set_target_bandwidth(6.0)``: 8 codebooks of 1024);
- image: images/s for encode + decode of one 512 x 512 RGB image with ``--image-model`` (default ``image``).

Our models are the trained ones (a bundled name or a run directory), in float32 and eval mode: the networks
and the nearest-code search, without the file format's entropy coding (``tools/bench_speed.py`` times the whole
``codec encode`` / ``decode``). EnCodec's weights are random (training does not change speed); its quantizer
first sees one training-mode forward, so its codebooks are k-means initialised, then runs in eval mode. Times
are medians of ``--reps`` runs after one warm-up; our audio codec and EnCodec alternate run by run, so a shared
machine's changing load hits both alike. The target: our audio RTF <= EnCodec's RTF / 2 on the same device, in the
same run.

    python tools/bench_codec.py                      # CPU with 2 threads, plus CUDA when present
    python tools/bench_codec.py --skip-image --reps 3
    python tools/bench_codec.py --audio-model runs/speech   # a trained run directory instead of the bundled model

EnCodec imports torchaudio for file I/O only; when torchaudio is missing an empty stand-in module is put in
``sys.modules`` so the model classes import. Prints a table and writes JSON (default
bench_results/bench_codec.json).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import codec
from codec import Codec

IMAGE_SIZE = 512
ENCODEC_KBPS = 6.0
OURS, PEER = "vqcodec audio", "EnCodec 24 kHz"
BUSY_SHARE = 0.1  # above this share of the CPUs used by other processes, the timings are flagged


def fatal(msg: str) -> None:
    print(f"bench_codec: {msg}", file=sys.stderr)
    sys.exit(1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Case:
    """One codec to time: ``decode(encode(x))``; ``info`` goes into its result row."""

    name: str
    encode: Callable
    decode: Callable
    x: torch.Tensor
    info: dict


def time_cases(cases: list[Case], reps: int) -> list[dict]:
    """Median seconds of encode, decode and their sum per case over ``reps`` runs, after one warm-up each.

    The cases are interleaved (every rep runs each case once, in reversed order on odd reps), so a change in
    the load of a shared machine hits every case alike.
    """
    for case in cases:
        case.decode(case.encode(case.x))
        _sync(case.x.device)
    enc = {c.name: [] for c in cases}
    dec = {c.name: [] for c in cases}
    for rep in range(reps):
        for case in cases if rep % 2 == 0 else cases[::-1]:
            device = case.x.device
            t0 = time.perf_counter()
            tokens = case.encode(case.x)
            _sync(device)
            t1 = time.perf_counter()
            case.decode(tokens)
            _sync(device)
            t2 = time.perf_counter()
            enc[case.name].append(t1 - t0)
            dec[case.name].append(t2 - t1)
    rows = []
    for case in cases:
        total = [e + d for e, d in zip(enc[case.name], dec[case.name], strict=True)]
        times = {
            "encode_s": statistics.median(enc[case.name]),
            "decode_s": statistics.median(dec[case.name]),
            "total_s": statistics.median(total),
            "total_min_s": min(total),
            "total_max_s": max(total),
        }
        rows.append({"name": case.name, "device": case.x.device.type, **case.info, **times})
    return rows


def _params(module: torch.nn.Module) -> int:
    """Learned parameters; codebooks are buffers in both codecs and are not counted."""
    return sum(p.numel() for p in module.parameters())


def _audio_clip(seconds: float, sample_rate: int, device: torch.device, channels: int = 1) -> torch.Tensor:
    """(1, channels, T) noise in [-0.5, 0.5]; speed does not depend on the content."""
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, channels, round(seconds * sample_rate), generator=g) - 0.5).to(device)


def _load(name: str, device: torch.device) -> Codec:
    """A trained codec (bundled name or run directory) in float32 and eval mode on ``device``."""
    try:
        model = codec.load(name)
    except (codec.VQCodecError, OSError) as e:
        fatal(f"cannot load model {name!r}: {e}")
    return model.float().to(device).eval()


def _model_case(label: str, model: Codec, x: torch.Tensor, info: dict) -> Case:
    """``model.encode`` / ``model.decode`` of ``x`` (B, C, ...) under inference mode."""

    def encode(media):
        with torch.inference_mode():
            return model.encode(media)

    def decode(tokens):
        with torch.inference_mode():
            return model.decode(tokens, shape=x.shape[1:])

    return Case(label, encode, decode, x, info)


def our_audio_case(name: str, seconds: float, device: torch.device, label: str = OURS) -> Case:
    """The trained audio codec ``name`` on a ``seconds`` clip of its channel count at all its residual levels."""
    model = _load(name, device)
    if model.modality != "audio":
        fatal(f"--audio-model {name!r} is an {model.modality} codec")
    config = model.config
    x = _audio_clip(seconds, config.sample_rate, device, config.channels)
    q = config.quantizer
    kbps = q.num_quantizers * math.log2(q.codebook_size) * config.sample_rate / config.hop / 1000
    info = {"model": name, "seconds": seconds, "params": _params(model), "kbps": kbps}
    return _model_case(label, model, x, info)


def _import_encodec():
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")  # only used by EnCodec's file I/O
    from encodec import EncodecModel

    return EncodecModel


def encodec_case(seconds: float, device: torch.device) -> Case:
    """EnCodec's 24 kHz architecture at 6 kbps (8 codebooks of 1024), random weights."""
    encodec_model = _import_encodec()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm deprecation
        model = encodec_model.encodec_model_24khz(pretrained=False).to(device)
    model.set_target_bandwidth(ENCODEC_KBPS)
    x = _audio_clip(seconds, model.sample_rate, device)
    # Its codebooks start at zero and k-means-initialise in the quantizer's training forward. Its k-means
    # materialises an (N, K, D) difference tensor (400 MB for 10 s), so one Lloyd iteration instead of 10:
    # the codebook values do not change the speed of its search.
    for layer in model.quantizer.vq.layers:
        layer._codebook.kmeans_iters = 1
    with torch.no_grad():
        model.train()
        model.quantizer(model.encoder(x), model.frame_rate, ENCODEC_KBPS)
        model.eval()

    def encode(audio):
        with torch.inference_mode():
            return model.encode(audio)

    def decode(frames):
        with torch.inference_mode():
            return model.decode(frames)[..., : x.shape[-1]]

    info = {"seconds": seconds, "params": _params(model), "kbps": ENCODEC_KBPS}
    return Case(PEER, encode, decode, x, info)


def audio_rtf(row: dict) -> dict:
    """Add real-time factors to an audio row of ``time_cases``."""
    seconds = row["seconds"]
    row["encode_rtf"] = row["encode_s"] / seconds
    row["decode_rtf"] = row["decode_s"] / seconds
    row["rtf"] = row["total_s"] / seconds
    row["x_real_time"] = 1.0 / row["rtf"]
    return row


def our_image_case(name: str, device: torch.device) -> Case:
    """The trained image codec ``name`` on one 512 x 512 RGB image."""
    model = _load(name, device)
    if model.modality != "image":
        fatal(f"--image-model {name!r} is an {model.modality} codec")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g).to(device)
    info = {"model": name, "size": IMAGE_SIZE, "params": _params(model)}
    return _model_case("vqcodec image", model, x, info)


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            jiffies = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    busy = sum(jiffies) - jiffies[3] - jiffies[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def _others_share(start, end, wall: float) -> float | None:
    """Fraction of the machine's CPU time that other processes used between two ``_cpu_seconds``."""
    if start is None or end is None or wall <= 0:
        return None
    others = (end[0] - start[0]) - (end[1] - start[1])
    return max(0.0, others) / ((os.cpu_count() or 1) * wall)


def _devices(choice: str) -> list[torch.device]:
    if choice == "cpu":
        return [torch.device("cpu")]
    if choice == "cuda":
        if not torch.cuda.is_available():
            fatal("--device cuda given but no CUDA device is available")
        return [torch.device("cuda")]
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def _print_tables(audio_rows, image_rows, args) -> None:
    print(f"audio: {args.seconds:g} s mono clip at 24 kHz, encode + decode, median of {args.reps} after a warm-up")
    head = f"{'codec':<16}{'device':<7}{'kbps':>6}{'params':>9}{'enc ms':>9}{'dec ms':>9}{'total ms':>10}"
    print(head + f"{'RTF':>8}{'x real-time':>13}")
    for r in audio_rows:
        if "error" in r:
            print(f"{r['name']:<16}{r['device']:<7}{r['error']}")
            continue
        print(
            f"{r['name']:<16}{r['device']:<7}{r['kbps']:>6.2f}{r['params'] / 1e6:>8.2f}M"
            f"{1e3 * r['encode_s']:>9.1f}{1e3 * r['decode_s']:>9.1f}{1e3 * r['total_s']:>10.1f}"
            f"{r['rtf']:>8.4f}{r['x_real_time']:>12.1f}x"
        )
    if image_rows:
        print(
            f"image: {IMAGE_SIZE} x {IMAGE_SIZE} RGB, batch 1, encode + decode, median of {args.reps} after a warm-up"
        )
        print(f"{'codec':<16}{'device':<7}{'params':>9}{'enc ms':>9}{'dec ms':>9}{'total ms':>10}{'images/s':>10}")
        for r in image_rows:
            print(
                f"{r['name']:<16}{r['device']:<7}{r['params'] / 1e6:>8.2f}M{1e3 * r['encode_s']:>9.1f}"
                f"{1e3 * r['decode_s']:>9.1f}{1e3 * r['total_s']:>10.1f}{r['images_per_s']:>10.2f}"
            )


def _targets(audio_rows) -> dict:
    """Per device: our RTF <= EnCodec's RTF / 2."""
    targets = {}
    for dev in dict.fromkeys(r["device"] for r in audio_rows):
        ours = next((r for r in audio_rows if r["device"] == dev and r["name"] == OURS), None)
        peer = next((r for r in audio_rows if r["device"] == dev and r["name"] == PEER), None)
        if ours is None or peer is None or "error" in peer:
            continue
        speedup = peer["rtf"] / ours["rtf"]
        targets[dev] = {"speedup_vs_encodec": speedup, "pass": ours["rtf"] <= peer["rtf"] / 2}
        verdict = "PASS" if targets[dev]["pass"] else "FAIL"
        print(
            f"target {dev}: our audio codec >= 2x EnCodec's real-time speed: {verdict} "
            f"({speedup:.2f}x; RTF {ours['rtf']:.4f} vs {peer['rtf']:.4f})"
        )
    return targets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CPU, plus CUDA when available"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (torch.set_num_threads)")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio clip length in seconds")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per measurement (median reported)")
    ap.add_argument("--json", default="bench_results/bench_codec.json", help="where to write the results")
    ap.add_argument("--audio-model", default="audio", help="our audio codec: bundled name or run directory")
    ap.add_argument("--image-model", default="image", help="our image codec: bundled name or run directory")
    ap.add_argument("--skip-image", action="store_true", help="skip the image codec")
    ap.add_argument("--skip-encodec", action="store_true", help="skip EnCodec (no target verdict)")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.reps < 1 or args.seconds <= 0:
        fatal("--threads and --reps must be >= 1 and --seconds > 0")
    torch.set_num_threads(args.threads)

    load_before, cpu_before, wall_before = os.getloadavg(), _cpu_seconds(), time.perf_counter()
    audio_rows, image_rows = [], []
    for device in _devices(args.device):
        cases, missing = [our_audio_case(args.audio_model, args.seconds, device)], []
        if not args.skip_encodec:
            try:
                cases.append(encodec_case(args.seconds, device))
            except ImportError as e:
                missing.append({"name": PEER, "device": device.type, "error": f"unavailable: {e}"})
        audio_rows += [audio_rtf(row) for row in time_cases(cases, args.reps)] + missing
        if not args.skip_image:
            row = time_cases([our_image_case(args.image_model, device)], args.reps)[0]
            image_rows.append({**row, "images_per_s": 1.0 / row["total_s"]})
    load_after, cpu_after = os.getloadavg(), _cpu_seconds()
    others = _others_share(cpu_before, cpu_after, time.perf_counter() - wall_before)

    _print_tables(audio_rows, image_rows, args)
    targets = _targets(audio_rows)
    loads = f"before {' '.join(f'{v:.2f}' for v in load_before)}, after {' '.join(f'{v:.2f}' for v in load_after)}"
    print(f"load average (1, 5, 15 min): {loads}; {os.cpu_count()} CPUs, {args.threads} torch threads")
    if others is not None:
        print(f"other processes used {100 * others:.0f}% of the CPUs during the run")
        if others > BUSY_SHARE:
            print(
                "warning: the machine was busy; multi-threaded timings are then unreliable (each parallel op waits "
                "for a descheduled thread), EnCodec's LSTM of many small ops the most: rerun on an idle machine"
            )

    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "other_processes_cpu_share": others,
        "args": vars(args),
    }
    result = {"meta": meta, "audio": audio_rows, "image": image_rows, "targets": targets}
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
