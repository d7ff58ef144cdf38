"""Two CPU processes (gloo, torchrun) keep bitwise-identical codebooks through k-means init and resets."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def test_two_ranks_keep_identical_codebooks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(ROOT / "tests" / "core" / "dist_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert a.keys() == b.keys()
    assert a["resets"].item() > 0 and a["resets"].item() == b["resets"].item()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"ranks disagree on {different}"
    assert a["vq.initialized"].item() == 1.0
