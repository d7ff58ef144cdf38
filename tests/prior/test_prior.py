"""TokenPrior: learns a Markov chain to its entropy, cached == uncached (also past the context window), top-k /
top-p exclusion, causality and the sliding window, bits/token by hand, save/load and codec-hash refusal, and
samples the codec decodes."""

import math

import pytest
import torch
import torch.nn.functional as F

import codec
import prior
from codec import AudioCodecConfig, Codec, ImageCodecConfig, QuantizerConfig
from codec.errors import CheckpointError, ModelMismatchError
from prior import PriorConfig, TokenPrior
from prior.data import write_tokens
from prior.layout import positions
from prior.sample import draw, filter_logits
from prior.train import train_prior

K = 16
LAYOUTS = {  # name: (config fields, token shape of one item: longer than the context of 8)
    "image": (dict(modality="image"), (5, 7)),
    "image-levels": (dict(modality="image", residual=True, levels=3), (2, 3, 5)),
    "audio": (dict(modality="audio", residual=True, levels=4), (3, 9)),
}


def tiny_prior(layout="image", context=8, **kw) -> TokenPrior:
    fields = dict(LAYOUTS[layout][0], codebook_size=K, context=context, dim=32, depth=2, heads=2, **kw)
    p = TokenPrior(PriorConfig(**fields)).eval()
    with torch.no_grad():  # sharper than the initial near-uniform distributions, so sampling tests bite
        p.net.to_logits.weight.mul_(20.0)
    return p


def tiny_image_codec(n_q=1):
    q = QuantizerConfig(codebook_size=32, num_quantizers=n_q)
    m = Codec(ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=8, quantizer=q))
    m(torch.rand(2, 3, 32, 32))  # k-means init on a first training batch
    return m.eval()


def tiny_audio_codec():
    q = QuantizerConfig(codebook_size=32, num_quantizers=4, quantizer_dropout=1.0)
    m = Codec(AudioCodecConfig(base_channels=8, latent_dim=8, quantizer=q))
    m(torch.rand(2, 1, 320 * 8) * 2 - 1)
    return m.eval()


