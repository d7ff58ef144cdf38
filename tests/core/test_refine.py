"""Encoder-side search (``encode(..., refine=steps)``, ``codec.core.refine``) on tiny models: the tokens decode,
through the plain ``decode``, at most as far from the input as the encoder's nearest codes (closer on the whole),
per item of a batch, with margins and across tiles; the window masks against a pixel-by-pixel reference; the weights
are untouched; bad settings are refused."""

import functools

import pytest
import torch
import torch.nn.functional as F
from test_codec_model import tiny_audio, tiny_image

from codec.core.refine import MAX_REFINE_STEPS, check_refine
from codec.core.spectral import CompressedSTFTLoss, MultiResolutionMelLoss
from codec.core.windows import framing


def _smooth(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Images made of low-frequency colour fields (what a search can improve on a random tiny model)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, 3, 3, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)


@functools.cache
def _trained(n_q: int, arch: str = "conv", tile: int = 64, tile_overlap: int = 6):
    """A tiny image codec fitted for a few steps to smooth images, so that decoding means something."""
    torch.manual_seed(0)
    m = tiny_image(8, n_q=n_q, arch=arch, tile=tile, tile_overlap=tile_overlap).train()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    for step in range(40):
        x = _smooth(8, 32, 32, seed=100 + step)
        out = m(x)
        loss = F.mse_loss(out.x_hat, x) + out.vq.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in m.parameters():
        p.grad = None
    return m.eval()


def _mse(m, x, tokens, margin):
    """Per-item squared error of the decoded tokens, through ``decode``."""
    y = m.decode(tokens, shape=x.shape[1:], margin=margin)
    return (y - x).square().flatten(1).mean(1)


@pytest.mark.parametrize("arch", ["conv", "shuffle"])
@pytest.mark.parametrize("margin", [0, 2])
@pytest.mark.parametrize("n_q,levels", [(1, None), (3, 1), (3, 3)])
def test_refined_tokens_decode_closer(arch, margin, n_q, levels):
    m = _trained(n_q, arch)
    x = _smooth(3, 27, 38, seed=n_q)
    plain = m.encode(x, levels, margin=margin)
    refined = m.encode(x, levels, margin=margin, refine=12)
    assert refined.shape == plain.shape and refined.dtype == torch.int64
    before, after = _mse(m, x, plain, margin), _mse(m, x, refined, margin)
    assert bool((after <= before + 1e-7).all()), (before, after)  # each item: never worse than step 0
    assert float(after.mean()) < float(before.mean())  # the bundled model's gains: tests/cli/test_bundled.py
    torch.testing.assert_close(m.encode(x, levels, margin=margin, refine=12), refined, rtol=0, atol=0)


def test_refine_zero_is_plain_encoding():
    m = tiny_image(8, n_q=2)
    x = torch.rand(2, 3, 19, 30)
    for margin in (0, 3):
        torch.testing.assert_close(m.encode(x, margin=margin, refine=0), m.encode(x, margin=margin), rtol=0, atol=0)


def test_refine_across_tiles_and_in_lists():
    m = _trained(2, tile=2, tile_overlap=1)  # 45 x 70 px: 6 x 9 tokens in many tiles
    x = _smooth(1, 45, 70, seed=5)
    plain, refined = m.encode(x, margin=2), m.encode(x, margin=2, refine=10)
    assert float(_mse(m, x, refined, 2)[0]) < float(_mse(m, x, plain, 2)[0])
    items = [x[0], _smooth(1, 21, 13, seed=6)[0], _smooth(1, 45, 70, seed=7)[0][:1]]  # grayscale third
    got = m.tokenize(items, margin=2, refine=10)
    for item, t in zip(items, got):
        ref = m.encode(item[None], margin=2)
        assert t.shape == ref[0].shape
        rgb = item[None].expand(1, 3, -1, -1)
        assert float(_mse(m, rgb, t[None], 2)[0]) <= float(_mse(m, rgb, ref, 2)[0]) + 1e-7


@pytest.mark.parametrize("margin", [0, 1, 5])
@pytest.mark.parametrize("shape", [(1, 1), (13, 30), (45, 70)])
def test_window_masks_by_pixel(margin, shape):
    m = tiny_image(8, tile=2, tile_overlap=1)
    f = 8
    (gh, lh), (gw, lw) = framing(shape[0], f, margin), framing(shape[1], f, margin)
    for window in m._window_plan((gh, gw)):
        mask = m._window_mask(window, shape, (lh, lw))[0, 0]
        (_, _, r0, r1), (_, _, c0, c1) = window
        assert mask.shape == ((r1 - r0) * f, (c1 - c0) * f)
        for i in range(mask.shape[0]):
            row = r0 * f - lh + i  # the image row under this window row
            for j in range(mask.shape[1]):
                col = c0 * f - lw + j
                assert float(mask[i, j]) == float(0 <= row < shape[0] and 0 <= col < shape[1])


def test_refine_leaves_the_model_alone():
    m = tiny_image(8, n_q=2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.encode(_smooth(2, 16, 24, seed=1), refine=5)
    assert all(p.grad is None for p in m.parameters())
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not m.training


def test_refine_is_refused_where_it_does_not_apply():
    assert check_refine(0) == 0 and check_refine(MAX_REFINE_STEPS) == MAX_REFINE_STEPS
    for bad in (-1, MAX_REFINE_STEPS + 1, 2.0, "3", None, True):
        with pytest.raises(ValueError, match="refine must be an int"):
            check_refine(bad)
    with pytest.raises(ValueError, match="refine must be an int"):
        tiny_image(8).tokenize([torch.rand(3, 8, 8)], refine=-2)


@pytest.mark.parametrize("arch", ["seanet", "stft"])
@pytest.mark.parametrize("chunk_frames", [3, 750])
def test_refined_audio_tokens_decode_closer_on_the_spectral_loss(arch, chunk_frames):
    """Audio: the objective is the log-mel L1 plus a quarter of the compressed STFT error, computed here independently
    with the training losses on ``decode``'s output, item by item. In one window each item is never worse than step 0;
    in chunks (3 frames of 9) the search runs per chunk, so only the whole is asserted closer."""
    torch.manual_seed(0)
    m = tiny_audio(arch=arch, chunk_frames=chunk_frames)
    hop = m.downsample
    g = torch.Generator().manual_seed(1)
    t = torch.arange(hop * 9) / 24000.0
    x = torch.stack([0.5 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 530.0)])[:, None]
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    mel, cstft = MultiResolutionMelLoss(24000), CompressedSTFTLoss()

    def loss(tokens):
        y = m.decode(tokens, shape=x.shape[1:])
        return torch.stack(
            [mel(y[i : i + 1], x[i : i + 1]) + 0.25 * cstft(y[i : i + 1], x[i : i + 1]) for i in range(2)]
        )

    plain, refined = m.encode(x, 3), m.encode(x, 3, refine=8)
    assert refined.shape == plain.shape
    before, after = loss(plain), loss(refined)
    assert float(after.sum()) < float(before.sum()), (before, after)
    if chunk_frames >= 9:
        assert bool((after <= before + 1e-6).all()), (before, after)
