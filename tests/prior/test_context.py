"""The context model (``prior.context``): its pass schedules against hand-written tables, that no pass sees a token it
must not (changing any token not yet coded leaves the pass's logits unchanged), the per-pass path against the
training loss, the integer network against an independent numpy int64 reference (exactly) and against the float
model (closely), and training: loss falls on structured tokens, resume, --init and wrong settings refused."""

import math

import context_reference as ref
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from codec.errors import CheckpointError, ModelMismatchError
from prior.context import ContextConfig, ContextPrior, group_ids, pass_masks
from prior.context_checkpoint import load_context, save_context
from prior.context_integer import IntegerContext, IntegerContextNet
from prior.context_train import train_context
from prior.data import write_tokens
from prior.integer import FINEST_WEIGHT_EXP, row_quantize

CASES = {
    "image": dict(modality="image", levels=3, residual=True, codebook_size=37, embed=4, hidden=8, depth=1),
    "image-flat": dict(modality="image", levels=1, residual=False, codebook_size=19, embed=3, hidden=6, depth=2),
    "audio": dict(modality="audio", levels=2, residual=True, codebook_size=23, embed=4, hidden=8, depth=2, kernel=5),
    "image-k5-cb": dict(
        levels=2, residual=True, codebook_size=11, embed=2, hidden=5, depth=0, kernel=5, first_schedule="cb"
    ),
}


def _model(name: str, seed: int = 0) -> ContextPrior:
    torch.manual_seed(seed)
    m = ContextPrior(ContextConfig(**CASES[name])).eval()
    with torch.no_grad():  # biases away from zero, so that every term of the network matters
        for p in m.parameters():
            if p.ndim == 1 or p is m.pass_bias:
                p.uniform_(-0.5, 0.5)
    return m


def _window(config: ContextConfig, h: int, w: int, seed: int = 0):
    L = config.levels
    h = 1 if config.modality == "audio" else h
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(config.codebook_size, (L, h, w), generator=g)
    return tokens, torch.arange(h)[:, None] + 3, torch.arange(w)[None] + 1  # coordinates of a window inside a grid


