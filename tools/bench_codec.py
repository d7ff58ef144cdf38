"""Encode + decode speed of vqcodec's default codecs, with EnCodec's 24 kHz model at 6 kbps side by side.

- audio: real-time factor RTF = processing time / audio duration (lower is faster) and x-real-time = 1 / RTF,
  for a ``--seconds`` clip, encode and decode timed apart; our ``AudioCodecConfig()`` against EnCodec's
  24 kHz architecture (``encodec`` package, ``set_target_bandwidth(6.0)``: 8 codebooks of 1024, same bitrate);
- image: images/s for encode + decode of one 512 x 512 RGB image with our ``ImageCodecConfig()``.

Weights are random (training does not change speed). Each quantizer first sees one training-mode forward,
so its codebooks are k-means initialised as after training, then runs in eval mode. Times are medians of
``--reps`` runs after one warm-up. The target: our audio RTF <= EnCodec's RTF / 2 on the same device, in the
same run.

    python tools/bench_codec.py                      # CPU with 2 threads, plus CUDA when present
    python tools/bench_codec.py --skip-image --reps 3

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
from pathlib import Path

import torch

from codec import AudioCodecConfig, Codec, ImageCodecConfig

IMAGE_SIZE = 512
ENCODEC_KBPS = 6.0


def fatal(msg: str) -> None:
    print(f"bench_codec: {msg}", file=sys.stderr)
    sys.exit(1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_codec(encode, decode, x: torch.Tensor, reps: int) -> dict:
    """Median seconds of encode, decode and their sum over ``reps`` runs, after one warm-up run."""
    device = x.device
    decode(encode(x))
    _sync(device)
    enc, dec, total = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        tokens = encode(x)
        _sync(device)
        t1 = time.perf_counter()
        decode(tokens)
        _sync(device)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        total.append(t2 - t0)
    return {
        "encode_s": statistics.median(enc),
        "decode_s": statistics.median(dec),
        "total_s": statistics.median(total),
        "total_min_s": min(total),
        "total_max_s": max(total),
    }


def _params(module: torch.nn.Module) -> int:
    """Learned parameters; codebooks are buffers in both codecs and are not counted."""
    return sum(p.numel() for p in module.parameters())


def _audio_clip(seconds: float, sample_rate: int, device: torch.device) -> torch.Tensor:
    """(1, 1, T) noise in [-0.5, 0.5]; speed does not depend on the content."""
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, 1, round(seconds * sample_rate), generator=g) - 0.5).to(device)


@torch.no_grad()
def _kmeans_init(model: Codec, x: torch.Tensor) -> None:
    """One training-mode forward so every quantizer stage k-means-initialises its codebook, then eval."""
    quantizer = model.quantizer
    dropout = getattr(quantizer, "quantizer_dropout", 0.0)
    if dropout:
        quantizer.quantizer_dropout = 0.0  # with dropout a batch of one item may skip the last stages
    model.train()
    model(x)
    model.eval()
    if dropout:
        quantizer.quantizer_dropout = dropout


def bench_our_audio(config: AudioCodecConfig, seconds: float, device: torch.device, reps: int) -> dict:
    """RTF of ``Codec(config)`` on a ``seconds`` mono clip; the row for the table and the JSON."""
    torch.manual_seed(0)
    model = Codec(config).to(device)
    x = _audio_clip(seconds, config.sample_rate, device)
    hop = config.hop
    _kmeans_init(model, x[..., : x.shape[-1] // hop * hop])
    times = _time_codec(model.encode, lambda tokens: model.decode(tokens, shape=x.shape[1:]), x, reps)
    q = config.quantizer
    kbps = q.num_quantizers * math.log2(q.codebook_size) * config.sample_rate / hop / 1000
    return _audio_row("vqcodec audio", device, seconds, _params(model), kbps, times)


def _import_encodec():
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")  # only used by EnCodec's file I/O
    from encodec import EncodecModel

    return EncodecModel


def bench_encodec(seconds: float, device: torch.device, reps: int) -> dict:
    """RTF of EnCodec's 24 kHz architecture at 6 kbps, random weights, codebooks k-means initialised."""
    encodec_model = _import_encodec()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm deprecation
        model = encodec_model.encodec_model_24khz(pretrained=False).to(device)
    model.set_target_bandwidth(ENCODEC_KBPS)
    x = _audio_clip(seconds, model.sample_rate, device)
    with torch.no_grad():  # its k-means init runs in the quantizer's training forward
        model.train()
        model.quantizer(model.encoder(x), model.frame_rate, ENCODEC_KBPS)
        model.eval()

    def encode(audio):
        with torch.inference_mode():
            return model.encode(audio)

    def decode(frames):
        with torch.inference_mode():
            return model.decode(frames)[..., : x.shape[-1]]

    times = _time_codec(encode, decode, x, reps)
    return _audio_row("EnCodec 24 kHz", device, seconds, _params(model), ENCODEC_KBPS, times)


def _audio_row(name, device, seconds, params, kbps, times) -> dict:
    rtf = times["total_s"] / seconds
    return {
        "name": name,
        "device": device.type,
        "seconds": seconds,
        "params": params,
        "kbps": kbps,
        **times,
        "encode_rtf": times["encode_s"] / seconds,
        "decode_rtf": times["decode_s"] / seconds,
        "rtf": rtf,
        "x_real_time": 1.0 / rtf,
    }


def bench_our_image(device: torch.device, reps: int) -> dict:
    """Images/s of ``Codec(ImageCodecConfig())`` on one 512 x 512 RGB image (encode + decode)."""
    torch.manual_seed(0)
    model = Codec(ImageCodecConfig()).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g).to(device)
    _kmeans_init(model, x[..., :256, :256])  # 32 x 32 = 1024 latent vectors feed the k-means
    times = _time_codec(model.encode, lambda tokens: model.decode(tokens, shape=x.shape[1:]), x, reps)
    return {
        "name": "vqcodec image",
        "device": device.type,
        "size": IMAGE_SIZE,
        "params": _params(model),
        **times,
        "images_per_s": 1.0 / times["total_s"],
    }


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
        ours = next((r for r in audio_rows if r["device"] == dev and r["name"] == "vqcodec audio"), None)
        peer = next((r for r in audio_rows if r["device"] == dev and r["name"] == "EnCodec 24 kHz"), None)
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
    ap.add_argument("--skip-image", action="store_true", help="skip the image codec")
    ap.add_argument("--skip-encodec", action="store_true", help="skip EnCodec (no target verdict)")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.reps < 1 or args.seconds <= 0:
        fatal("--threads and --reps must be >= 1 and --seconds > 0")
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    audio_rows, image_rows = [], []
    for device in _devices(args.device):
        audio_rows.append(bench_our_audio(AudioCodecConfig(), args.seconds, device, args.reps))
        if not args.skip_encodec:
            try:
                audio_rows.append(bench_encodec(args.seconds, device, args.reps))
            except ImportError as e:
                audio_rows.append({"name": "EnCodec 24 kHz", "device": device.type, "error": f"unavailable: {e}"})
        if not args.skip_image:
            image_rows.append(bench_our_image(device, args.reps))
    load_after = os.getloadavg()

    _print_tables(audio_rows, image_rows, args)
    targets = _targets(audio_rows)
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
        "args": vars(args),
    }
    result = {"meta": meta, "audio": audio_rows, "image": image_rows, "targets": targets}
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
