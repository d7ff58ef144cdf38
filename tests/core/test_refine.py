"""Encoder-side search (``encode(..., refine=steps)``, ``codec.core.refine``) on tiny models: the tokens decode,
through the plain ``decode``, at most as far from the input as the encoder's nearest codes (closer on the whole),
per item of a batch, with margins and across tiles; the window masks against a pixel-by-pixel reference; the weights
are untouched; bad settings are refused; the error split by latent cell sums to an item's error (against the training
losses and a float64 loop) and stays where it arises; keeping the best step per block is never worse than per item."""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from test_codec_model import tiny_audio, tiny_image

import codec.core.refine as refine
from codec.core.refine import MAX_REFINE_STEPS, check_refine, objective_by_cell
from codec.core.spectral import CompressedSTFTLoss, MultiResolutionMelLoss, frame_shares
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
    """Per-item squared error of the decoded tokens, through ``decode``, as the search weighs it: the item's outermost
    rows and columns ``REFINE_EDGE_WEIGHT`` times the rest."""
    y = m.decode(tokens, shape=x.shape[1:], margin=margin)
    w = torch.ones(x.shape[-2:])
    w[0], w[-1], w[:, 0], w[:, -1] = (refine.REFINE_EDGE_WEIGHT,) * 4
    return ((y - x).square() * w).flatten(1).sum(1) / (float(w.sum()) * x.shape[1])


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
                inside = 0 <= row < shape[0] and 0 <= col < shape[1]
                edge = row in (0, shape[0] - 1) or col in (0, shape[1] - 1)
                assert float(mask[i, j]) == (0.0 if not inside else refine.REFINE_EDGE_WEIGHT if edge else 1.0)


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


def test_frame_shares_by_hand():
    # 7 spectrogram frames with a hop of 3 samples, centred on samples 0, 3, ..., 18, owned by frames of 5 samples:
    # owners 0, 0, 1, 1, 2, 3, 3 (the last clamped: 18 // 5 = 3 of 4 frames).
    err = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]])  # (1, 2, 7)
    got = frame_shares(err, hop=3, frame=5, frames=4)
    want = torch.tensor([[2.0 + 3.0, 4.0 + 5.0, 6.0, 7.0 + 8.0]]) / 14.0
    torch.testing.assert_close(got, want)
    assert abs(float(got.sum()) - float(err.mean())) < 1e-6


