"""``compress(..., fit="coded")``: with a rate target, the most residual levels whose whole file is within it,
checked against an exhaustive reference (every level count coded with ``num_quantizers``) on the bundled models,
whose entropy-constrained upper levels code far below their bit-packed rate."""

from pathlib import Path

import pytest
import torch

import codec
from codec.bitstream.rate import choose_levels
from codec.media import read_image
from codec.media.audio_io import read_audio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def photo():
    return read_image(EXAMPLES / "icecold.png").pixels[:, :128, :160].contiguous()  # (3, 128, 160)


@pytest.fixture(scope="module")
def speech():
    a = read_audio(EXAMPLES / "speech.flac", sample_rate=24000)
    return torch.as_tensor(a.samples).float().mean(0, keepdim=True)[:, :36000].contiguous()  # (1, 1.5 s)


def reference(x, model, rate_of, target, **kw):
    """The bytes the rule must give: every level count coded, the most whose file is within ``target``, but never
    fewer than the bit-packed rule's count."""
    files = {n: codec.compress(x, model, num_quantizers=n, **kw) for n in range(1, model.num_quantizers + 1)}
    floor = choose_levels(model, target).levels
    fits = [n for n in files if rate_of(files[n]) <= target]
    return files, max([floor, *fits])


@pytest.mark.parametrize(("between", "refine"), [((3, 4), 0), ((5, 6), 0), ((3, 4), 2)])
def test_images_keep_the_most_levels_whose_file_fits(photo, between, refine):
    """Without the search one encoding of all levels serves every count; with it each count is searched anew."""
    model = codec.load("image", device="cpu")
    pixels = photo.shape[1] * photo.shape[2]

    def bpp(data):
        return 8 * len(data) / pixels

    files = {n: codec.compress(photo, model, num_quantizers=n, refine=refine) for n in between}
    target = (bpp(files[between[0]]) + bpp(files[between[1]])) / 2
    files, want = reference(photo, model, bpp, target, refine=refine)
    assert want > choose_levels(model, target).levels  # the coded rule differs from the bit-packed one here
    assert codec.compress(photo, model, bpp=target, fit="coded", refine=refine) == files[want]
    packed_rule = choose_levels(model, target).levels
    assert codec.compress(photo, model, bpp=target, refine=refine) == files[packed_rule]


def test_audio_rate_is_the_whole_file_per_second(speech):
    model = codec.load("audio", device="cpu")
    seconds = speech.shape[-1] / 24000

    def bps(data):
        return 8 * len(data) / seconds

    files = {n: codec.compress(speech, model, num_quantizers=n) for n in (6, 7)}
    target = (bps(files[6]) + bps(files[7])) / 2
    files, want = reference(speech, model, bps, target)
    assert want == 6 and choose_levels(model, target).levels < 6
    assert codec.compress(speech, model, bitrate=target, fit="coded") == files[6]


def test_fit_is_checked(photo):
    with pytest.raises(ValueError, match='fit must be "packed" or "coded"'):
        codec.compress(photo, "image", bpp=0.5, fit="real")
    with pytest.raises(ValueError, match="give one of them"):
        codec.compress(photo, "image", fit="coded", num_quantizers=2)
