"""The README figure tools' own computations against hand-computed values."""

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_audio_figure  # noqa: E402


def test_spectrogram_puts_a_tone_in_its_bin_at_its_level():
    rate, n_fft, freq = 24000, 1024, 3000.0  # bin 128 exactly
    t = torch.arange(rate, dtype=torch.float64) / rate
    db = make_audio_figure.spectrogram_db(torch.sin(2 * math.pi * freq * t), n_fft=n_fft, hop=256)
    assert db.shape == (n_fft // 2 + 1, rate // 256 + 1)
    middle = db[:, db.shape[1] // 2]
    assert int(middle.argmax()) == round(freq / rate * n_fft)
    # a unit sine under a Hann window: peak |X| = n_fft / 4 (the window's sum / 2)
    np.testing.assert_allclose(float(middle.max()), 20 * math.log10(n_fft / 4), atol=0.01)
    assert float(middle[:100].max()) < float(middle.max()) - 60  # far from the tone: the window's leakage only
    assert float(make_audio_figure.spectrogram_db(torch.zeros(4096)).min()) == -100.0  # the floor
