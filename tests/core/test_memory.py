"""Tiled image and chunked audio encoding keep peak memory bounded (measured in a fresh process)."""

import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("mem_worker.py")
MIB = 1 << 20


def _peak(modality: str, mode: str) -> int:
    out = subprocess.run(
        [sys.executable, str(WORKER), modality, mode], capture_output=True, text=True, timeout=300, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="exact peak RSS needs /proc/self/clear_refs")
@pytest.mark.parametrize("modality", ["image", "audio"])
def test_windowed_encoding_bounds_memory(modality):
    tiled, whole = _peak(modality, "tiled"), _peak(modality, "whole")
    # Whole-input activations of the tiny model: 8 channels x 1024 x 1024 fp32 = 32 MiB per image layer;
    # 8 channels x 1.44 M samples fp32 = 44 MiB per audio layer. Windows need a small fraction of that.
    assert whole > 60 * MIB, f"whole-input encoding took only {whole / MIB:.1f} MiB: the test measures nothing"
    assert tiled < 0.25 * whole, f"windowed {tiled / MIB:.1f} MiB vs whole {whole / MIB:.1f} MiB"
