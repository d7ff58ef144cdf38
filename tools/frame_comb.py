"""How loud is the frame-rate comb of an audio codec's decodings: fixed tones at multiples of its frame rate.

    python tools/frame_comb.py --model audio --data data/audio/eval_recorded/speech
    python tools/frame_comb.py --data data/audio/eval_recorded/speech      # the original signals

A decoder that renders one frame at a time can leave a periodic pattern at the frame rate (75 Hz for the bundled
audio model), heard as a buzz of fixed tones. Measure: the long-term power spectrum of all clips together (Hann
windows of 0.2 s, hop 0.05 s: 5 Hz bins), and at each multiple k * frame_rate between ``--low`` and ``--high`` Hz
the peak power within 5 Hz of it over the median power 15-35 Hz away; the mean over k, in dB. Speech with no comb
reads near 0 dB (its harmonics move, so they average out); a comb reads several dB and more.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

NFFT_SECONDS = 0.2  # 5 Hz bins


def power_spectrum(x: np.ndarray, rate: int) -> np.ndarray:
    """Summed power spectrum (nfft // 2 + 1,) of a 1-D signal over Hann windows of NFFT_SECONDS, hop a quarter."""
    from codec.core.spectral import stft_magnitude

    nfft = round(NFFT_SECONDS * rate)
    if len(x) < nfft:
        return np.zeros(nfft // 2 + 1)
    mag = stft_magnitude(torch.from_numpy(np.asarray(x, dtype=np.float32)), nfft, nfft // 4)  # (F, frames)
    return mag.double().square().sum(-1).numpy()


def comb_db(power: np.ndarray, rate: int, frame_rate: float, low: float = 750.0, high: float = 8000.0) -> float:
    """Mean height in dB of the spectrum ``power`` (from ``power_spectrum``) at k * frame_rate above its surround."""
    hz = np.arange(len(power)) * rate / (2 * (len(power) - 1))
    heights = []
    for k in range(int(np.ceil(low / frame_rate)), int(high // frame_rate) + 1):
        centre = k * frame_rate
        peak = power[np.abs(hz - centre) <= 5].max()
        near = power[(np.abs(hz - centre) >= 15) & (np.abs(hz - centre) <= 35)]
        heights.append(10 * np.log10(max(peak, 1e-30) / max(np.median(near), 1e-30)))
    if not heights:
        raise ValueError(f"no multiple of {frame_rate} Hz between {low} and {high} Hz")
    return float(np.mean(heights))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of audio files (scanned recursively)")
    ap.add_argument("--model", help="codec run directory or bundled name; without it the originals are measured")
    ap.add_argument("--quantizers", type=int, help="residual levels to decode from (default: all)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many files (sorted by path; 0 = all)")
    ap.add_argument("--low", type=float, default=750.0)
    ap.add_argument("--high", type=float, default=8000.0)
    args = ap.parse_args(argv)

    import codec
    from codec.media.audio_io import read_audio
    from codec.media.files import find_files

    model = codec.load(args.model) if args.model else None
    rate = model.config.sample_rate if model is not None else 24000
    frame_rate = rate / model.downsample if model is not None else 75.0
    try:
        files = find_files(args.data, "audio")
    except (FileNotFoundError, ValueError) as err:
        print(f"frame_comb: {err}", file=sys.stderr)
        return 2
    files = files[: args.limit] if args.limit else files
    total = None
    for path in files:
        samples = read_audio(Path(args.data) / path, sample_rate=rate).samples
        x = torch.as_tensor(samples).float().mean(0, keepdim=True)[None]
        if model is not None:
            with torch.no_grad():
                x = model.decode(model.encode(x, num_quantizers=args.quantizers), shape=x.shape[1:])
        p = power_spectrum(x[0, 0].numpy(), rate)
        total = p if total is None else total + p
    what = args.model or "original"
    print(f"{what}: frame-rate comb {comb_db(total, rate, frame_rate, args.low, args.high):.1f} dB "
          f"({len(files)} files, {frame_rate:g} Hz frames, {args.low:g}-{args.high:g} Hz)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