# ------------------------------------------------------------------------------------------- learning
def markov_chain(n: int, length: int, P: torch.Tensor, pi: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    seq = torch.empty(n, length, dtype=torch.int64)
    seq[:, 0] = torch.multinomial(pi, n, replacement=True, generator=g)
    for t in range(1, length):
        seq[:, t] = torch.multinomial(P[seq[:, t - 1]], 1, generator=g)[:, 0]
    return seq


def test_learns_markov_chain_to_its_entropy(tmp_path):
    g = torch.Generator().manual_seed(0)
    P = torch.rand(K, K, generator=g) ** 4  # peaked rows: entropy rate ~2.7 of 4 bits
    P /= P.sum(dim=1, keepdim=True)
    evals, evecs = torch.linalg.eig(P.T.double())
    pi = evecs[:, evals.real.argmax()].real.float()
    pi /= pi.sum()
    rate = float(-(pi[:, None] * P * P.log2()).sum())
    train = markov_chain(512, 512, P, pi, g).reshape(512, 16, 32)  # as (h, w) images, raster order
    test = markov_chain(8, 512, P, pi, g)
    layout = dict(codec_hash="synthetic", modality="image", codebook_size=K, levels=1, residual=False)
    write_tokens(tmp_path / "tokens", [f"chain{i}" for i in range(len(train))], list(train), **layout)
    train_prior(
        tmp_path / "tokens",
        tmp_path / "prior",
        dict(dim=32, depth=2, heads=2, context=64),
        dict(steps=300, batch_size=16, seq_len=128, lr=1e-2, warmup_steps=20, eval_every=300, val_fraction=0.0),
        progress=False,
    )
    p = prior.load(tmp_path / "prior", device="cpu")
    true_bits = float(-P[test[:, :-1], test[:, 1:]].log2().sum() - pi[test[:, 0]].log2().sum()) / test.numel()
    model_bits = p.bits_per_token(test.reshape(8, 16, 32))  # 512 tokens each: past the 64-token window
    print(f"entropy rate {rate:.4f}, true {true_bits:.4f} and prior {model_bits:.4f} bits/token on held-out data")
    assert abs(rate - true_bits) < 0.1
    assert true_bits - 0.02 < model_bits < true_bits + 0.1


# ------------------------------------------------------------------------------------ cached == uncached
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_cached_logits_equal_uncached_past_the_window(layout):
    p = tiny_prior(layout)
    shape = LAYOUTS[layout][1]
    tokens = torch.randint(0, K, (2, *shape))
    n = math.prod(shape)
    assert n > 3 * p.config.context
    inputs, grid = p._inputs(tokens, None)
    with torch.no_grad():
        full = p(inputs, positions(grid, 0, n)[None])  # one pass, sliding window by attention mask
    chunked = torch.cat([lg for _, lg in p._chunks(tokens, None, 5)], dim=1)  # windows of 5 targets, with context
    incremental = p.incremental_logits(tokens)  # cached, one token at a time (the entropy coder's path)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-4)
    torch.testing.assert_close(incremental, full, rtol=0, atol=1e-4)
    assert torch.equal(p.incremental_logits(tokens), incremental)  # deterministic


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("filters", [dict(), dict(top_k=3), dict(top_p=0.8, temperature=0.7)])
def test_cached_sampling_equals_uncached(layout, filters):
    p = tiny_prior(layout)
    shape = LAYOUTS[layout][1]
    cached = p.sample(3, shape, seed=7, **filters)
    uncached = p.sample(3, shape, seed=7, use_cache=False, **filters)
    assert cached.shape == (3, *shape) and cached.dtype == torch.int64
    assert torch.equal(cached, uncached)
    assert torch.equal(p.sample(3, shape, seed=7, **filters), cached)  # reproducible
    assert torch.equal(p.sample(2, shape, seed=7, first_index=1, **filters), cached[1:])  # whatever the batch
    assert any(not torch.equal(p.sample(3, shape, seed=s, **filters), cached) for s in (8, 9, 10))  # seeds matter


class _Counter:
    def __init__(self):
        self.n = 0

    def update(self, k):
        self.n += k


@pytest.mark.parametrize("use_cache", [True, False])
def test_sampling_reports_progress_one_update_per_token_position(use_cache):
    p = tiny_prior("image-levels")
    shape = LAYOUTS["image-levels"][1]
    bar = _Counter()
    with_bar = p.sample(2, shape, seed=3, use_cache=use_cache, progress=bar)
    assert bar.n == math.prod(p.layout(shape))  # every position once, whatever the batch
    assert torch.equal(with_bar, p.sample(2, shape, seed=3, use_cache=use_cache))  # the bar changes nothing


def test_incremental_api_matches_teacher_forcing():
    p = tiny_prior("audio")
    tokens = torch.randint(0, K, (2, 3, 9))
    reference = p.logits(tokens)  # (B, n_q, t, K)
    state = p.start(tokens.shape[1:], batch=2)
    flat = p.flatten(tokens)
    steps = []
    for i in range(flat.shape[1]):
        steps.append(state.logits)
        p.append(state, flat[:, i])
    assert state.logits is None
    with pytest.raises(ValueError, match="appended"):
        p.append(state, flat[:, 0])
    torch.testing.assert_close(p.unflatten(torch.stack(steps, dim=1), tokens.shape[1:]), reference, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------- filtering
def test_top_k_and_top_p_exclude_exactly_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.1, 0.15, 0.2, 0.5]]))
    kept = filter_logits(logits, top_k=2).isfinite()
    assert kept.tolist() == [[True, True, False, False, False], [False, False, False, True, True]]
    kept = filter_logits(logits, top_p=0.8).isfinite()  # 0.5 + 0.2 < 0.8: the third is needed too
    assert kept.tolist() == [[True, True, True, False, False], [False, False, True, True, True]]
    assert filter_logits(logits, top_p=0.01).isfinite().sum(dim=1).tolist() == [1, 1]
    u = torch.cat([torch.rand(2000, dtype=torch.float64), torch.tensor([0.0, 1 - 2**-53])])
    for opts, allowed in ((dict(top_k=2), {0, 1}), (dict(top_p=0.8), {0, 1, 2})):
        drawn = set(draw(logits[:1].expand(len(u), -1), u, **opts).tolist())
        assert drawn == allowed


