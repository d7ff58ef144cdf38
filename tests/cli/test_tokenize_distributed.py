"""`codec tokenize` under torchrun: two CPU processes (gloo) share the shards of a half-finished run, and the merged
tokens equal those of one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from cli_helpers import run

import codec
import prior.data
from codec import Codec, ImageCodecConfig, QuantizerConfig
from codec.media.image_io import write_image

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_merge_into_the_single_process_tokens(tmp_path, monkeypatch, capsys):
    q = QuantizerConfig(codebook_size=32, num_quantizers=2)
    m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q, tile=2, tile_overlap=6))
    m(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp_path / "codec", m.eval())
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for i in range(8):  # widths 64..120, grayscale and colour, the wider ones tiled (tiles of 2 + 2 x 6 tokens)
        channels = 3 if i % 3 else 1
        write_image(data / ("sub" if i % 4 == 0 else "") / f"img{i}.png", torch.rand(channels, 40, 120 - 8 * i))
    (data / "broken.png").write_bytes(b"not a png")
    args = ("tokenize", "--codec", tmp_path / "codec", "--data", data, "--shard-size", 2, "--out")
    assert run(*args, tmp_path / "one") == 0  # 9 files: 5 shards

    real = prior.data._encode_files  # a run killed after its first shard, to be finished by two processes

    def first_shard_only(*a):
        if (tmp_path / "two" / "shard_00000.safetensors").exists():
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(prior.data, "_encode_files", first_shard_only)
    assert run(*args, tmp_path / "two") == 130
    monkeypatch.undo()
    capsys.readouterr()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd = [*launch, "-m", "codec.cli", *[str(a) for a in args], str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("tokenized 8 files into 5 shards") == 1  # one report, from process 0
    assert "1 shards already done, 2 processes" in proc.stdout

    one, two = prior.data.load_tokens(tmp_path / "one"), prior.data.load_tokens(tmp_path / "two")
    assert two.names == one.names and len(one.names) == 8
    assert all(torch.equal(a, b) for a, b in zip(one.tokens, two.tokens))
    index = json.loads((tmp_path / "two" / "index.json").read_text())
    assert sorted(index["shards"]) == [f"shard_{i:05d}.safetensors" for i in range(5)]
    assert index["shards"] == json.loads((tmp_path / "one" / "index.json").read_text())["shards"]
