"""The README's audio picture: spectrograms of a held-out speech clip, its decoding by the bundled audio model and
by Opus at about the same rate, and a clip sampled from the model's prior.

    python tools/make_audio_figure.py --clip data/audio/heldout/speech_recorded/it_IT_m_Carlo/vm-intro.flac

The clip is coded with the model at ``--levels`` residual levels (a real ``.vqc`` file, so the rate counts every
byte), then by Opus (``opusenc --hard-cbr``) at ``--opus-kbps``; each panel is labelled with its real rate and its
mel distance and PESQ-WB to the original (``codec.eval.audio``; PESQ where the ``pesq`` package is installed).
The last panel is ``--sample-seconds`` of ``codec sample`` output (``--seed``). Log-magnitude STFT, 1024-point
Hann window, hop 256, 0-12 kHz, the same colour scale (dB) on every panel. Needs the ``eval`` extra (matplotlib)
and opus-tools.
"""

import argparse
import tempfile
from pathlib import Path

import torch

import codec
from codec.eval.audio import audio_metrics, opus_roundtrip
from codec.media import read_audio, write_audio
from prior.checkpoint import load_prior


def spectrogram_db(x: torch.Tensor, n_fft: int = 1024, hop: int = 256) -> torch.Tensor:
    """(T,) float -> (n_fft // 2 + 1, frames) magnitude in dB (floored at -100)."""
    spec = torch.stft(x.float(), n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    return 20 * torch.log10(spec.clamp_min(1e-5))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, help="a held-out speech clip")
    ap.add_argument("--model", default="audio", help="audio codec with its prior (default: the bundled one)")
    ap.add_argument("--levels", type=int, default=8, help="residual levels (default 8)")
    ap.add_argument("--opus-kbps", type=float, default=6.0, help="Opus bitrate (default 6)")
    ap.add_argument("--sample-seconds", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/images/spectrograms.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = codec.load(args.model, device="cpu")
    rate = model.sample_rate
    x = read_audio(args.clip, sample_rate=rate).samples.mean(dim=0, keepdim=True)  # (1, T)
    seconds = x.shape[1] / rate
    data = codec.compress(x, model, sample_rate=rate, num_quantizers=args.levels)
    ours = codec.decompress(data, model).data[:, : x.shape[1]]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write_audio(tmp / "clip.wav", x, rate)
        opus_bytes, opus = opus_roundtrip(tmp / "clip.wav", args.opus_kbps, tmp, rate)
    opus = opus[:, : x.shape[1]]
    prior = load_prior(args.model, codec=model, device="cpu")
    frames = round(args.sample_seconds * rate / model.downsample)
    tokens = prior.sample(1, (prior.config.levels, frames), seed=args.seed)
    sample = model.decode(tokens)[0]

    panels = [("original", x[0], "")]
    for name, y, size in (("vqcodec", ours, len(data)), ("Opus", opus, opus_bytes)):
        m = audio_metrics(x, y, rate, speech=True)
        pesq = f", PESQ-WB {m['pesq']:.2f}" if m.get("pesq") is not None else ""
        label = f"{size * 8 / seconds / 1000:.2f} kbps, mel distance {m['mel']:.3f}{pesq}"
        panels.append((name, y[0], label))
    panels.append(("sampled from the prior", sample[0], f"seed {args.seed}"))

    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 * len(panels)), constrained_layout=True)
    for ax, (name, y, label) in zip(axes, panels):
        db = spectrogram_db(y)
        top = int(db.shape[0] * min(1.0, 12000 / (rate / 2)))
        extent = (0, y.shape[-1] / rate, 0, top / db.shape[0] * rate / 2000)
        im = ax.imshow(db[:top], origin="lower", aspect="auto", extent=extent, vmin=-80, vmax=20, cmap="magma")
        ax.set_title(f"{name} {('(' + label + ')') if label else ''}", fontsize=9)
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("seconds")
    fig.colorbar(im, ax=axes, label="dB", shrink=0.6)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    from PIL import Image  # a 256-colour palette: a third of the bytes, no visible change

    with Image.open(args.out) as im:
        im.convert("RGB").quantize(256).save(args.out, optimize=True)
    print(f"wrote {args.out}: " + "; ".join(f"{n} {lab}" for n, _, lab in panels[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