def test_sampling_never_emits_tokens_outside_the_models_top_k_or_top_p():
    p = tiny_prior("image-levels")
    shape = LAYOUTS["image-levels"][1]
    tokens = p.sample(8, shape, top_k=3, seed=1)
    logits = p.logits(tokens)  # the distributions the samples were drawn from (causal)
    assert (logits.topk(3, dim=-1).values[..., -1] <= logits.gather(-1, tokens[..., None])[..., 0] + 1e-5).all()
    tokens = p.sample(8, shape, top_p=0.5, seed=2)
    probs = p.logits(tokens).softmax(dim=-1)
    chosen = probs.gather(-1, tokens[..., None])
    mass_above = (probs * (probs > chosen)).sum(dim=-1, keepdim=True)  # probability of more likely tokens
    assert (mass_above < 0.5 + 1e-5).all()
    greedy = p.sample(2, shape, temperature=0)
    assert torch.equal(p.sample(2, shape, top_k=1, seed=3), greedy)
    assert torch.equal(p.sample(2, shape, top_p=1e-6, seed=4), greedy)


def test_sampling_rejects_bad_settings():
    p = tiny_prior()
    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            p.sample(1, (2, 2), **bad)
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        p.sample(1, (2, 2, 2))
    with pytest.raises(ValueError, match="classes"):
        p.sample(1, (2, 2), classes=0)


def test_class_start_tokens():
    p = tiny_prior(num_classes=3)
    a = p.sample(2, (3, 4), seed=0, classes=[0, 2])
    assert a.shape == (2, 3, 4)
    la, lb = p.logits(a, classes=0), p.logits(a, classes=2)
    assert not torch.allclose(la[:, 0, 0], lb[:, 0, 0])


