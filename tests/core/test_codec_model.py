"""Codec model: shapes for awkward sizes, tiled/chunked processing equal to whole processing, validation,
and run-directory save/load."""

import json

import pytest
import torch

import codec
import codec.core.config
from codec import AudioCodecConfig, Codec, ImageCodecConfig, QuantizerConfig
from codec.core.config import config_from_dict
from codec.core.windows import core_slices


def tiny_image(f=8, n_q=1, arch="conv", **kw):
    q = QuantizerConfig(codebook_size=32, num_quantizers=n_q)
    if arch == "shuffle":
        kw = {"stem": min(4, f), "norm_groups": 0, **kw}
    cfg = ImageCodecConfig(downsample=f, arch=arch, base_channels=8, max_channels=16, latent_dim=8, quantizer=q, **kw)
    m = Codec(cfg)
    m(torch.rand(2, cfg.channels, 4 * f, 4 * f))  # k-means init on a first training batch
    return m.eval()


def tiny_audio(channels=1, arch="seanet", **kw):
    q = QuantizerConfig(codebook_size=32, num_quantizers=4, quantizer_dropout=1.0)
    if arch == "stft":
        kw = {"width": 16, "num_blocks": 2, **kw}
    cfg = AudioCodecConfig(channels=channels, arch=arch, base_channels=8, latent_dim=8, quantizer=q, **kw)
    m = Codec(cfg)
    m(torch.rand(2, channels, 320 * 8) * 2 - 1)
    return m.eval()


