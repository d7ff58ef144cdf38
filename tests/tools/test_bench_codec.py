"""tools/bench_codec.py times the trained codecs users get (the bundled models, or a run directory), not a default
config: its rows name the model and count that model's parameters, and its tokens are the model's own."""

import json
import sys
from pathlib import Path

import pytest
import torch

import codec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench_codec  # noqa: E402


def _params(name: str) -> int:
    return sum(p.numel() for p in codec.load(name).parameters())


def test_bench_codec_times_the_bundled_models(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench_codec.main(["--threads", "1", "--reps", "1", "--seconds", "0.5", "--skip-encodec", "--device", "cpu",
                      "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    (audio,), (image,) = result["audio"], result["image"]
    assert audio["model"] == "audio" and audio["params"] == _params("audio")
    assert image["model"] == "image" and image["params"] == _params("image")
    config = codec.load("audio").config
    assert audio["kbps"] == pytest.approx(8 * 10 * config.sample_rate / config.hop / 1000)  # 8 levels of 1,024
    assert audio["total_s"] > 0 and audio["x_real_time"] == pytest.approx(0.5 / audio["total_s"])
    assert "vqcodec audio" in capsys.readouterr().out


def test_bench_codec_case_is_the_model_itself():
    case = bench_codec.our_audio_case("audio", 0.5, torch.device("cpu"))
    model = codec.load("audio").float().eval()
    with torch.inference_mode():
        assert torch.equal(case.encode(case.x), model.encode(case.x))


def test_bench_codec_refuses_a_model_of_the_other_kind(capsys):
    with pytest.raises(SystemExit):
        bench_codec.our_audio_case("image", 0.5, torch.device("cpu"))
    assert "is an image codec" in capsys.readouterr().err
