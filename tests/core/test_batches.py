"""Codec.tokenize / detokenize: lists of items of different sizes, batched internally, against per-item
encode and decode; the window planning and batching helpers."""

import pytest
import torch
from test_codec_model import tiny_audio, tiny_image

from codec.core.windows import batched, plan_windows, window_shape


def assert_same_codes(model, items, got, num_quantizers=None):
    """``got`` equals per-item ``encode`` but for near-ties: batching may change the networks' float rounding, and
    a latent within rounding of two codes may then get the other one (at most 1% of the tokens here)."""
    for i, (x, t) in enumerate(zip(items, got, strict=True)):
        want = model.encode(x[None], num_quantizers=num_quantizers)[0]
        assert t.shape == want.shape and t.dtype == torch.int64, i
        differ = (t != want).float().mean().item()
        assert differ <= 0.01, f"item {i}: {differ:.2%} of the tokens differ from per-item encode"


@pytest.mark.parametrize("arch", ["conv", "shuffle"])
def test_image_list_of_sizes_matches_per_item(arch):
    m = tiny_image(8, n_q=3, arch=arch, tile=4, tile_overlap=6)
    items = [torch.rand(3, 40, 56), torch.rand(3, 40, 56), torch.rand(1, 40, 56), torch.rand(3, 1, 1)]
    items += [torch.rand(3, 200, 333), torch.rand(3, 17, 130)]  # tiled: equal tiles of both run together
    got = m.tokenize(items)
    assert_same_codes(m, items, got)
    assert_same_codes(m, items, m.tokenize(items, num_quantizers=2), num_quantizers=2)
    ys = m.detokenize(got, shapes=[x.shape for x in items])
    for x, t, y in zip(items, got, ys):
        assert y.shape == x.shape and y.dtype == torch.float32
        torch.testing.assert_close(y, m.decode(t[None], shape=x.shape)[0], rtol=0, atol=1e-5)
    full = m.detokenize(got)  # no shapes: the padded size, model channels
    assert [tuple(y.shape) for y in full] == [(3, 8 * t.shape[-2], 8 * t.shape[-1]) for t in got]


def test_image_tokens_of_fewer_levels_decode_together():
    m = tiny_image(8, n_q=3)
    x = torch.rand(3, 24, 32)
    tokens = [m.encode(x[None])[0], m.encode(x[None], num_quantizers=1)[0], m.encode(x[None])[0][:2]]
    ys = m.detokenize(tokens, shapes=[x.shape] * 3)
    for t, y in zip(tokens, ys):
        torch.testing.assert_close(y, m.decode(t[None], shape=x.shape)[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["seanet", "stft"])
def test_audio_list_of_lengths_matches_per_item(arch):
    m = tiny_audio(2, arch=arch, chunk_frames=7, chunk_context=16)
    lengths = [320 * 5, 320 * 5, 1, 320 * 61 + 17, 320 * 80, 999]
    items = [torch.rand(2, n) * 2 - 1 for n in lengths]
    got = m.tokenize(items)
    assert_same_codes(m, items, got)
    ys = m.detokenize(got, shapes=[x.shape for x in items])
    for x, t, y in zip(items, got, ys):
        assert y.shape == x.shape
        torch.testing.assert_close(y, m.decode(t[None], shape=x.shape)[0], rtol=0, atol=1e-3)  # fp32 rounding


def test_lists_empty_and_bad_items():
    m = tiny_image(8)
    assert m.tokenize([]) == [] and m.detokenize([]) == []
    with pytest.raises(ValueError, match=r"items\[1\]: .*lie in \[0, 1\]"):
        m.tokenize([torch.rand(3, 8, 8), torch.rand(3, 8, 8) * 9])
    with pytest.raises(ValueError, match=r"items\[0\]: .*torch.Tensor"):
        m.tokenize(["photo.png"])
    with pytest.raises(ValueError, match=r"tokens\[0\]: .*token values"):
        m.detokenize([torch.full((2, 2), 99)])
    with pytest.raises(ValueError, match="2 shapes for 1"):
        m.detokenize([torch.zeros(2, 2, dtype=torch.int64)], shapes=[(3, 16, 16)] * 2)


def test_windows_and_batches():
    assert plan_windows((5, 7), 8, 2) == [((0, 5, 0, 5), (0, 7, 0, 7))]
    windows = plan_windows((20,), 8, 2)
    assert windows == [((0, 8, 0, 10),), ((8, 16, 6, 18),), ((16, 20, 14, 20),)]
    assert [window_shape(w) for w in windows] == [(10,), (12,), (6,)]
    jobs = [("a", (4, 4)), ("b", (2, 2)), ("c", (4, 4)), ("d", (4, 4))]
    groups = batched(jobs, lambda j: (None, j[1]), positions=32)
    assert [[j[0] for j in g] for g in groups] == [["a", "c"], ["d"], ["b"]]
    assert batched(jobs[:1], lambda j: (None, j[1]), positions=1) == [jobs[:1]]  # never an empty batch
