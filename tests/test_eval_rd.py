"""tools/eval_rd.py: PSNR against a hand computation, MS-SSIM of identical images, bpp matching against an
exhaustive scan of the peer's qualities, and the whole tool on a tiny codec (JSON and plot written)."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

import codec
from codec import Codec, ImageCodecConfig, QuantizerConfig
from codec.image_io import write_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import eval_rd  # noqa: E402


def test_psnr_matches_a_hand_computation():
    x = torch.zeros(1, 2, 2)
    y = torch.tensor([[[10 / 255, 0.0], [0.0, 0.0]]])  # one pixel off by 10 levels: MSE = 100 / 4
    assert eval_rd.psnr(x, y) == pytest.approx(10 * math.log10(255**2 / 25))
    assert eval_rd.psnr(x, x) == float("inf")


def test_ms_ssim_is_one_for_identical_images_and_lower_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 64, 80, generator=g)
    assert eval_rd.ms_ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.2 * torch.randn(3, 64, 80, generator=g)).clamp(0, 1)
    assert eval_rd.ms_ssim(x, noisy) < 0.99


@pytest.mark.parametrize("peer", ["JPEG", "WebP"])
def test_match_bpp_finds_the_closest_quality(peer):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 40), indexing="ij")
    x = torch.stack([xx, yy, (xx * 7).sin() * 0.5 + 0.5])
    sizes = {q: eval_rd.peer_encode(x, peer, q)[0] for q in range(1, 101)}
    target = (sizes[20] + sizes[60]) / 2
    q, size, decoded = eval_rd.match_bpp(x, peer, target)
    assert size == sizes[q] and decoded.shape == x.shape
    best = min(abs(s - target) for s in sizes.values())
    assert abs(size - target) <= best * 1.0 + 0.05 * target  # sizes are not strictly monotone in quality


def test_the_tool_writes_json_and_a_plot(tmp_path, capsys):
    torch.manual_seed(0)
    q = QuantizerConfig(codebook_size=32, num_quantizers=2)
    m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    m(torch.rand(2, 3, 32, 32))
    codec.save_model(tmp_path / "img", m.eval())
    (tmp_path / "data").mkdir()
    for i in range(2):
        write_image(tmp_path / "data" / f"{i}.png", torch.rand(3, 40, 48))
    out = tmp_path / "rd"
    assert eval_rd.main(["--model", str(tmp_path / "img"), "--data", str(tmp_path / "data"), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert {(s["codec"], s["level"]) for s in result["summary"]} == {
        (c, lvl) for c in ("vqcodec", "JPEG", "WebP") for lvl in (1, 2)
    }
    ours = [r for r in result["rows"] if r["codec"] == "vqcodec"]
    assert all(r["bpp"] == pytest.approx(r["bytes"] * 8 / (40 * 48)) for r in ours)
    assert out.with_suffix(".png").stat().st_size > 1000