def test_schedules_are_the_documented_tables():
    r, c = torch.arange(8)[:, None], torch.arange(8)[None]
    ms5 = torch.tensor(
        [
            [0, 4, 2, 4, 0, 4, 2, 4],
            [4, 3, 4, 3, 4, 3, 4, 3],
            [2, 4, 1, 4, 2, 4, 1, 4],
            [4, 3, 4, 3, 4, 3, 4, 3],
        ]
        * 2
    )
    assert torch.equal(group_ids("ms5", r, c), ms5)
    assert torch.equal(group_ids("cb", r, c), (r + c) % 2)
    # audio (one row): frames 0 mod 4, then 2 mod 4, then the odd ones
    assert group_ids("ms5", torch.zeros(1, 1, dtype=torch.long), torch.arange(8)[None]).tolist() == [[0, 4, 2, 4] * 2]


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_token_is_coded_once_after_everything_it_sees(name):
    """Every token is the target of exactly one pass; each pass sees only tokens of earlier passes."""
    c = ContextConfig(**CASES[name])
    tokens, rows, cols = _window(c, 6, 9)
    inside = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1)) < 0.8
    coded = torch.zeros_like(inside)
    for level, group in c.passes():
        known, target = pass_masks(c, rows, cols, inside, level, group)
        assert torch.equal(known, coded), (level, group)  # exactly what earlier passes coded
        assert not (coded[level] & target).any()
        coded[level] |= target
    assert torch.equal(coded, inside)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_pass_does_not_depend_on_tokens_it_may_not_see(name):
    m = _model(name)
    c = m.config
    tokens, rows, cols = _window(c, 6, 9)
    inside = torch.ones(tokens.shape, dtype=torch.bool)
    net = IntegerContextNet(IntegerContext.from_float(m))
    g = torch.Generator().manual_seed(5)
    for level, group in c.passes():
        known, target = pass_masks(c, rows, cols, inside, level, group)
        if not target.any():
            continue
        other = torch.where(known, tokens, torch.randint(c.codebook_size, tokens.shape, generator=g))
        with torch.no_grad():
            a, b = (
                m.pass_logits(tokens, inside, rows, cols, level, group),
                m.pass_logits(other, inside, rows, cols, level, group),
            )
        assert torch.equal(a, b)
        assert torch.equal(
            net.pass_logits(tokens, inside, rows, cols, level, group),
            net.pass_logits(other, inside, rows, cols, level, group),
        )
    # and a known token does matter: change one token of level 0 before the last pass of level 1 (or 0)
    level = min(1, c.levels - 1)
    last = [p for p in c.passes() if p[0] == level][-1]
    changed = tokens.clone()
    changed[0, 0, 2] = (changed[0, 0, 2] + 1) % c.codebook_size
    with torch.no_grad():
        assert not torch.equal(
            m.pass_logits(tokens, inside, rows, cols, *last), m.pass_logits(changed, inside, rows, cols, *last)
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_pass_logits_add_up_to_the_training_loss(name):
    m = _model(name)
    c = m.config
    tokens, rows, cols = _window(c, 5, 7)
    inside = torch.ones(tokens.shape, dtype=torch.bool)
    total = 0.0
    with torch.no_grad():
        for level, group in c.passes():
            _, target = pass_masks(c, rows, cols, inside, level, group)
            logits = m.pass_logits(tokens, inside, rows, cols, level, group).double()
            total += float(torch.nn.functional.cross_entropy(logits, tokens[level][target], reduction="sum"))
        # the loss's window has its own coordinates (rows and columns from 0): the same only where the pattern
        # repeats, so compare at an offset of a multiple of 4
        rows0, cols0 = torch.arange(tokens.shape[1])[:, None], torch.arange(tokens.shape[2])[None]
        total0 = 0.0
        for level, group in c.passes():
            _, target = pass_masks(c, rows0, cols0, inside, level, group)
            logits = m.pass_logits(tokens, inside, rows0, cols0, level, group).double()
            total0 += float(torch.nn.functional.cross_entropy(logits, tokens[level][target], reduction="sum"))
        nats, per_level = m.loss_nats(tokens[None])
    assert float(nats) == pytest.approx(total0, rel=1e-5)
    assert float(per_level.sum()) == pytest.approx(total0, rel=1e-5)
    assert math.isfinite(total)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("partial", [False, True])
def test_integer_logits_equal_the_numpy_reference_exactly(name, partial):
    m = _model(name)
    c = m.config
    ic = IntegerContext.from_float(m)
    net = IntegerContextNet(ic)
    tokens, rows, cols = _window(c, 6, 11, seed=3)
    inside = torch.ones(tokens.shape, dtype=torch.bool)
    if partial:  # a chunk that starts inside a row, at a level above 0, and ends early
        flat = inside.permute(1, 2, 0).reshape(-1)
        flat[:13] = False
        flat[-20:] = False
        inside = flat.reshape(tokens.shape[1], tokens.shape[2], -1).permute(2, 0, 1).contiguous()
    for level, group in c.passes():
        got = net.pass_logits(tokens, inside, rows, cols, level, group).numpy()
        want = ref.pass_logits(ic, tokens.numpy(), inside.numpy(), rows[:, 0].tolist(), cols[0].tolist(), level, group)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_integer_logits_follow_the_float_model(name):
    m = _model(name)
    net = IntegerContextNet(IntegerContext.from_float(m))
    tokens, rows, cols = _window(m.config, 6, 9)
    inside = torch.ones(tokens.shape, dtype=torch.bool)
    for level, group in m.config.passes():
        with torch.no_grad():
            f = m.pass_logits(tokens, inside, rows, cols, level, group).double()
        i = net.pass_logits(tokens, inside, rows, cols, level, group).double() / 2**ref.LOGIT_FRAC
        if len(f):  # log-softmax: the integer logits are shifted by a constant per row at most
            d = torch.log_softmax(f, -1) - torch.log_softmax(i, -1)
            assert d.abs().max() < 0.1, (level, group, float(d.abs().max()))


def test_derivation_is_deterministic_and_named_by_its_integers():
    a, b = IntegerContext.from_float(_model("image")), IntegerContext.from_float(_model("image"))
    assert a.hash() == b.hash()
    assert a.hash() != IntegerContext.from_float(_model("image", seed=1)).hash()
    for lin in [a.conv_in, *a.convs, a.proj, *a.heads]:
        assert int(lin.weight.abs().max()) <= 127


def test_row_quantize_is_idempotent():
    """The property compact storage rests on: rows of wq 2^-e quantize to wq and e again (but for rows that
    round to zeros, whose exponent compact storage keeps its own way)."""
    g = np.random.default_rng(0)
    w = g.normal(size=(40, 13)) * np.exp2(g.integers(-20, 8, size=(40, 1)))  # row scales from 2^-20 to 2^8
    w[5, :] = 127.5 / 128  # rounds to 128, clipped to 127
    wq, e = row_quantize(w)
    assert np.abs(wq).max() <= 127 and (np.abs(wq).max(axis=1) >= 64).all()
    again_q, again_e = row_quantize(np.ldexp(wq.astype(np.float64), -e[:, None]))
    assert np.array_equal(again_q, wq) and np.array_equal(again_e, e)
    assert row_quantize(np.array([[0.0, 0.0], [2.0**-33, 0.0]]))[1].tolist() == [7, FINEST_WEIGHT_EXP]


def _wide_model(seed: int = 0) -> ContextPrior:
    torch.manual_seed(seed)
    return ContextPrior(
        ContextConfig(modality="image", levels=2, residual=True, codebook_size=256, embed=4, hidden=32, depth=1)
    )


@pytest.mark.parametrize("name", [*sorted(CASES), "zero and tiny rows"])
def test_compact_storage_derives_the_same_integer_network(tmp_path, name):
    m = _model("image") if name == "zero and tiny rows" else _model(name)
    if name == "zero and tiny rows":
        with torch.no_grad():
            m.head[0, 3] = 0.0  # exactly zero: exponent 7
            m.head[1, 5] = 2.0**-33  # rounds to zeros: exponent FINEST_WEIGHT_EXP, kept by the storage
            m.proj.weight[2] = 2.0**-40
    save_context(tmp_path / "compact", m, compact=True)
    stored = load_file(tmp_path / "compact" / "model.safetensors")
    assert stored["head"].dtype == torch.int8 and stored["head.exp2"].shape == (*stored["head"].shape[:2], 1)
    assert stored["embed"].dtype == torch.int16
    back = load_context(tmp_path / "compact")
    want, got = IntegerContext.from_float(m), IntegerContext.from_float(back)
    assert got.hash() == want.hash()
    for key, t in want.tensors().items():
        assert torch.equal(got.tensors()[key], t), key
    state = dict(stored)  # damaged companions are refused, not misread
    for broken in (
        {"head.exp2": stored["head.exp2"].float()},
        {"head.exp2": torch.full_like(stored["head.exp2"], 100)},
        {"head.exp2": stored["head.exp2"][:, :1, 0].contiguous()},  # not broadcastable
        {"head": stored["head"].float(), "head.exp2": stored["head.exp2"]},
        {"nothing.exp2": torch.zeros(1, dtype=torch.int8)},
    ):
        save_file({**state, **broken}, tmp_path / "compact" / "model.safetensors")
        with pytest.raises(CheckpointError, match="exp2"):
            load_context(tmp_path / "compact")


def test_compact_storage_is_about_half_of_float16(tmp_path):
    m = _wide_model()
    save_context(tmp_path / "full", m)
    save_context(tmp_path / "compact", m, compact=True)
    fp16 = sum(t.numel() * 2 for t in m.state_dict().values())
    assert (tmp_path / "compact" / "model.safetensors").stat().st_size < 0.6 * fp16
    assert IntegerContext.from_float(load_context(tmp_path / "compact")).hash() == IntegerContext.from_float(m).hash()


# ------------------------------------------------------------------------------------------------ training
def _tokens_dir(tmp_path, modality="image", n=6):
    """Structured tokens: level 0 constant in 2 x 2 blocks, level 1 equal to level 0 shifted by one."""
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        if modality == "image":
            base = torch.randint(16, (1, 6, 8), generator=g).repeat_interleave(2, 1).repeat_interleave(2, 2)
        else:
            base = torch.randint(16, (1, 96), generator=g).repeat_interleave(2, 1)
        items.append(torch.cat([base, (base + 1) % 16]))
    out = tmp_path / f"tokens_{modality}"
    write_tokens(
        out,
        [f"f{i}" for i in range(n)],
        items,
        codec_hash="c" * 64,
        modality=modality,
        codebook_size=16,
        levels=2,
        residual=True,
    )
    return out


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_training_learns_structured_tokens_and_resumes(tmp_path, modality):
    tokens = _tokens_dir(tmp_path, modality)
    model = dict(embed=4, hidden=16, depth=1, kernel=3)
    train = dict(
        steps=100,
        batch_size=4,
        crop=6,
        eval_every=100,
        eval_batches=2,
        save_every=50,
        warmup_steps=5,
        val_fraction=0.3,
        lr=3e-2,
    )
    out = tmp_path / "ctx"
    r = train_context(tokens, out, model, train, progress=False)
    assert r["step"] == 100
    assert r["val_bits"] < 2.5  # uniform is 4 bits; level 1 is a function of level 0, level 0 has 2 x 2 blocks
    m = load_context(out)
    assert m.config.codec_hash == "c" * 64 and m.config.levels == 2
    r2 = train_context(tokens, out, None, {"steps": 110}, resume=True, progress=False)
    assert r2["step"] == 110
    with pytest.raises(ValueError, match="cannot change"):
        train_context(tokens, out, {"hidden": 8}, {"steps": 120}, resume=True, progress=False)
    with pytest.raises(CheckpointError):
        train_context(tokens, out, model, train, progress=False)  # a fresh run over a checkpoint
    r3 = train_context(tokens, tmp_path / "ctx2", None, {"steps": 2, "eval_every": 2}, init=out, progress=False)
    assert load_context(tmp_path / "ctx2").config.hidden == 16 and r3["step"] == 2


def test_wrong_settings_and_files_are_refused(tmp_path):
    tokens = _tokens_dir(tmp_path)
    with pytest.raises(ValueError, match="unknown"):
        train_context(tokens, tmp_path / "a", {"width": 3}, {"steps": 1}, progress=False)
    with pytest.raises(ValueError, match="tokens directory"):
        train_context(tokens, tmp_path / "a", {"levels": 3}, {"steps": 1}, progress=False)
    with pytest.raises(ValueError, match="odd"):
        ContextConfig(kernel=4)
    with pytest.raises(ValueError, match="schedule"):
        ContextConfig(schedule="zigzag")
    other = ContextPrior(ContextConfig(modality="audio", levels=3, residual=True, codebook_size=16, hidden=4, embed=2))
    save_context(tmp_path / "other", other)
    with pytest.raises(ModelMismatchError):
        train_context(tokens, tmp_path / "b", None, {"steps": 1}, init=tmp_path / "other", progress=False)
    (tmp_path / "notctx").mkdir()
    (tmp_path / "notctx" / "config.json").write_text('{"modality": "image"}')
    (tmp_path / "notctx" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="context"):
        load_context(tmp_path / "notctx")


def test_frequencies_are_the_documented_integers():
    """``context_integer.frequencies`` (float64 arithmetic) against the formula in Python integers, on sharp, flat,
    tied and extreme logits."""
    from prior.context_integer import PROB_ONE, frequencies
    from prior.integer import exp_table

    table = exp_table(PROB_ONE).tolist()
    g = torch.Generator().manual_seed(0)
    rows = [torch.randn(1024, generator=g) * 300, torch.zeros(1024), torch.randn(7, generator=g) * 3e6]
    rows += [torch.tensor([2.0**24, -(2.0**24)]), torch.randn(3, generator=g) * 20]
    for r in rows:
        logits = r.round().long()[None]
        got = frequencies(logits.double())
        assert got.dtype == torch.float64
        lg = logits[0].tolist()
        e = [table[min(max(lg) - v, len(table) - 1)] for v in lg]
        total, K = 1 << 20, len(lg)
        want = [x * (total - K) // sum(e) + 1 for x in e]
        want[lg.index(max(lg))] += total - sum(want)
        assert got[0].long().tolist() == want
        assert torch.equal(frequencies(logits), got)
