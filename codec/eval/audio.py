"""Audio for rate-distortion evaluation: SI-SNR, mel distance, PESQ and STOI, and the Opus / Vorbis peers through
Debian's opus-tools and vorbis-tools (see ``codec.eval.rd``)."""

import subprocess
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from codec.bitstream.compress import compress
from codec.bitstream.decompress import decompress
from codec.bitstream.rate import level_rate
from codec.core.spectral import mel_distance
from codec.errors import VQCodecError
from codec.eval.image import skip
from codec.media import read_audio, resample, to_audio_channels, write_audio
from codec.train.metrics import si_snr

AUDIO_METRICS = ("kbps", "si_snr", "mel", "pesq", "stoi")


def optional_speech_metrics():
    """(pesq_fn, stoi_fn) for the packages that import, else None in their place."""
    try:
        from pesq import pesq as pesq_fn
    except ImportError:
        pesq_fn = None
    try:
        from pystoi import stoi as stoi_fn
    except ImportError:
        stoi_fn = None
    return pesq_fn, stoi_fn


def audio_metrics(ref: torch.Tensor, est: torch.Tensor, rate: int, speech: bool) -> dict:
    """SI-SNR, mel distance and (speech only, where installed) PESQ-WB and STOI of (C, T) signals."""
    n = min(ref.shape[-1], est.shape[-1])
    ref, est = ref[..., :n].float(), est[..., :n].float()
    out = {
        "si_snr": float(si_snr(est[None], ref[None])[0]),
        "mel": float(mel_distance(est[None], ref[None], rate)[0]),
        "pesq": None,
        "stoi": None,
    }
    if speech:
        pesq_fn, stoi_fn = optional_speech_metrics()
        r, e = ref.mean(0).double(), est.mean(0).double()
        if pesq_fn is not None:
            r16, e16 = resample(r[None].float(), rate, 16000)[0], resample(e[None].float(), rate, 16000)[0]
            try:
                out["pesq"] = float(pesq_fn(16000, r16.numpy(), e16.numpy(), "wb"))
            except Exception as err:  # pesq raises its own errors on silent or too short signals
                print(f"PESQ skipped: {err}")
        if stoi_fn is not None:
            out["stoi"] = float(stoi_fn(r.numpy(), e.numpy(), rate, extended=False))
    return out


def run_tool(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True)
    except FileNotFoundError:
        raise SystemExit(f"{cmd[0]} is not installed (apt-get install opus-tools vorbis-tools)") from None
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"{' '.join(cmd)} failed: {e.stderr.decode(errors='replace').strip()}") from None


def opus_roundtrip(wav: Path, kbps: float, tmp: Path, rate: int) -> tuple[int, torch.Tensor]:
    """(bytes, decoded (C, T) at ``rate``) of an Opus file at a hard CBR bitrate."""
    ogg, out = tmp / "peer.opus", tmp / "peer_dec.wav"
    # no comment padding and no tags: the Ogg file holds little beyond the codec's own headers and pages
    cmd = ["opusenc", "--quiet", "--hard-cbr", "--bitrate", f"{kbps:g}", "--padding", "0", "--discard-comments"]
    run_tool([*cmd, str(wav), str(ogg)])
    run_tool(["opusdec", "--quiet", "--rate", str(rate), str(ogg), str(out)])
    return ogg.stat().st_size, read_audio(out, sample_rate=rate).samples


def vorbis_roundtrip(wav: Path, tmp: Path, rate: int) -> tuple[int, torch.Tensor]:
    """(bytes, decoded) of Vorbis at its lowest quality setting (-q -1)."""
    ogg = tmp / "peer.ogg"
    run_tool(["oggenc", "-Q", "-q", "-1", "-o", str(ogg), str(wav)])
    return ogg.stat().st_size, read_audio(ogg, sample_rate=rate).samples


def is_speech(path: Path, root: Path | None = None) -> bool:
    """Whether a folder named ``speech`` holds ``path``: ``root`` (the evaluated folder) itself or one below it,
    when ``root`` is given; the folders above ``root`` do not count."""
    parts = path.relative_to(root.parent).parts if root is not None else path.parts
    return "speech" in parts[:-1]


def evaluate_audio(
    model,
    files,
    levels,
    prior="auto",
    opus_kbps=(6.0, 9.0, 12.0),
    all_speech=False,
    root=None,
    skipped=None,
    refine: int = 0,
) -> list[dict]:
    """Rows of measurements (see the module docstring). A file is speech if ``all_speech`` or a folder named
    ``speech`` holds it below ``root``; a file that cannot be read is reported, added to ``skipped``, left out.
    ``refine``: ``compress``'s."""
    rate = model.sample_rate
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for path in tqdm(files, desc="eval", unit="file", disable=None):  # None: a bar only on a terminal
            try:
                ref = to_audio_channels(read_audio(path, sample_rate=rate).samples, model.channels)
            except (VQCodecError, OSError) as e:
                skip(path, e, skipped)
                continue
            seconds = ref.shape[-1] / rate
            speech = all_speech or is_speech(path, root)
            wav = tmp / "ref.wav"
            write_audio(wav, ref, rate, subtype="FLOAT")
            base = {"file": str(path.name), "speech": speech, "seconds": seconds}
            results = []  # (codec, level, bytes, decoded, extra fields)
            for n in levels:
                data = compress(wav, model, prior=prior, num_quantizers=n, refine=refine)
                results.append(("vqcodec", n, len(data), decompress(data, model).data, {}))
            for k, kbps in enumerate(opus_kbps):
                results.append(("Opus", k, *opus_roundtrip(wav, kbps, tmp, rate), {"nominal_kbps": kbps}))
            results.append(("Vorbis", 0, *vorbis_roundtrip(wav, tmp, rate), {}))
            for name, level, size, est, extra in results:
                row = {**base, "codec": name, "level": level, "bytes": size, "kbps": size * 8 / seconds / 1000}
                rows.append({**row, **extra, **audio_metrics(ref, est, rate, speech)})
    return rows


def default_audio_levels(model) -> list[int]:
    """The residual levels of 1.5, 3 and 6 kbps (what the bundled model is made for), within the model's range."""
    per_level = level_rate(model) / 1000  # kbps
    want = [max(1, round(k / per_level)) for k in (1.5, 3.0, 6.0)]
    return sorted({min(n, model.num_quantizers) for n in want})
