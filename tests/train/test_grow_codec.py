"""A deeper encoder or decoder grown from a trained codec: the "stft" audio encoder's ``encoder_blocks`` and
decoder's ``decoder_blocks``, and the "shuffle" image decoder's ``decoder_res_blocks``. The config fields, growing
the start model's weights (new blocks start as the identity), a frozen-encoder fine-tune that keeps the tokens, a
frozen-decoder fine-tune that grows the encoder, and the bundling tool's pairing of the start model's prior with
the grown codec."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
from synth_media import make_image, make_wav

import codec
from codec import load_model, model_hash, save_model
from codec.core.config import (
    AudioCodecConfig,
    ImageCodecConfig,
    QuantizerConfig,
    config_from_dict,
    config_to_dict,
    identity_dict,
)
from codec.core.model import Codec
from codec.train.codec_task import load_init_state, train
from codec.train.config import TrainConfig
from prior.checkpoint import load_prior, save_prior
from prior.config import PriorConfig
from prior.model import TokenPrior

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import bundle_models  # noqa: E402

STFT = AudioCodecConfig(
    sample_rate=8000,
    arch="stft",
    ratios=(2, 4),
    n_fft=32,
    width=16,
    num_blocks=2,
    latent_dim=8,
    quantizer=QuantizerConfig(codebook_size=32, num_quantizers=2),
)


def _start(seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    m = Codec(STFT)
    m(torch.rand(2, 1, 8 * 40) * 2 - 1)  # k-means initialises the codebooks
    with torch.no_grad():  # trained-looking layer scales, so an identity block is not the default state
        for block in m.decoder.blocks:
            block.gamma.uniform_(0.2, 0.6)
    return m.eval()


@pytest.mark.parametrize("side,other", [("decoder", "encoder"), ("encoder", "decoder")])
def test_encoder_and_decoder_blocks_config(side, other):
    field = f"{side}_blocks"
    assert getattr(STFT, f"{side}_depth") == 2
    assert getattr(dataclasses.replace(STFT, **{field: 5}), f"{side}_depth") == 5
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(STFT, **{field: -1})
    with pytest.raises(ValueError, match=field):
        AudioCodecConfig(arch="seanet", **{field: 3})
    # a model made before the field existed keeps its identity (hash); a grown one differs
    assert field not in identity_dict(STFT)
    grown = dataclasses.replace(STFT, **{field: 4})
    assert identity_dict(grown)[field] == 4
    assert config_from_dict(config_to_dict(grown)) == grown
    m = Codec(grown)
    assert len(getattr(m, side).blocks) == 4 and len(getattr(m, other).blocks) == 2


def _grow(start: Codec, side: str) -> Codec:
    """``start`` grown from 2 to 4 blocks on ``side`` ("encoder" or "decoder") by ``load_init_state``: every start
    tensor in place, the two new blocks' layer scales at 0."""
    grown = Codec(dataclasses.replace(STFT, **{f"{side}_blocks": 4}))
    load_init_state(grown, start.state_dict())
    grown.eval()
    s, g = start.state_dict(), grown.state_dict()
    assert all(torch.equal(g[k], v) for k, v in s.items())
    assert [float(b.gamma.detach().abs().max()) for b in getattr(grown, side).blocks[2:]] == [0.0, 0.0]
    return grown


def test_a_grown_decoder_starts_as_the_start_models_decoder():
    start = _start()
    grown = _grow(start, "decoder")
    assert float(grown.decoder.blocks[2].pw1.weight.detach().abs().max()) > 0  # not zero: it can learn once gamma moves
    x = torch.rand(2, 1, 8 * 37) * 2 - 1
    tokens = start.encode(x)
    assert torch.equal(grown.encode(x), tokens)
    assert torch.equal(grown.decode(tokens, shape=x.shape[1:]), start.decode(tokens, shape=x.shape[1:]))
    # other mismatches stay errors: a shallower decoder, another width
    for bad in (dataclasses.replace(STFT, decoder_blocks=1), dataclasses.replace(STFT, width=24)):
        with pytest.raises(ValueError, match="do not fit"):
            load_init_state(Codec(bad), start.state_dict())


