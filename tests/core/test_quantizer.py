"""VectorQuantizer / ResidualVectorQuantizer against hand-computed EMA steps and behavioural checks."""

import math

import pytest
import torch

from codec.core.quantizer import ResidualVectorQuantizer, VectorQuantizer
from kernels import nearest_code_naive


def _place(vq: VectorQuantizer, codes: torch.Tensor, sizes: torch.Tensor | None = None) -> None:
    """Set a codebook with an EMA state consistent with it."""
    sizes = vq.cluster_size.clone() if sizes is None else sizes
    vq.embed.copy_(codes)
    vq.cluster_size.copy_(sizes)
    vq.embed_sum.copy_(codes * sizes[:, None])
    vq.initialized.fill_(True)


def test_hand_computed_ema_step():
    vq = VectorQuantizer(2, 3, decay=0.9, eps=1e-5, dead_code_threshold=0.0, kmeans_init=False)
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    _place(vq, codes, torch.tensor([2.0, 1.0, 1.0]))
    z = torch.tensor([[1.0, 1.0], [9.0, 1.0], [0.0, 9.0], [-1.0, 0.0]])
    out = vq(z)
    assert out.indices.tolist() == [0, 1, 2, 0]
    assert torch.equal(out.quantized, codes[[0, 1, 2, 0]])
    # loss = 0.25 * mean of squared errors: (1+1, 1+1, 0+1, 1+0) / 8 = 0.75 -> 0.1875
    assert out.loss.item() == pytest.approx(0.1875, rel=1e-6)
    # histogram (2, 1, 1)/4: entropy 1.5 ln 2 -> perplexity 2^1.5
    assert out.perplexity.item() == pytest.approx(2**1.5, rel=1e-6)
    assert out.usage.item() == 1.0 and out.resets.item() == 0
    # N = 0.9 (2,1,1) + 0.1 (2,1,1) = (2,1,1)
    assert vq.cluster_size.tolist() == pytest.approx([2.0, 1.0, 1.0], rel=1e-6)
    # m = 0.9 * codes * (2,1,1) + 0.1 * sums, sums = ((0,1), (9,1), (0,9))
    m = [[0.0, 0.1], [9.9, 0.1], [0.0, 9.9]]
    assert vq.embed_sum.tolist() == [pytest.approx(r, rel=1e-6, abs=1e-7) for r in m]
    # e_k = m_k / ((N_k + eps) / (n + K eps) * n), n = 4
    eps = 1e-5
    smoothed = [(nk + eps) / (4 + 3 * eps) * 4 for nk in (2.0, 1.0, 1.0)]
    expected = [[v / s for v in row] for row, s in zip(m, smoothed, strict=True)]
    assert vq.embed.tolist() == [pytest.approx(r, rel=1e-6, abs=1e-7) for r in expected]


def test_straight_through_gradient_and_commitment_gradient():
    vq = VectorQuantizer(4, 16)
    z = torch.randn(3, 5, 4, requires_grad=True)
    out = vq(z)
    g = torch.randn_like(z)
    (grad_q,) = torch.autograd.grad(out.quantized, z, g, retain_graph=True)
    assert torch.equal(grad_q, g)  # identity, bit for bit
    (grad_l,) = torch.autograd.grad(out.loss, z)
    q = out.quantized.detach()
    expected = 2 * vq.commitment_weight * (z.detach() - q) / z.numel()
    torch.testing.assert_close(grad_l, expected, rtol=1e-5, atol=1e-8)
    assert vq.embed.grad is None and not vq.embed.requires_grad


def test_eval_mode_changes_nothing():
    for vq in (VectorQuantizer(6, 32), ResidualVectorQuantizer(6, 32, 3, quantizer_dropout=0.5)):
        vq.train()
        vq(torch.randn(64, 6))  # initialise
        vq.eval()
        before = {k: v.clone() for k, v in vq.state_dict().items()}
        out = vq(torch.randn(500, 6) * 5 + 3)  # far from the data: all codes would be dead in training
        assert out.resets.sum().item() == 0
        after = vq.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_eval_mode_never_kmeans_initialises():
    vq = VectorQuantizer(3, 8).eval()
    before = vq.embed.clone()
    vq(torch.randn(100, 3))
    assert torch.equal(vq.embed, before) and not bool(vq.initialized)


def test_indices_are_nearest_codes():
    vq = VectorQuantizer(5, 37).eval()
    z = torch.randn(2, 9, 5)
    out = vq(z)
    ref, _ = nearest_code_naive(z.reshape(-1, 5), vq.embed)
    assert torch.equal(out.indices.reshape(-1), ref)