@pytest.mark.parametrize("f", [4, 8, 16])
@pytest.mark.parametrize("hw", [(1, 1), (17, 33), (5, 700)])
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("arch", ["conv", "shuffle"])
def test_image_round_trip_shapes(f, hw, c, arch):
    m = tiny_image(f, arch=arch)
    x = torch.rand(2, c, *hw)
    tokens = m.encode(x)
    assert tokens.shape == (2, -(-hw[0] // f), -(-hw[1] // f)) and tokens.dtype == torch.int64
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 32
    y = m.decode(tokens, shape=x.shape[1:])
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert m.decode(tokens).shape == (2, 3, tokens.shape[1] * f, tokens.shape[2] * f)


def test_residual_image_tokens_and_bitrates():
    m = tiny_image(8, n_q=3)
    x = torch.rand(1, 3, 40, 24)
    assert m.encode(x).shape == (1, 3, 5, 3)
    two = m.encode(x, num_quantizers=2)
    assert two.shape == (1, 2, 5, 3)
    assert torch.equal(two, m.encode(x)[:, :2])  # residual stages are a prefix
    assert m.decode(two, shape=x.shape[1:]).shape == x.shape


@pytest.mark.parametrize("length", [1, 321, 320, 5000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("arch", ["seanet", "stft"])
def test_audio_round_trip_shapes(length, channels, arch):
    m = tiny_audio(channels, arch=arch)
    x = torch.rand(2, channels, length) * 2 - 1
    tokens = m.encode(x)
    assert tokens.shape == (2, 4, -(-length // 320)) and tokens.dtype == torch.int64
    y = m.decode(tokens, shape=x.shape[1:])
    assert y.shape == x.shape and float(y.abs().max()) <= 1.0
    low = m.encode(x, num_quantizers=1)
    assert torch.equal(low, tokens[:, :1])
    assert m.decode(low, shape=x.shape[1:]).shape == x.shape


@pytest.mark.parametrize("arch,padding", [("conv", "zeros"), ("shuffle", "zeros"), ("shuffle", "replicate")])
def test_tiled_image_matches_whole_image(arch, padding):
    m = tiny_image(8, arch=arch, tile=4, tile_overlap=6, padding=padding)
    x = torch.rand(1, 3, 200, 333)
    tiled = m.encode(x)
    m.config.tile = 10_000
    whole = m.encode(x)
    assert torch.equal(tiled, whole)
    y_whole = m.decode(whole, shape=x.shape[1:])
    m.config.tile = 4
    y_tiled = m.decode(whole, shape=x.shape[1:])
    torch.testing.assert_close(y_tiled, y_whole, rtol=0, atol=1e-4)  # no seams


@pytest.mark.parametrize("arch", ["seanet", "stft"])
def test_chunked_audio_matches_whole_signal_without_clicks(arch):
    m = tiny_audio(2, arch=arch, chunk_frames=7, chunk_context=16)
    x = torch.sin(torch.linspace(0, 900, 320 * 61 + 17)).expand(1, 2, -1) * 0.5
    x = x + 0.05 * torch.randn_like(x)
    chunked = m.encode(x)
    m.config.chunk_frames = 10_000
    whole = m.encode(x)
    assert torch.equal(chunked, whole)
    m = m.double()  # float64: chunking must be exact up to rounding (fp32 rounding alone reaches ~2e-4 here)
    y_whole = m.decode(whole, shape=x.shape[1:])
    m.config.chunk_frames = 7
    y_chunked = m.decode(whole, shape=x.shape[1:])
    torch.testing.assert_close(y_chunked.double(), y_whole.double(), rtol=0, atol=1e-6)


def _grown(modality):
    """A tiny codec whose decoder is deeper than its encoder, every block active; its input; its window size."""
    if modality == "image":
        m = tiny_image(8, arch="shuffle", tile=4, tile_overlap=6, padding="replicate", decoder_res_blocks=(4, 5))
        with torch.no_grad():  # identity-initialised blocks would not reach any further
            for p in m.decoder.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        return m, torch.rand(1, 3, 200, 333), "tile"
    m = tiny_audio(1, arch="stft", chunk_frames=7, chunk_context=16, decoder_blocks=6)
    with torch.no_grad():  # full-strength blocks and an audible output (a fresh head starts near -43 dB)
        for block in m.decoder.blocks:
            block.gamma.fill_(1.0)
        m.decoder.head.bias.zero_()
    return m, torch.sin(torch.linspace(0, 900, 320 * 61 + 17)).expand(1, 1, -1) * 0.5, "chunk_frames"


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_a_grown_decoder_decodes_in_windows_as_whole_with_its_extra_context(modality, monkeypatch):
    """A decoder deeper than the encoder reaches further than the encoder's tile overlap or chunk context;
    decoding reads ``decoder_extra_context`` more, so windows still match the whole (and without it they do not)."""
    m, x, size_field = _grown(modality)
    assert m.config.decoder_extra_context == (10 if modality == "image" else 12)  # 2 * 3 + 2 * 4 / 2; 3 * 4
    tokens = m.encode(x)
    m = m.double()  # float64 networks: windows must match up to float32 rounding
    setattr(m.config, size_field, 10_000)
    whole = m.decode(tokens, shape=x.shape[1:])
    setattr(m.config, size_field, 4 if modality == "image" else 7)
    scale = float(whole.abs().max())
    assert scale > 1e-3
    windowed = m.decode(tokens, shape=x.shape[1:]).double()  # written into float32 buffers window by window
    torch.testing.assert_close(windowed, whole, rtol=0, atol=1e-6 * scale)
    monkeypatch.setattr(type(m.config), "decoder_extra_context", property(lambda self: 0))
    seams = float((m.decode(tokens, shape=x.shape[1:]).double() - whole).abs().max())
    assert seams > 1e-5 * scale  # what the extra context prevents (float32 rounding: about 1e-7)


def _windowed_latents(m, x):
    """The encoder's latents (B, D, t) of ``x`` as ``encode`` computes them: each window's core, assembled."""
    outs = []
    hook = m.encoder.register_forward_hook(lambda module, args, out: outs.append(out))
    try:
        t = m.encode(x).shape[-1]
    finally:
        hook.remove()
    z = torch.zeros(x.shape[0], outs[0].shape[1], t, dtype=outs[0].dtype)
    windows = m._window_plan((t,))
    assert len(windows) == len(outs)
    for w, out in zip(windows, outs):
        dst, src = core_slices(w)
        z[(..., *dst)] = out[(..., *src)]
    return z


def test_a_grown_encoder_encodes_in_chunks_as_whole_with_its_extra_context(monkeypatch):
    """An encoder grown deeper than ``num_blocks`` reaches further than the chunk context that was chosen for it;
    encoding reads ``encoder_extra_context`` more, so chunks still match the whole (and without it they do not)."""
    m = tiny_audio(1, arch="stft", chunk_frames=7, chunk_context=8, encoder_blocks=6)
    assert m.config.encoder_extra_context == 12 and m.config.decoder_extra_context == 0  # 3 * (6 - 2)
    with torch.no_grad():  # full-strength blocks (identity-initialised ones would not reach any further)
        for block in m.encoder.blocks:
            block.gamma.fill_(1.0)
    x = torch.sin(torch.linspace(0, 900, 320 * 61 + 17)).expand(1, 1, -1) * 0.5
    x = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    m.config.chunk_frames = 10_000
    whole = _windowed_latents(m, x)
    m.config.chunk_frames = 7
    chunked = _windowed_latents(m, x)
    scale = float(whole.abs().max())
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5 * scale)  # float32 rounding
    monkeypatch.setattr(type(m.config), "encoder_extra_context", property(lambda self: 0))
    seams = float((_windowed_latents(m, x) - whole).abs().max())
    assert seams > 1e-3 * scale  # what the extra context prevents


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.rand(3, 8, 8), "shape"),
        (torch.rand(1, 2, 8, 8), "1 or 3 channels"),
        (torch.randint(0, 255, (1, 3, 8, 8)), "float"),
        (torch.rand(1, 3, 8, 8) * 255, r"lie in \[0, 1\]"),
        (torch.full((1, 3, 8, 8), float("nan")), "nan"),
        (torch.rand(1, 3, 0, 8), "empty"),
        ("not a tensor", "torch.Tensor"),
    ],
)
def test_image_encode_rejects_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        tiny_image().encode(x)


def test_audio_encode_rejects_bad_input():
    m = tiny_audio()
    with pytest.raises(ValueError, match="1 channels"):
        m.encode(torch.zeros(1, 2, 100))
    with pytest.raises(ValueError, match=r"lie in \[-1, 1\]"):
        m.encode(torch.full((1, 1, 100), 3.0))
    with pytest.raises(ValueError, match=r"num_quantizers must be in \[1, 4\]"):
        m.encode(torch.zeros(1, 1, 100), num_quantizers=5)


def test_decode_rejects_bad_tokens():
    m, a = tiny_image(), tiny_audio()
    with pytest.raises(ValueError, match=r"lie in \[0, 32\)"):
        m.decode(torch.full((1, 2, 2), 32))
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        m.decode(torch.zeros(1, 2, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer"):
        m.decode(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="does not match"):
        m.decode(torch.zeros(1, 2, 2, dtype=torch.int64), shape=(3, 40, 16))
    with pytest.raises(ValueError, match="5 quantizer levels"):
        a.decode(torch.zeros(1, 5, 3, dtype=torch.int64))


def test_save_load_round_trip_and_hash(tmp_path):
    m = tiny_image(n_q=2)
    codec.save_model(tmp_path, m)
    assert json.loads((tmp_path / "config.json").read_text())["quantizer"]["num_quantizers"] == 2
    loaded = codec.load(tmp_path, device="cpu")
    assert codec.model_hash(loaded) == codec.model_hash(m)
    x = torch.rand(1, 3, 24, 16)
    assert torch.equal(loaded.encode(x), m.encode(x))
    loaded.quantizer.layers[0].embed[0, 0] += 1.0
    assert codec.model_hash(loaded) != codec.model_hash(m)


def test_load_errors(tmp_path):
    with pytest.raises(codec.CheckpointError, match="not a model directory"):
        codec.load(tmp_path / "missing")
    codec.save_model(tmp_path, tiny_image())
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(codec.CheckpointError, match="unreadable weights"):
        codec.load(tmp_path)
    codec.save_model(tmp_path, tiny_image())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["latent_dim"] = 16  # weights no longer fit
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(codec.CheckpointError, match="shape"):
        codec.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(codec.CheckpointError, match="invalid codec config"):
        codec.load(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(codec.CheckpointError, match="missing config.json"):
        codec.load(tmp_path)


def test_partial_quantizer_config_keeps_modality_defaults():
    cfg = config_from_dict({"modality": "audio", "quantizer": {"codebook_size": 64}})
    assert cfg.quantizer.codebook_size == 64
    assert cfg.quantizer.num_quantizers == 8 and cfg.quantizer.quantizer_dropout == 1.0
    with pytest.raises(ValueError, match="unknown quantizer config keys"):
        config_from_dict({"modality": "image", "quantizer": {"codebok_size": 64}})
    with pytest.raises(ValueError, match="unknown modality"):
        config_from_dict({"modality": "video"})


def test_audio_encoder_output_varies_over_time_at_init():
    """Regression: PyTorch's default init left the encoder's output nearly constant over time (13x less variation
    than its per-channel bias), so the codebook collapsed to a few codes on real audio."""
    from codec.core.config import AudioCodecConfig

    torch.manual_seed(0)
    m = Codec(AudioCodecConfig())
    t = torch.arange(24000) / 24000
    x = 0.1 * torch.sin(2 * torch.pi * 220 * t * (1 + t)) * (torch.sin(2 * torch.pi * 2 * t) > 0)  # chirp bursts
    with torch.no_grad():
        z = m.encoder(x[None, None])
    assert z.std(dim=2).mean() > 2 * z.mean(dim=2).abs().mean()


def test_fields_added_later_keep_older_models_hashes():
    """A config field added after models were made is left out of the hash while it holds the old behaviour's value,
    so older models (and the priors and .vqc files that record their hashes) keep their identity."""
    from codec.store.rundir import state_hash

    m = tiny_image(8)
    later = ("arch", "stem", "padding", "decoder_res_blocks")
    old_fields = {k: v for k, v in codec.core.config.config_to_dict(m.config).items() if k not in later}
    old_fields["quantizer"] = {k: v for k, v in old_fields["quantizer"].items() if k != "rate_weight"}
    assert codec.model_hash(m) == state_hash(old_fields, m)
    m.config.quantizer.rate_weight = 0.5  # steers only the encoder's choice: never part of the identity
    assert codec.model_hash(m) == state_hash(old_fields, m)
    m.config.stem = 2  # meaningless for "conv", but now part of the identity
    assert codec.model_hash(m) != state_hash(old_fields, m)


def test_rate_weight_from_the_config_reaches_every_stage_and_saves_round_trip():
    cfg = ImageCodecConfig(
        downsample=8, base_channels=8, max_channels=16, latent_dim=8,
        quantizer=QuantizerConfig(codebook_size=32, num_quantizers=3, rate_weight=0.25),
    )  # fmt: skip
    m = Codec(cfg)
    assert [layer.rate_weight for layer in m.quantizer.layers] == [0.25] * 3
    back = codec.core.config.config_from_dict(codec.core.config.config_to_dict(cfg))
    assert back.quantizer.rate_weight == 0.25
    old = codec.core.config.config_to_dict(cfg)
    del old["quantizer"]["rate_weight"]  # a config written before the field existed
    assert codec.core.config.config_from_dict(old).quantizer.rate_weight == 0.0
