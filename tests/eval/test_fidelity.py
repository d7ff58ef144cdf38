"""Colour and edge fidelity measures against hand-computed values and a direct decoding."""

import pytest
import torch

from codec import Codec, ImageCodecConfig, QuantizerConfig
from codec.bitstream.compress import compress
from codec.bitstream.decompress import decompress
from codec.eval.fidelity import (
    CARD_COLOURS,
    MARGIN,
    PATCH,
    colour_card,
    colour_errors,
    colour_sweep,
    edge_ratios,
    sweep_card,
    sweep_colours,
)


def test_colour_card_layout():
    card, patches, ramps = colour_card()
    assert card.shape == (3, 2 * PATCH, len(CARD_COLOURS) * PATCH)
    green = dict(patches)["green"]
    assert torch.equal(card[:, :PATCH, green], torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, PATCH, PATCH))
    name, cols = ramps[0]  # red -> blue, left to right
    assert name == "red-blue"
    assert card[:, PATCH:, cols.start].tolist()[0][0] == 1.0 and card[2, PATCH, cols.stop - 1] == 1.0
    assert torch.all(card[0, PATCH, cols].diff() <= 0) and torch.all(card[2, PATCH, cols].diff() >= 0)


def test_edge_ratios_hand_computed():
    x = torch.zeros(3, 40, 50)
    y = torch.full_like(x, 0.1)  # interior squared error 0.01
    y[:, :, 0] = 0.2  # left column: 0.04, four times the interior
    y[:, -1, :] = 0.0  # bottom row: no error
    r = edge_ratios(x, y)
    assert r["left"] == pytest.approx(4 * (39 / 40) + 1 / 40 * 0)  # the bottom-left pixel is 0 too
    assert r["right"] == pytest.approx(39 / 40)
    assert r["top"] == pytest.approx((4 + 49) / 50)
    assert r["bottom"] == pytest.approx(0.0)


def _tiny_codec() -> Codec:
    """A 2-level image codec with its codebooks initialised from one batch, in eval mode."""
    q = QuantizerConfig(codebook_size=16, num_quantizers=2)
    m = Codec(
        ImageCodecConfig(arch="shuffle", norm_groups=0, base_channels=8, max_channels=8, latent_dim=4, quantizer=q)
    )
    m(torch.rand(2, 3, 32, 32))
    return m.eval()


def test_colour_errors_match_a_direct_decoding():
    m = _tiny_codec()
    rows = colour_errors(m, [1, 2], prior=None)
    card, patches, _ = colour_card()
    for row, n in zip(rows, [1, 2]):
        got = (decompress(compress(card, m, prior=None, num_quantizers=n), m).data.clamp(0, 1) * 255).round()
        err = (got - (card * 255).round()).abs()
        want = {
            k: float(err[:, MARGIN : PATCH - MARGIN, c.start + MARGIN : c.stop - MARGIN].amax()) for k, c in patches
        }
        assert row["level"] == n and row["flat_errors"] == want
        assert row["flat_max_error"] == max(want.values()) and want[row["flat_worst_patch"]] == row["flat_max_error"]
        assert 0 <= row["ramp_max_error"] <= 255


def test_sweep_colours_are_the_cube_edges():
    colours = sweep_colours()
    assert len(colours) == 12 * 14 + 8  # 14 inner values on each of the 12 edges, and the 8 corners
    assert len(set(colours)) == len(colours)
    corners = {(r, g, b) for r in (0, 255) for g in (0, 255) for b in (0, 255)}
    assert corners <= set(colours) and (255, 238, 0) in colours and (0, 34, 255) in colours
    for c in colours:
        assert sum(v in (0, 255) for v in c) >= 2 and all(v % 17 == 0 for v in c)
    card, cells = sweep_card()
    assert card.shape == (3, 11 * PATCH, 16 * PATCH) and len(cells) == 176
    rgb, ys, xs = cells[37]
    assert torch.equal(card[:, ys, xs], (torch.tensor(rgb, dtype=torch.float32) / 255).view(3, 1, 1).expand(3, 64, 64))


def test_colour_sweep_matches_a_direct_decoding():
    m = _tiny_codec()
    rows = colour_sweep(m, [1, 2], prior=None)
    colours = sweep_colours()
    for row, n in zip(rows, [1, 2]):
        # the grid rebuilt here, patch by patch, and each patch's worst interior error from the decoded grid
        grid = torch.zeros(3, 11 * PATCH, 16 * PATCH)
        for i, c in enumerate(colours):
            r, k = divmod(i, 16)
            grid[:, r * PATCH : (r + 1) * PATCH, k * PATCH : (k + 1) * PATCH] = torch.tensor(c).view(3, 1, 1) / 255
        got = (decompress(compress(grid, m, prior=None, num_quantizers=n), m).data.clamp(0, 1) * 255).round()
        err = (got - (grid * 255).round()).abs()
        worst = []
        for i in range(len(colours)):
            r, k = divmod(i, 16)
            y0, x0 = r * PATCH + MARGIN, k * PATCH + MARGIN
            worst.append(float(err[:, y0 : y0 + PATCH - 2 * MARGIN, x0 : x0 + PATCH - 2 * MARGIN].max()))
        assert row["level"] == n and row["colours"] == 176
        assert row["within_tolerance"] == sum(w <= 8 for w in worst) / 176
        assert row["max_error"] == max(worst) and tuple(row["worst_colour"]) == colours[worst.index(max(worst))]
        assert row["median_error"] == float(torch.tensor(worst).median())