def _mixture(n, centers, sigma, generator):
    which = torch.randint(0, centers.shape[0], (n,), generator=generator)
    return centers[which] + sigma * torch.randn(n, centers.shape[1], generator=generator)


@pytest.mark.parametrize("reset", [True, False])
def test_dead_code_reset_revives_a_far_codebook(reset):
    g = torch.Generator().manual_seed(1)
    k, d = 64, 8
    centers = 20.0 + 10.0 * torch.randn(32, d, generator=g)  # 32 well-separated clusters
    vq = VectorQuantizer(d, k, kmeans_init=False, dead_code_threshold=2.0 if reset else 0.0)
    _place(vq, -100.0 + torch.randn(k, d, generator=g))  # every code far from every cluster
    total_resets = 0
    for _ in range(60):
        total_resets += vq(_mixture(2048, centers, 0.5, g)).resets.item()
    vq.eval()
    used = vq(_mixture(16384, centers, 0.5, g)).indices.unique().numel() / k
    if reset:
        assert total_resets > 0
        assert used >= 0.95, f"only {used:.2%} of codes in use with dead-code reset"
    else:
        assert total_resets == 0
        assert used < 0.5, f"{used:.2%} of codes in use without reset: the test data does not kill codes"


def test_kmeans_init_keeps_usage_after_first_step():
    g = torch.Generator().manual_seed(2)
    vq = VectorQuantizer(8, 64)
    data = lambda: torch.randn(4096, 8, generator=g) * torch.linspace(0.5, 3, 8)
    first = vq(data())
    assert bool(vq.initialized)
    assert first.usage.item() > 0.95
    later = [vq(data()) for _ in range(5)]
    assert all(o.usage.item() > 0.95 for o in later)
    assert sum(o.resets.item() for o in later) <= 3  # EMA sizes match the counts: no mass die-off
    assert later[-1].perplexity.item() > 0.8 * 64


@pytest.mark.parametrize("n", [1, 2, 4])
def test_residual_decode_indices_equals_quantized(n):
    rvq = ResidualVectorQuantizer(6, 32, 4)
    for _ in range(3):
        rvq(torch.randn(16, 10, 6))
    rvq.eval()
    z = torch.randn(16, 10, 6)
    out = rvq(z, num_quantizers=n)
    assert out.indices.shape == (16, 10, n) and out.indices.dtype == torch.int64
    assert torch.equal(rvq.decode_indices(out.indices), out.quantized)


def test_single_decode_indices_equals_quantized():
    vq = VectorQuantizer(6, 32)
    vq(torch.randn(128, 6))
    vq.eval()
    out = vq(torch.randn(7, 3, 6))
    assert torch.equal(vq.decode_indices(out.indices), out.quantized)


@pytest.mark.parametrize("n", [None, 1, 3])
def test_encode_indices_equals_forward_indices(n):
    rvq, vq = ResidualVectorQuantizer(6, 32, 4), VectorQuantizer(6, 32)
    for _ in range(3):
        z = torch.randn(16, 10, 6)
        rvq(z), vq(z)
    rvq.eval(), vq.eval()
    z = torch.randn(4, 6, 7, 5).movedim(1, -1)  # a strided view, as the codec's encoder output is
    assert torch.equal(rvq.encode_indices(z, n), rvq(z, num_quantizers=n).indices)
    assert torch.equal(vq.encode_indices(z), vq(z).indices)


def test_residual_stages_reduce_error():
    torch.manual_seed(3)
    rvq = ResidualVectorQuantizer(8, 64, 4)
    for _ in range(20):
        rvq(torch.randn(2048, 8))
    rvq.eval()
    z = torch.randn(4096, 8)
    errors = [(rvq(z, num_quantizers=n).quantized - z).pow(2).mean().item() for n in range(1, 5)]
    assert all(b < 0.9 * a for a, b in zip(errors, errors[1:], strict=False)), errors


def test_residual_straight_through_is_identity_once():
    rvq = ResidualVectorQuantizer(4, 8, 3)
    z = torch.randn(10, 4, requires_grad=True)
    out = rvq(z)
    g = torch.randn_like(z)
    (grad,) = torch.autograd.grad(out.quantized, z, g)
    assert torch.equal(grad, g)


def test_quantizer_dropout_uses_a_prefix_of_stages_per_item():
    torch.manual_seed(4)
    rvq = ResidualVectorQuantizer(4, 16, 4, quantizer_dropout=1.0, kmeans_init=False, dead_code_threshold=0.0)
    books = [layer.embed.clone() for layer in rvq.layers]  # the codebooks this step searches
    z = torch.randn(64, 5, 4)
    out = rvq(z)
    prefixes = torch.stack(
        [sum(books[i][out.indices[..., i]] for i in range(n)) for n in range(1, 5)]
    )  # (4, 64, 5, 4): the result of using 1..4 stages
    matches = (prefixes == out.quantized[None]).all(dim=-1).all(dim=-1)  # (4, 64)
    assert matches.any(dim=0).all(), "an item's output is not the sum of a prefix of its stages"
    n_used = matches.float().argmax(dim=0) + 1
    assert len(set(n_used.tolist())) >= 3, "dropout should pick varied stage counts"


