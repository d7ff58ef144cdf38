"""tools/latent_ceiling.py on a tiny image codec: the optimised latent never measures worse than the encoder's on the
search's objective (checked against a float64 squared error through the decoder) and is better after a few steps;
the command line reports every decoding and refuses an empty folder."""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import latent_ceiling  # noqa: E402

from codec.core.config import ImageCodecConfig, QuantizerConfig  # noqa: E402
from codec.core.model import Codec  # noqa: E402


def _tiny_image() -> Codec:
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, num_quantizers=2)
    m = Codec(ImageCodecConfig(downsample=4, base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    m(torch.rand(2, 3, 16, 16))  # k-means init on a first batch
    return m.eval()


def _smooth(h: int, w: int, seed: int) -> torch.Tensor:
    coarse = torch.rand(1, 3, 3, 3, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)


def _mse64(model, latent, x) -> float:
    y = latent_ceiling.render(model, latent, x.shape[2:]).double()
    return float((y - x.double()).square().mean())


def test_the_optimised_latent_decodes_closer_than_the_encoders():
    m = _tiny_image()
    x = _smooth(13, 22, seed=1)  # not whole cells: padded, the padding left out of the objective
    z0, z_zero = latent_ceiling.optimise_latent(m, x, 0)
    torch.testing.assert_close(z0, z_zero, rtol=0, atol=0)
    z, best = latent_ceiling.optimise_latent(m, x, 30, step=0.3)  # an untrained decoder: larger steps
    torch.testing.assert_close(z, z0, rtol=0, atol=0)
    assert best.shape == z.shape == (1, 8, 4, 6)
    assert _mse64(m, best, x) < 0.9 * _mse64(m, z, x)


def test_cli_reports_each_decoding_and_refuses_an_empty_folder(tmp_path, capsys, monkeypatch):
    m = _tiny_image()
    import codec

    monkeypatch.setattr(codec, "load", lambda name: m)
    for i, (h, w) in enumerate([(13, 22), (16, 9)]):
        pixels = (_smooth(h, w, seed=i)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    out = tmp_path / "c.json"
    assert latent_ceiling.main(["--model", "tiny", "--data", str(tmp_path), "--steps", "5", "--refine", "3",
                                "--out", str(out)]) == 0  # fmt: skip
    got = json.loads(out.read_text())
    assert [r["file"] for r in got["rows"]] == ["0.png", "1.png"]
    printed = capsys.readouterr().out
    for kind in ("plain", "search", "latent", "optimised"):
        assert f"  {kind} " in printed
        mean = sum(r[kind]["psnr"] for r in got["rows"]) / 2
        assert abs(got["mean"][kind]["psnr"] - mean) < 1e-9
    assert all(r["optimised"]["psnr"] >= r["latent"]["psnr"] - 0.05 for r in got["rows"])  # 8-bit rounding aside
    (tmp_path / "empty").mkdir()
    assert latent_ceiling.main(["--model", "tiny", "--data", str(tmp_path / "empty")]) == 2
    assert "latent_ceiling:" in capsys.readouterr().err
