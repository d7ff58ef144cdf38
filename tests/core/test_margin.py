"""Images coded inside a margin of replicated edge (``encode(..., margin=m)``, ``codec.core.windows.framing``):
against an independent reference, the image explicitly padded with ``F.pad(mode="replicate")`` and coded without
a margin; windows (tiles) included; the crop back; lists; bad margins."""

import pytest
import torch
import torch.nn.functional as F
from test_batches import assert_same_codes
from test_codec_model import tiny_audio, tiny_image

from codec.core.windows import MAX_MARGIN, framing


def _padded(x: torch.Tensor, f: int, margin: int) -> tuple[torch.Tensor, int, int]:
    """x (B, C, H, W) centred in ceil((H + 2m) / f) x ceil((W + 2m) / f) tokens of replicated edge, by hand."""
    H, W = x.shape[-2:]
    gh, gw = -(-(H + 2 * margin) // f), -(-(W + 2 * margin) // f)
    top, left = (gh * f - H) // 2, (gw * f - W) // 2
    return F.pad(x, (left, gw * f - W - left, top, gh * f - H - top), mode="replicate"), top, left


def test_framing_by_hand():
    assert framing(512, 8) == (64, 0) and framing(341, 8) == (43, 0)  # no margin: ceil, image at the start
    assert framing(512, 8, 2) == (65, 4)  # 516 px at least: 520, 4 before and 4 after
    assert framing(341, 8, 2) == (44, 5)  # 345 at least: 352, 11 px of edge, 5 before and 6 after
    assert framing(508, 8, 2) == (64, 2)  # exactly 2 on each side
    assert framing(1, 8, 1) == (1, 3)
    for size in range(1, 40):
        for f in (4, 8, 16):
            for m in (1, 2, 5):
                grid, lead = framing(size, f, m)
                after = grid * f - size - lead
                assert min(lead, after) >= m and abs(lead - after) <= 1 and (grid - 1) * f < size + 2 * m


@pytest.mark.parametrize("arch", ["conv", "shuffle"])
@pytest.mark.parametrize("margin", [1, 2, 5])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (9, 8), (40, 33), (70, 29)])
def test_margin_equals_replicate_padding_by_hand(arch, margin, shape):
    m = tiny_image(8, n_q=2, arch=arch, tile=3, tile_overlap=2)  # 70 x 29 spans several tiles
    x = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(sum(shape)))
    ref, top, left = _padded(x, 8, margin)
    tokens = m.encode(x, margin=margin)
    torch.testing.assert_close(tokens, m.encode(ref), rtol=0, atol=0)
    y = m.decode(tokens, shape=x.shape[1:], margin=margin)
    want = m.decode(tokens)[..., top : top + shape[0], left : left + shape[1]]
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    if tokens.shape[-2:] != m.encode(x).shape[-2:]:  # a grid the image without a margin does not fit
        with pytest.raises(ValueError, match="does not match tokens"):
            m.decode(tokens, shape=x.shape[1:])


def test_margin_with_lists_grayscale_and_levels():
    m = tiny_image(8, n_q=3, tile=4, tile_overlap=2)
    items = [torch.rand(3, 21, 35), torch.rand(1, 21, 35), torch.rand(3, 50, 9)]
    got = m.tokenize(items, num_quantizers=2, margin=2)
    for x, t in zip(items, got):
        ref, _, _ = _padded(x[None].expand(1, 3, -1, -1), 8, 2)
        assert t.shape == m.encode(ref, num_quantizers=2)[0].shape
    assert_same_codes(m, [_padded(x[None], 8, 2)[0][0] for x in items], got, num_quantizers=2)
    ys = m.detokenize(got, shapes=[x.shape for x in items], margin=2)
    for x, t, y in zip(items, got, ys):
        assert y.shape == x.shape
        torch.testing.assert_close(y, m.decode(t[None], shape=x.shape, margin=2)[0], rtol=0, atol=1e-5)


def test_bad_margins_are_refused():
    m = tiny_image(8)
    x = torch.rand(1, 3, 16, 16)
    for bad in (-1, MAX_MARGIN + 1, 2.0, True):
        with pytest.raises(ValueError, match="margin must be an int"):
            m.encode(x, margin=bad)
    a = tiny_audio()
    with pytest.raises(ValueError, match="margin is for images"):
        a.encode(torch.rand(1, 1, 800), margin=2)