def test_masked_out_vectors_do_not_move_the_codebook():
    vq = VectorQuantizer(2, 3, decay=0.5, dead_code_threshold=0.0, kmeans_init=False)
    _place(vq, torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), torch.ones(3))
    z = torch.tensor([[1.0, 1.0], [9.0, 1.0], [50.0, 50.0]])
    out = vq(z, mask=torch.tensor([True, True, False]))
    assert vq.cluster_size.tolist() == pytest.approx([1.0, 1.0, 0.5])
    assert torch.isfinite(out.loss)
    out = vq(z, mask=torch.zeros(3, dtype=torch.bool))
    assert out.loss.item() == 0.0


def test_autocast_bf16_quantizes_in_fp32():
    vq = VectorQuantizer(16, 32)
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(256, 16)
    vq(lin(x).detach())  # initialise in fp32
    vq.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = lin(x)
        assert z.dtype == torch.bfloat16
        out = vq(z)
    assert out.quantized.dtype == torch.bfloat16
    ref, _ = nearest_code_naive(z.float(), vq.embed)
    assert torch.equal(out.indices, ref)
    assert out.loss.dtype == torch.float32 and math.isfinite(out.loss.item())


def test_bad_arguments():
    vq = VectorQuantizer(4, 8)
    with pytest.raises(ValueError, match="last dimension 4"):
        vq(torch.randn(3, 5))
    with pytest.raises(ValueError, match="mask shape"):
        vq(torch.randn(3, 4), mask=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="non-finite"):
        vq(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        vq.decode_indices(torch.tensor([8]))
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(4, 8, decay=1.0)
    rvq = ResidualVectorQuantizer(4, 8, 2)
    with pytest.raises(ValueError, match="num_quantizers"):
        rvq(torch.randn(3, 4), num_quantizers=3)
    with pytest.raises(ValueError, match="num_quantizers"):
        rvq.decode_indices(torch.zeros(3, 5, dtype=torch.int64))


def test_rate_weight_hand_computed_choice():
    # codes 0 and 1 with usage 3:1 -> lengths -log2(0.75) = 0.415 and -log2(0.25) = 2 bits. z = 0.6 is nearer
    # code 1 (0.16 against 0.36); with lambda 0.1: 0.36 + 0.0415 > 0.16 + 0.2 -> still 1; with lambda 0.2:
    # 0.36 + 0.083 < 0.16 + 0.4 -> code 0.
    z = torch.tensor([[0.6], [0.9]])
    for lam, expected in [(0.0, [1, 1]), (0.1, [1, 1]), (0.2, [0, 1])]:
        vq = VectorQuantizer(1, 2, eps=0.0, rate_weight=lam, kmeans_init=False).eval()
        _place(vq, torch.tensor([[0.0], [1.0]]), torch.tensor([3.0, 1.0]))
        assert vq.code_lengths().tolist() == pytest.approx([-math.log2(0.75), 2.0], rel=1e-6)
        assert vq(z).indices.tolist() == expected
        assert vq.encode_indices(z).tolist() == expected
    # rate_scale multiplies the weight for one search (the encoder-side search's choice): 0.1 x 2 chooses as 0.2
    vq = VectorQuantizer(1, 2, eps=0.0, rate_weight=0.1, kmeans_init=False).eval()
    _place(vq, torch.tensor([[0.0], [1.0]]), torch.tensor([3.0, 1.0]))
    assert vq.encode_indices(z, rate_scale=2.0).tolist() == [0, 1] and vq.encode_indices(z).tolist() == [1, 1]
    assert vq.encode_indices(z, rate_scale=0.0).tolist() == [1, 1]


@pytest.mark.parametrize("dim,k,lam", [(1, 3, 0.5), (5, 37, 0.05), (8, 64, 2.0)])
def test_rate_weight_matches_float64_reference(dim, k, lam):
    g = torch.Generator().manual_seed(dim * 100 + k)
    vq = VectorQuantizer(dim, k, rate_weight=lam, kmeans_init=False).eval()
    _place(vq, torch.randn(k, dim, generator=g), torch.rand(k, generator=g) * 5 + 0.01)
    z = torch.randn(3, 11, dim, generator=g)
    got = vq.encode_indices(z).reshape(-1)
    assert torch.equal(vq(z).indices.reshape(-1), got)
    n = vq.cluster_size.double()
    bits = -torch.log2((n + vq.eps) / (n.sum() + k * vq.eps))  # (K,)
    cost = (z.double().reshape(-1, 1, dim) - vq.embed.double()).square().sum(-1) + lam * bits  # (M, K)
    best = cost.min(-1).values
    chosen = cost.gather(1, got[:, None]).squeeze(1)
    assert torch.all(chosen <= best + 1e-5)  # the chosen code costs the minimum (ties within fp32 rounding)
    assert (got != cost.argmin(-1)).float().mean() < 0.05


def test_rate_weight_training_skews_usage():
    """ECVQ's Lloyd steps: with a rate term the codes' usage becomes more skewed (fewer bits per vector under the
    usage) and the squared error larger than with the plain nearest code, from the same start."""
    g = torch.Generator().manual_seed(0)
    data = torch.rand(4096, 2, generator=g)  # uniform square: plain VQ keeps the usage flat
    results = {}
    for lam in (0.0, 0.02):
        torch.manual_seed(1)
        vq = VectorQuantizer(2, 16, decay=0.8, dead_code_threshold=0.0, rate_weight=lam)
        for _ in range(60):
            vq(data)
        vq.eval()
        idx = vq(data).indices
        p = torch.bincount(idx, minlength=16).double() / idx.numel()
        entropy = float(-(p[p > 0] * p[p > 0].log2()).sum())
        mse = float((data - vq.embed[idx]).square().sum(-1).mean())
        results[lam] = entropy, mse
    assert results[0.0][0] > 3.9  # near log2(16) = 4
    assert results[0.02][0] < results[0.0][0] - 0.2
    assert results[0.02][1] > results[0.0][1]


def test_rate_weight_reaches_every_residual_stage_and_is_checked():
    rvq = ResidualVectorQuantizer(4, 8, 3, rate_weight=0.3)
    assert [layer.rate_weight for layer in rvq.layers] == [0.3, 0.3, 0.3]
    # rate_scale reaches every stage: the same codes as a quantizer built with the scaled weight
    g = torch.Generator().manual_seed(7)
    scaled = ResidualVectorQuantizer(4, 8, 3, rate_weight=0.9)
    for a, b in zip(rvq.layers, scaled.layers):
        _place(a, torch.randn(8, 4, generator=g), torch.rand(8, generator=g) * 5 + 0.01)
        _place(b, a.embed.clone(), a.cluster_size.clone())
    z = torch.randn(40, 4, generator=g)
    got = rvq.eval().encode_indices(z, rate_scale=3.0)
    assert torch.equal(got, scaled.eval().encode_indices(z)) and not torch.equal(got, rvq.encode_indices(z))
    with pytest.raises(ValueError, match="rate_weight"):
        VectorQuantizer(4, 8, rate_weight=-1.0)


def test_a_state_without_the_ema_sums_loads_with_embed_times_cluster_size():
    # bundled codecs leave the sums out; loading rebuilds them by hand's rule, m_k = e_k * N_k, per residual stage
    torch.manual_seed(0)
    src = ResidualVectorQuantizer(3, 5, num_quantizers=2, kmeans_init=False)
    for vq, sizes in zip(src.layers, ([2.0, 0.5, 1.0, 3.0, 0.25], [1.0, 1.0, 4.0, 0.5, 2.0]), strict=True):
        _place(vq, torch.randn(5, 3), torch.tensor(sizes))
        vq.embed_sum.add_(0.125)  # an unsettled EMA state, so the rebuilt sums differ from the stored ones
    state = {k: v.half() if v.is_floating_point() else v for k, v in src.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("embed_sum")}
    dst = ResidualVectorQuantizer(3, 5, num_quantizers=2, kmeans_init=False)
    dst.load_state_dict(state)  # strict: nothing reported missing
    for i, vq in enumerate(dst.layers):
        e, n = state[f"layers.{i}.embed"].float(), state[f"layers.{i}.cluster_size"].float()
        # products of two float16 values are exact in float32 (22 significant bits of 24): the float64 product,
        # rounded, is the same bits on any machine
        expected = (e.double() * n.double()[:, None]).float()
        assert torch.equal(vq.embed_sum, expected) and not torch.equal(vq.embed_sum, src.layers[i].embed_sum)
        assert vq.embed_sum.dtype == torch.float32 and torch.equal(vq.embed, e)
    # a state with the sums keeps them as they are
    dst.load_state_dict(src.state_dict())
    assert all(torch.equal(a.embed_sum, b.embed_sum) for a, b in zip(dst.layers, src.layers, strict=True))
