"""tools/frame_comb.py: the frame-rate comb measure against hand-computed values on noise and on lines in noise."""

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import frame_comb  # noqa: E402

RATE = 24000


def _noise(seconds: float, sigma: float, seed: int = 0) -> np.ndarray:
    return sigma * np.random.default_rng(seed).standard_normal(int(seconds * RATE))


def test_white_noise_has_no_comb():
    power = frame_comb.power_spectrum(_noise(20, 0.1), RATE)
    assert abs(frame_comb.comb_db(power, RATE, 75.0)) < 1.0


def test_lines_at_the_frame_rate_read_their_height_over_the_noise():
    # a Hann window of N samples turns a bin-centred cosine of amplitude a into a peak of (a N / 4)^2 and white noise
    # of variance s^2 into s^2 * 3N / 8 per bin, so each line stands 1 + a^2 N / (6 s^2) above its surround
    a, sigma, n = 0.01, 0.1, round(frame_comb.NFFT_SECONDS * RATE)
    t = np.arange(20 * RATE) / RATE
    lines = sum(a * np.cos(2 * np.pi * 75 * k * t + k) for k in range(10, 107))
    power = frame_comb.power_spectrum(lines + _noise(20, sigma), RATE)
    expected = 10 * np.log10(1 + a**2 * n / (6 * sigma**2))
    assert frame_comb.comb_db(power, RATE, 75.0) == pytest.approx(expected, abs=0.6)


def test_cli_measures_a_folder_and_rejects_an_empty_one(tmp_path, capsys):
    t = np.arange(4 * RATE) / RATE
    sf.write(tmp_path / "a.wav", sum(0.02 * np.cos(2 * np.pi * 75 * k * t) for k in range(10, 107)) / 4, RATE)
    assert frame_comb.main(["--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    height = float(out.split("comb ")[1].split(" dB")[0])
    assert height > 30  # pure lines with nothing between them
    (tmp_path / "empty").mkdir()
    assert frame_comb.main(["--data", str(tmp_path / "empty")]) == 2