@pytest.mark.parametrize("edge", [1.0, 8.0])
@pytest.mark.parametrize("cell", [1, 4])
def test_image_cells_sum_to_the_masked_mse(cell, edge):
    """Each cell's share of the weighted squared error (a float64 loop), over the item's summed weight; the weights as
    ``_window_mask`` makes them (1 inside, ``edge`` on the item's outermost lines, 0 on padding)."""
    g = torch.Generator().manual_seed(3)
    y, x = torch.rand(2, 3, 8, 12, generator=g) * 1.4 - 0.2, torch.rand(2, 3, 8, 12, generator=g)
    mask = torch.zeros(2, 1, 8, 12)
    mask[0, :, :5, :9] = 1.0
    mask[0, :, 4, :9] = mask[0, :, :5, 0] = edge
    mask[1] = 1.0
    got = objective_by_cell(y, x, mask, cell, None)
    assert got.shape == (2, 8 // cell, 12 // cell)
    yd, xd = y.double().clamp(0, 1), x.double()
    for b in range(2):
        weight = {(i, j): float(mask[b, 0, i, j]) for i in range(8) for j in range(12) if mask[b, 0, i, j] > 0}
        total_weight = sum(weight.values())
        total = sum(w * float((yd[b, c, i, j] - xd[b, c, i, j]) ** 2) for c in range(3) for (i, j), w in weight.items())
        assert abs(float(got[b].sum()) - total / (3 * total_weight)) < 1e-6
        for ci in range(8 // cell):
            for cj in range(12 // cell):
                own = [(i, j) for i, j in weight if i // cell == ci and j // cell == cj]
                err = sum(
                    weight[i, j] * float((yd[b, c, i, j] - xd[b, c, i, j]) ** 2) for c in range(3) for i, j in own
                )
                assert abs(float(got[b, ci, cj]) - err / (3 * total_weight)) < 1e-6


def test_audio_frames_sum_to_the_training_losses_and_stay_local():
    g = torch.Generator().manual_seed(4)
    hop, frames = 320, 12
    t = torch.arange(hop * frames) / 24000.0
    x = (0.4 * torch.sin(2 * torch.pi * 330.0 * t) + 0.02 * torch.randn(t.shape, generator=g))[None, None]
    y = x.clone()
    y[..., 5 * hop + 40 : 5 * hop + 200] += 0.3 * torch.randn(160, generator=g)  # a burst inside frame 5
    x, y = torch.cat([x, x]), torch.cat([y, x + 0.01 * torch.randn(x.shape, generator=g)])
    mask = torch.ones(2, 1, hop * frames)
    got = objective_by_cell(y, x, mask, hop, 24000)
    assert got.shape == (2, frames) and bool((got >= 0).all())
    mel, cstft = MultiResolutionMelLoss(24000), CompressedSTFTLoss()
    for b in range(2):
        yb = y[b : b + 1].clamp(-1.0, 1.0)  # as decode clamps
        want = mel(yb, x[b : b + 1]) + refine.AUDIO_CSTFT_WEIGHT * cstft(yb, x[b : b + 1])
        assert abs(float(got[b].sum()) - float(want)) < 1e-4 * float(want)
    # the burst's frame and its neighbours (the longest window, 2048 samples, spans 6.4 frames) carry nearly all
    assert float(got[0, 3:8].sum()) > 0.9 * float(got[0].sum())
    assert float(got[0, :2].sum() + got[0, 10:].sum()) < 1e-3 * float(got[0].sum())


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_blocks_are_never_worse_than_one_choice_per_item(modality, monkeypatch):
    """The search's path does not depend on the blocks (its gradient is the item's); so with blocks each item ends at
    most at the error of its best single step, the whole item's choice (one block per window)."""
    if modality == "image":
        m, x, kw = _trained(3), _smooth(3, 27, 38, seed=9), {"margin": 0}
        err = functools.partial(_mse, m, x, margin=0)
    else:
        torch.manual_seed(0)
        m, kw = tiny_audio(arch="stft", chunk_frames=750), {}
        t = torch.arange(320 * 9) / 24000.0
        x = torch.stack([0.5 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 530.0)])[:, None]
        mel, cstft = MultiResolutionMelLoss(24000), CompressedSTFTLoss()

        def err(tokens):
            y = m.decode(tokens, shape=x.shape[1:])
            return torch.stack(
                [mel(y[i : i + 1], x[i : i + 1]) + 0.25 * cstft(y[i : i + 1], x[i : i + 1]) for i in range(2)]
            )

    blocked = m.encode(x, 3, refine=10, **kw)
    monkeypatch.setitem(refine.REFINE_BLOCK, modality, 10**6)
    whole = m.encode(x, 3, refine=10, **kw)
    before, after = err(whole), err(blocked)
    assert bool((after <= before + 1e-6).all()), (before, after)


def test_blocks_gain_where_the_decoder_is_local(monkeypatch):
    """A decoder whose every pixel depends on its own latent cell alone (a 1 x 1 convolution, then nearest upsampling):
    the blocks' choices decode independently, so keeping each block's best step gains wherever the steps' ranks
    differ between blocks (long Adam steps, which overshoot in some places and not in others)."""
    m = _trained(3)
    q, dim = m.quantizer, m.quantizer.layers[0].embed.shape[1]
    torch.manual_seed(1)
    decoder = torch.nn.Sequential(torch.nn.Conv2d(dim, 3, 1), torch.nn.Upsample(scale_factor=8)).eval()
    decoder.requires_grad_(False)
    x = _smooth(2, 64, 96, seed=3)
    z = m.encoder(x).movedim(1, -1).detach()
    mask = torch.ones(2, 1, 64, 96)

    def err(idx):
        return (decoder(q.decode_indices(idx).movedim(-1, 1)).clamp(0, 1) - x).square().flatten(1).mean(1)

    monkeypatch.setitem(refine.REFINE_STEP, "image", 0.5)
    blocked = refine.refine_tokens(q, decoder, z, x, mask, 3, 10)
    monkeypatch.setitem(refine.REFINE_BLOCK, "image", 10**6)
    whole = refine.refine_tokens(q, decoder, z, x, mask, 3, 10)
    plain = refine.refine_tokens(q, decoder, z, x, mask, 3, 0)
    before, after = err(whole), err(blocked)
    assert bool((before < err(plain)).all())
    assert bool((after <= before + 1e-7).all()) and float(after.sum()) < float(before.sum()) - 1e-4, (before, after)


def test_a_heavier_rate_weight_in_the_search_never_loses_to_the_plain_tokens(monkeypatch):
    """The search may choose codes with a heavier rate weight than the model's (``REFINE_RATE_SCALE``); its step 0
    is then not the plain tokens, which stay a candidate: no item ends further from the input than they are."""
    m = copy.deepcopy(_trained(3))
    for layer in m.quantizer.layers:
        layer.rate_weight = 0.05
    x = _smooth(3, 27, 38, seed=4)
    plain = m.encode(x, margin=0)
    monkeypatch.setitem(refine.REFINE_RATE_SCALE, "image", 40.0)
    refined = m.encode(x, margin=0, refine=3)
    assert not torch.equal(refined, plain)
    assert bool((_mse(m, x, refined, 0) <= _mse(m, x, plain, 0) + 1e-7).all())
    heavy = m.quantizer.encode_indices(m.encoder(x).movedim(1, -1), rate_scale=40.0)  # step 0 of that search
    assert not torch.equal(heavy.movedim(-1, 1), plain)