# ----------------------------------------------------------------------------------- causality, window
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_logits_are_causal_and_windowed(layout):
    p = tiny_prior(layout)
    shape = LAYOUTS[layout][1]
    tokens = torch.randint(0, K, (1, *shape))
    flat = p.flatten(tokens)
    base = p._logits_flat(tokens)
    n, reach = flat.shape[1], p.config.receptive_field
    for j in (0, 4, n // 2):
        changed = flat.clone()
        changed[:, j] = (changed[:, j] + 1) % K
        out = p._logits_flat(p.unflatten(changed, shape))
        assert torch.equal(out[:, : j + 1], base[:, : j + 1])  # positions <= j never see token j
        assert not torch.allclose(out[:, j + 1], base[:, j + 1])  # the next one does
        if j + 1 + reach + 1 < n:  # beyond the receptive field (depth x (context - 1)) it is forgotten
            torch.testing.assert_close(out[:, j + reach + 2 :], base[:, j + reach + 2 :], rtol=0, atol=1e-5)


def test_logits_layout_and_bits_by_hand():
    p = tiny_prior("image-levels")
    tokens = torch.randint(0, K, (2, 2, 3, 5))
    logits = p.logits(tokens)
    assert logits.shape == (2, 2, 3, 5, K) and logits.dtype == torch.float32
    flat = p._logits_flat(tokens)  # raster order, level innermost
    assert torch.equal(logits[1, 1, 2, 3], flat[1, (2 * 5 + 3) * 2 + 1])
    bits = -F.log_softmax(logits, dim=-1).gather(-1, tokens[..., None])[..., 0] / math.log(2)
    torch.testing.assert_close(p.token_bits(tokens), bits, rtol=1e-5, atol=1e-5)
    assert abs(p.bits_per_token(tokens) - float(bits.mean())) < 1e-5
    with pytest.raises(ValueError, match="token values"):
        p.logits(torch.full((1, 2, 3, 5), K))


# ------------------------------------------------------------------------------------------ save, load
def test_save_load_round_trip_and_codec_hash_refusal(tmp_path):
    m = tiny_image_codec()
    cfg = PriorConfig.for_codec(m, context=8, dim=32, depth=2, heads=2, sample_shape=(4, 4))
    assert cfg.codec_hash == codec.model_hash(m) and cfg.codebook_size == 32
    p = TokenPrior(cfg).eval()
    prior.save_prior(tmp_path / "p", p)
    q = prior.load(tmp_path / "p", codec=m)
    assert prior.prior_hash(q) == prior.prior_hash(p) and q.config == cfg
    tokens = m.encode(torch.rand(1, 3, 32, 24))
    assert torch.equal(q.logits(tokens), p.logits(tokens))
    codec.save_model(tmp_path / "codec", m)
    prior.load(tmp_path / "p", codec=tmp_path / "codec")  # a run directory works too
    with pytest.raises(ModelMismatchError, match="trained on codec"):
        prior.load(tmp_path / "p", codec=tiny_image_codec())  # another codec (other weights)
    (tmp_path / "p" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        prior.load(tmp_path / "p")


def test_config_validation():
    with pytest.raises(ValueError, match="residual"):
        PriorConfig(modality="audio")
    with pytest.raises(ValueError, match="multiple of 4"):
        PriorConfig(dim=30, heads=2)
    with pytest.raises(ValueError, match="context"):
        PriorConfig(context=1)


# ---------------------------------------------------------------------------------- samples decode
@pytest.mark.parametrize("kind", ["image", "image-levels", "audio"])
def test_samples_decode_with_the_codec(kind):
    m = {"image": tiny_image_codec, "image-levels": lambda: tiny_image_codec(3), "audio": tiny_audio_codec}[kind]()
    x = torch.rand(1, 3, 24, 40) if kind != "audio" else torch.rand(1, 1, 320 * 6) * 2 - 1
    shape = tuple(m.encode(x).shape[1:])
    p = TokenPrior(PriorConfig.for_codec(m, context=8, dim=32, depth=2, heads=2)).eval()
    with torch.no_grad():  # sharper than the initial near-uniform distributions
        p.net.to_logits.weight.mul_(20.0)
    tokens = p.sample(2, shape, seed=0, top_p=0.9)
    assert tokens.shape == (2, *shape) and tokens.dtype == torch.int64
    y = m.decode(tokens, shape=x.shape[1:])  # the codec takes them: right layout, values in [0, K)
    lo = -1.0 if kind == "audio" else 0.0
    assert y.shape == (2, *x.shape[1:]) and y.min() >= lo and y.max() <= 1.0
    torch.testing.assert_close(m.decode(tokens[1:], shape=x.shape[1:])[0], y[1], rtol=0, atol=1e-3)  # one by one
    # they are the prior's samples: far more probable under it than uniformly random tokens of the same shape
    noise = torch.randint(0, m.codebook_size, tokens.shape)
    assert p.bits_per_token(tokens) < p.bits_per_token(noise) - 1.0


def test_level_subsets_add_each_item_cut_to_fewer_levels():
    from prior.train import _sequences

    cfg = PriorConfig(modality="image", codebook_size=16, levels=3, residual=True, dim=16, depth=1, heads=2, context=8)
    prior = TokenPrior(cfg)
    t = torch.arange(3 * 2 * 5).reshape(3, 2, 5) % 16
    seqs, layouts = _sequences(prior, [t], level_subsets=True)
    assert [len(s) for s in seqs] == [10, 20, 30] and layouts == [(1, 2, 5), (2, 2, 5), (3, 2, 5)]
    # level innermost: the two-level sequence interleaves levels 0 and 1 of each position
    assert seqs[1][:4].tolist() == [t[0, 0, 0], t[1, 0, 0], t[0, 0, 1], t[1, 0, 1]]
    assert torch.equal(seqs[0], t[0].flatten())
    plain, _ = _sequences(prior, [t])
    assert len(plain) == 1 and torch.equal(plain[0], seqs[2])