def test_a_frozen_encoder_fine_tune_grows_the_decoder_keeps_the_tokens_and_bundles_with_the_start_prior(
    tmp_path, capsys
):
    for i in range(3):
        make_wav(tmp_path / "data" / f"{i}.wav", seconds=0.4, sample_rate=8000, seed=i)
    start = _start()
    save_model(tmp_path / "start", start)
    save_prior(tmp_path / "start" / "prior", TokenPrior(PriorConfig.for_codec(start, dim=32, depth=1, heads=2)))
    grown_config = dataclasses.replace(STFT, decoder_blocks=3)
    cfg = TrainConfig(
        steps=3, batch_size=2, segment_samples=256, lr=1e-2, warmup=0, log_every=1, eval_every=3,
        checkpoint_every=3, eval_items=1, sample_items=1, freeze_encoder=True,
    )  # fmt: skip
    train("audio", tmp_path / "data", tmp_path / "ft", grown_config, cfg, init=tmp_path / "start")
    ft = load_model(tmp_path / "ft", device="cpu")
    assert ft.config.decoder_blocks == 3 and len(ft.decoder.blocks) == 3
    assert float(ft.decoder.blocks[2].gamma.detach().abs().max()) > 0  # the new block trained
    x = torch.rand(1, 1, 8 * 50) * 2 - 1
    assert torch.equal(ft.encode(x), start.encode(x))
    assert model_hash(ft) != model_hash(start)
    # the start model's prior serves the grown codec; a codec whose encoder config differs is refused
    common = ["--prior", str(tmp_path / "start" / "prior"), "--dest", str(tmp_path / "models")]
    ok = ["--codec", str(tmp_path / "ft"), *common, "--tokens-of", str(tmp_path / "start"), "--name", "a"]
    assert bundle_models.main(ok) == 0
    bundled = codec.load(tmp_path / "models" / "a", device="cpu")
    load_prior(tmp_path / "models" / "a" / "prior", codec=bundled, device="cpu")
    assert torch.equal(bundled.encode(x), codec.load(tmp_path / "start", device="cpu").half().float().encode(x))
    other = Codec(dataclasses.replace(STFT, num_blocks=3)).eval()
    save_model(tmp_path / "other", other)
    bad = ["--codec", str(tmp_path / "other"), *common, "--tokens-of", str(tmp_path / "start"), "--name", "b"]
    assert bundle_models.main(bad) == 2
    assert "configs differ outside the decoder (num_blocks (2 -> 3))" in capsys.readouterr().err


def test_a_frozen_decoder_fine_tune_grows_the_encoder_from_the_start_models_encoder(tmp_path):
    start = _start()
    with torch.no_grad():  # trained-looking encoder blocks too
        for block in start.encoder.blocks:
            block.gamma.uniform_(0.2, 0.6)
    grown = _grow(start, "encoder")
    x = torch.rand(2, 1, 8 * 37) * 2 - 1
    torch.testing.assert_close(grown.encoder(x), start.encoder(x), rtol=0, atol=0)  # the identity, exactly
    assert torch.equal(grown.encode(x), start.encode(x))
    # a frozen-decoder fine-tune trains the new blocks and keeps the decoder and codebooks
    for i in range(3):
        make_wav(tmp_path / "data" / f"{i}.wav", seconds=0.4, sample_rate=8000, seed=i)
    save_model(tmp_path / "start", start)
    cfg = TrainConfig(
        steps=3, batch_size=2, segment_samples=256, lr=1e-2, warmup=0, log_every=1, eval_every=3,
        checkpoint_every=3, eval_items=1, sample_items=1, freeze_decoder=True,
    )  # fmt: skip
    train("audio", tmp_path / "data", tmp_path / "ft", dataclasses.replace(STFT, encoder_blocks=4), cfg,
          init=tmp_path / "start")  # fmt: skip
    ft = load_model(tmp_path / "ft", device="cpu")
    assert ft.config.encoder_blocks == 4 and len(ft.encoder.blocks) == 4
    assert float(ft.encoder.blocks[3].gamma.detach().abs().max()) > 0  # the new block trained
    kept = {k: v for k, v in ft.state_dict().items() if k.startswith(("decoder.", "quantizer."))}
    assert kept and all(torch.equal(v, start.state_dict()[k]) for k, v in kept.items())
    # a grown encoder changes the tokens: a frozen-encoder run may not grow it
    cfg = dataclasses.replace(cfg, freeze_decoder=False, freeze_encoder=True)
    with pytest.raises(ValueError, match="freeze_encoder keeps the start model's tokens.*encoder_blocks"):
        train("audio", tmp_path / "data", tmp_path / "ft2", dataclasses.replace(STFT, encoder_blocks=4), cfg,
              init=tmp_path / "start")  # fmt: skip
    # other mismatches stay errors: a shallower encoder
    with pytest.raises(ValueError, match="do not fit"):
        load_init_state(Codec(dataclasses.replace(STFT, encoder_blocks=1)), start.state_dict())


# ------------------------------------------------------------------------------------------ image
SHUFFLE = ImageCodecConfig(
    arch="shuffle",
    downsample=8,
    stem=2,
    base_channels=8,
    max_channels=16,
    num_res_blocks=1,
    latent_dim=8,
    norm_groups=0,
    padding="replicate",
    quantizer=QuantizerConfig(codebook_size=32, num_quantizers=2),
)


def _image_start(cfg: ImageCodecConfig, seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    m = Codec(cfg)
    m(torch.rand(2, 3, 32, 32))  # k-means initialises the codebooks
    with torch.no_grad():  # trained-looking blocks: a zero last convolution is not the default state
        for p in m.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def test_decoder_res_blocks_config():
    """Counts per decoder stage (3 stages: 1/8, 1/4, 1/2); one number means every stage."""
    assert SHUFFLE.decoder_stage_blocks == (1, 1, 1) and SHUFFLE.decoder_extra_context == 0
    assert dataclasses.replace(SHUFFLE, decoder_res_blocks=3).decoder_res_blocks == (3, 3, 3)
    assert dataclasses.replace(SHUFFLE, decoder_res_blocks=[1, 2, 3]).decoder_stage_blocks == (1, 2, 3)
    # by hand: 2 more 3x3 convolutions per block reach 2 grid positions, 2 half-grid (1 token), 2 quarter-grid
    assert dataclasses.replace(SHUFFLE, decoder_res_blocks=(2, 1, 1)).decoder_extra_context == 2
    assert dataclasses.replace(SHUFFLE, decoder_res_blocks=(1, 1, 2)).decoder_extra_context == 1  # 0.5 up
    assert dataclasses.replace(SHUFFLE, decoder_res_blocks=(3, 3, 3)).decoder_extra_context == 7  # 4 + 2 + 1
    bad = ((1, 1), (1, 0, 1), dict(num_res_blocks=2, decoder_res_blocks=(2, 1, 2)))
    for b in bad:
        kw = b if isinstance(b, dict) else dict(decoder_res_blocks=b)
        with pytest.raises(ValueError, match="decoder_res_blocks"):
            dataclasses.replace(SHUFFLE, **kw)
    with pytest.raises(ValueError, match="decoder_res_blocks"):
        ImageCodecConfig(arch="conv", decoder_res_blocks=2)
    assert "decoder_res_blocks" not in identity_dict(SHUFFLE)  # the bundled image model's hash stays
    grown = dataclasses.replace(SHUFFLE, decoder_res_blocks=(1, 1, 3))
    assert identity_dict(grown)["decoder_res_blocks"] == (1, 1, 3)
    assert config_from_dict(json.loads(json.dumps(config_to_dict(grown)))) == grown  # a list in JSON


@pytest.mark.parametrize("norm_groups", [0, 8])
def test_a_grown_image_decoder_starts_as_the_start_models_decoder_and_runs_its_blocks_in_order(norm_groups):
    base = dataclasses.replace(SHUFFLE, norm_groups=norm_groups)
    start = _image_start(base)
    grown = Codec(dataclasses.replace(base, decoder_res_blocks=(3, 1, 3)))
    load_init_state(grown, start.state_dict())
    grown.eval()
    s, g = start.state_dict(), grown.state_dict()
    assert all(torch.equal(g[k], v) for k, v in s.items())  # every start tensor, in place
    new = [k for k in g if k not in s]
    assert new and all(k.startswith("decoder.grow.") for k in new)
    # three stages (1/8, 1/4 and 1/2 resolution: a stem of 2, then two halvings), two new blocks after the first
    # and the last stage's own block (net: conv, block | 1x1 conv, shuffle, block | 1x1 conv, shuffle, block |
    # head), each new block starting as the identity, at the stage's width
    assert sorted(grown.decoder.grow.keys()) == ["1", "7"]
    assert [stage[0].conv1.in_channels for stage in grown.decoder.grow.values()] == [16, 8]
    for stage in grown.decoder.grow.values():
        assert len(stage) == 2
        for block in stage:
            assert float(block.conv2.weight.detach().abs().max()) == 0
            assert float(block.conv1.weight.detach().abs().max()) > 0
            assert block.conv1.padding_mode == "replicate"
    x = torch.rand(2, 3, 40, 24)
    tokens = start.encode(x)
    assert torch.equal(grown.encode(x), tokens)
    assert torch.equal(grown.decode(tokens, shape=x.shape[1:]), start.decode(tokens, shape=x.shape[1:]))
    # once the new blocks are not the identity, the decoder is the start model's layers with each stage's new
    # blocks right after its own ones: compared with that sequence written out by hand
    with torch.no_grad():
        for p in grown.decoder.grow.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    net, grow = grown.decoder.net, grown.decoder.grow
    by_hand = torch.nn.Sequential(*net[:2], *grow["1"], *net[2:8], *grow["7"], *net[8:])
    z = torch.randn(2, 8, 3, 5)
    want = (by_hand(z) + 1) / 2
    torch.testing.assert_close(grown.decoder(z), want, rtol=0, atol=0)
    assert not torch.allclose(want, start.decoder(z))
    # other mismatches stay errors: a shallower decoder, another width
    deeper = _image_start(dataclasses.replace(base, decoder_res_blocks=(1, 2, 1)))
    for bad_start, bad in ((deeper, base), (start, dataclasses.replace(base, base_channels=16))):
        with pytest.raises(ValueError, match="do not fit"):
            load_init_state(Codec(bad), bad_start.state_dict())


def test_a_frozen_encoder_fine_tune_grows_the_image_decoder_and_keeps_the_tokens(tmp_path):
    for i in range(3):
        make_image(tmp_path / "data" / f"{i}.png", size=(40, 40), seed=i)
    start = _image_start(SHUFFLE)
    save_model(tmp_path / "start", start)
    cfg = TrainConfig(
        steps=3, batch_size=2, crop=32, lr=1e-2, warmup=0, log_every=1, eval_every=3,
        checkpoint_every=3, eval_items=1, sample_items=1, freeze_encoder=True,
    )  # fmt: skip
    grown_config = dataclasses.replace(SHUFFLE, decoder_res_blocks=(2, 1, 2))
    train("image", tmp_path / "data", tmp_path / "ft", grown_config, cfg, init=tmp_path / "start")
    ft = load_model(tmp_path / "ft", device="cpu")
    assert ft.config.decoder_res_blocks == (2, 1, 2)
    assert all(float(stage[0].conv2.weight.detach().abs().max()) > 0 for stage in ft.decoder.grow.values())  # trained
    s = start.state_dict()
    assert all(torch.equal(v, s[k]) for k, v in ft.state_dict().items() if not k.startswith("decoder."))
    x = torch.rand(1, 3, 48, 40)
    assert torch.equal(ft.encode(x), start.encode(x))
    assert model_hash(ft) != model_hash(start)
