"""The integer prior (prior.integer): exactly equal to an independent numpy int64 reference, identical under every
CPU kernel choice (ATEN_CPU_CAPABILITY), thread count and device, its tables and derivation, and what integer
arithmetic costs in bits against the float prior on real tokens."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import integer_reference as ref
import numpy as np
import pytest
import torch

import codec
from codec.bitstream.range_coding import integer_frequencies
from prior import integer as spec
from prior.checkpoint import load_prior, save_prior
from prior.config import PriorConfig
from prior.integer import IntegerPrior, frequencies, quantize_linear
from prior.integer_forward import IntegerNet, IntegerStepDecoder, integer_window_logits
from prior.layout import positions
from prior.model import TokenPrior

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("integer_worker.py")


def _tiny_prior(dim=32, heads=2, context=6, K=19, levels=3, scale=1.0, seed=3) -> TokenPrior:
    """A small random prior; ``scale`` multiplies every weight (large ones reach the clamps and table ends)."""
    torch.manual_seed(seed)
    cfg = PriorConfig(codebook_size=K, dim=dim, depth=2, heads=heads, context=context, levels=levels, residual=True)
    p = TokenPrior(cfg).eval()
    with torch.no_grad():
        for name, w in p.named_parameters():
            if "gamma" not in name:
                w.mul_(scale)
            else:
                w.add_(torch.randn_like(w) * 0.1)
    return p


def _step_logits(net, layout, starts, seq, steps, start_id) -> torch.Tensor:
    """(B, steps, K) logits of the step decoder for sequences starting at flat positions ``starts``."""
    dec = IntegerStepDecoder(net, layout, torch.tensor(starts))
    inputs, out = torch.full((len(starts),), start_id), []
    for s in range(steps):
        out.append(dec.step(inputs))
        inputs = torch.stack([seq[a + s] for a in starts])
    return torch.stack(out, dim=1)


# ------------------------------------------------------------------------------------ exact: the reference
CASES = {
    # name: (prior kwargs, layout, starts, steps)
    "small GEMMs": (dict(), (3, 5, 7), [0, 9, 40], 14),
    "clamps and table ends": (dict(scale=20.0, seed=4), (3, 4, 6), [0, 5], 12),
    "wide GEMMs": (dict(dim=256, heads=2, context=300, K=23), (2, 1, 40), [0, 17], 10),
    "level innermost, wide grid": (dict(levels=1, context=9, K=7), (1, 3, 21), [0, 30], 20),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_integer_logits_equal_the_numpy_reference_exactly(case):
    kwargs, layout, starts, steps = CASES[case]
    p = _tiny_prior(**kwargs)
    ip = IntegerPrior.from_float(p)
    net = IntegerNet(ip)
    assert net.key_dtype == net.value_dtype == torch.float64  # never float32 (prior.integer, "Exactness")
    K = p.config.codebook_size
    seq = torch.randint(0, K, (math.prod(layout),), generator=torch.Generator().manual_seed(5))
    got = _step_logits(net, layout, starts, seq, steps, K)
    for b, a in enumerate(starts):
        inputs = torch.cat([torch.tensor([K]), seq[a : a + steps - 1]])
        want = ref.window_logits(ip, layout, a, inputs.numpy())
        np.testing.assert_array_equal(got[b].numpy(), want, err_msg=f"{case}: step path, start {a}")
        window = integer_window_logits(net, layout, a, inputs[None], block=5)[0]
        np.testing.assert_array_equal(window.numpy(), want, err_msg=f"{case}: window path, start {a}")
        np.testing.assert_array_equal(frequencies(got[b]).numpy(), ref.frequencies(want))
    if case == "clamps and table ends":  # the large weights reach the clamps (and the GELU table's ends)
        h = net.layers[0]["ff1"](net.layer_norm(net.embed(seq[:20], positions(layout, 0, 20))))
        assert int(h.max()) > spec.HID_MAX and int(h.min()) < -spec.HID_MAX


def test_bundled_prior_equals_the_reference_on_real_tokens(real_tokens):
    prior, flat, layout = real_tokens["image"]
    ip = IntegerPrior.from_float(prior)
    K, n = prior.config.codebook_size, 40
    for a in (0, 3001):
        inputs = torch.cat([torch.tensor([K]), flat[a : a + n - 1]])
        want = ref.window_logits(ip, layout, a, inputs.numpy())
        np.testing.assert_array_equal(integer_window_logits(ip, layout, a, inputs[None])[0].numpy(), want)


def test_frequencies_are_valid_and_follow_the_logits():
    torch.manual_seed(0)
    logits = (torch.randn(6, 300) * 2000).long()
    logits[0] = 0  # uniform
    logits[1, 7] = spec.LOGIT_MAX  # one symbol takes almost everything
    logits[2] = torch.arange(300) * 50  # ties nowhere, long tail
    logits[3, :2] = logits[3].max() + 1  # a tie for the maximum: the first one takes the leftover units
    f = frequencies(logits)
    assert f.dtype == torch.int64 and bool((f >= 1).all()) and bool((f.sum(1) == 1 << spec.FREQ_BITS).all())
    np.testing.assert_array_equal(f.numpy(), ref.frequencies(logits.numpy()))
    assert int(f[1, 7]) == (1 << spec.FREQ_BITS) - 299
    p = torch.softmax(logits.double() / (1 << spec.LOGIT_FRAC), dim=1)
    torch.testing.assert_close(f.double() / (1 << spec.FREQ_BITS), p, atol=300 / (1 << spec.FREQ_BITS), rtol=0)
    assert int(f[3, 0]) > int(f[3, 1])


# --------------------------------------------------------------------------------------- tables, derivation
def test_tables_are_the_functions_they_stand_for():
    for one in (spec.ATTN_ONE, spec.PROB_ONE):
        t = spec.exp_table(one)
        want = np.round(one * np.exp(-np.arange(len(t)) / (1 << spec.EXP_FRAC)))
        assert t[0] == one and t[-1] == 0 and t[-2] > 0 and np.abs(t - want).max() <= 1
    cos, sin = spec.trig_tables()
    angle = 2 * np.pi * np.arange(len(cos)) / len(cos)
    assert np.abs(cos - np.cos(angle) * (1 << spec.TRIG_FRAC)).max() <= 0.5 + 1e-6
    assert np.abs(sin - np.sin(angle) * (1 << spec.TRIG_FRAC)).max() <= 0.5 + 1e-6
    g, r = spec.gelu_table(), spec.GELU_RANGE << spec.HID_FRAC
    x = np.arange(-r, r + 1) / (1 << spec.HID_FRAC)
    gelu = torch.nn.functional.gelu(torch.from_numpy(x)).numpy() * (1 << spec.HID_FRAC)
    assert np.abs(g - gelu).max() <= 0.5 + 1e-6 and g[0] == 0 and g[-1] == r
    theta = spec.rotary_theta(PriorConfig())
    quarter = len(theta)
    want = 10000.0 ** (-np.arange(quarter) / quarter) / (2 * np.pi) * 2**spec.TURN_BITS
    assert np.abs(theta - want).max() <= 1


def test_derivation_is_deterministic_and_close_to_the_float_weights():
    p = _tiny_prior()
    a, b = IntegerPrior.from_float(p), IntegerPrior.from_float(copy.deepcopy(p))
    assert a.hash() == b.hash()
    q = copy.deepcopy(p)
    with torch.no_grad():
        q.net.to_logits.weight[0, 0] += 0.01
    assert IntegerPrior.from_float(q).hash() != a.hash()
    w = p.net.to_logits.weight.detach().double() * (p.net.attn_layers.final_norm.gamma.detach().double() + 1)
    lin = a.to_logits
    scale = 2.0 ** -(lin.shift + spec.LOGIT_FRAC - spec.NORM_FRAC).double()[:, None]  # 2^-e of each row
    assert int(lin.weight.abs().max()) <= spec.WEIGHT_MAX
    assert float((lin.weight * scale - w).abs().max()) <= float(w.abs().max()) / 2**7


def test_quantize_linear_proves_exactness_or_refuses():
    w = np.full((2, 8), 0.01)
    small = quantize_linear(w, None, 5, 5, (-(2**9), 2**9), "small")
    assert small.sum_bound() == 8 * 82 * 2**9  # 0.01 -> 82 * 2^-13
    assert quantize_linear(w, None, 5, 5, (-(2**30), 2**30), "big").sum_bound() == 8 * 82 * 2**30
    w[:, :4] = -0.01  # inputs in [-1, 2^20]: positive weights reach 2^20 each, negative ones 1
    assert quantize_linear(w, None, 5, 5, (-1, 2**20), "signed").sum_bound() == 4 * 82 * 2**20 + 4 * 82
    with pytest.raises(ValueError, match="2\\^53"):
        quantize_linear(np.full((2, 2**12), 0.01), None, 5, 5, (-(2**45), 2**45), "huge")


# -------------------------------------------------------------------------------- identical on every machine
@pytest.fixture(scope="module")
def real_tokens():
    """The bundled priors with the bundled codecs' tokens of the examples, in raster order: name -> (prior, flat,
    layout)."""
    from codec.bitstream.compress import _prepare, _read_input

    out = {}
    for modality, example in (("image", "icecold.png"), ("audio", "speech.flac")):
        model = codec.load(modality, device="cpu")
        x, _, src = _read_input(str(ROOT / "examples" / example), None, None)
        x, _, _ = _prepare(x, model, src)
        with torch.no_grad():
            tokens = model.encode(x[None])[0]
        prior = load_prior(codec.model_dir(f"{modality}/prior"), device="cpu")
        out[modality] = (prior, prior.flatten(tokens[None])[0], prior.layout(tokens.shape))
    return out


def _run_worker(job: Path, capability: str) -> dict:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(WORKER), str(job)], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_identical_under_every_cpu_kernel_choice_and_thread_count(tmp_path, real_tokens):
    """Subprocesses play other machines: torch picks other CPU kernels under ATEN_CPU_CAPABILITY."""
    priors = {}
    tiny = _tiny_prior(dim=64, heads=2, context=16, K=40)
    save_prior(tmp_path / "tiny", tiny)
    rng = np.random.default_rng(0)
    items = [("tiny", tmp_path / "tiny", rng.integers(0, 40, 3 * 10 * 12), (3, 10, 12), [0, 100, 300], 40)]
    for name, (_, flat, layout) in real_tokens.items():
        items.append((name, codec.model_dir(f"{name}/prior"), flat.numpy(), layout, [0, 500, len(flat) - 40], 40))
    for name, prior_dir, flat, layout, starts, steps in items:
        np.save(tmp_path / f"{name}.npy", np.asarray(flat, dtype=np.int64))
        np.save(tmp_path / f"{name}_layout.npy", np.asarray(layout, dtype=np.int64))
        priors[name] = dict(prior=str(prior_dir), tokens=str(tmp_path / f"{name}.npy"), starts=starts, steps=steps)
    job = tmp_path / "job.json"
    results = {}
    for capability in ("default", "avx2", "avx512"):
        threads = [1, 2] if capability == "default" else [1]  # (a second thread is slow on a busy machine)
        job.write_text(json.dumps({"priors": priors, "threads": threads}))
        got = _run_worker(job, capability)
        if got.pop("capability").lower() == capability:  # else the CPU cannot run these kernels
            results[capability] = got
    assert "default" in results and len(results) >= 2, results.keys()
    for digests in results["default"].values():
        assert digests["threads=1"] == digests.pop("threads=2")
    for got in results.values():
        assert got == results["default"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_logits(real_tokens):
    prior, flat, layout = real_tokens["image"]
    ip = IntegerPrior.from_float(prior)
    K, starts, steps = prior.config.codebook_size, [0, 700, 2000], 60
    cpu = _step_logits(IntegerNet(ip, "cpu"), layout, starts, flat, steps, K)
    gpu = _step_logits(IntegerNet(ip, "cuda"), layout, starts, flat.cuda(), steps, K)
    assert torch.equal(cpu, gpu.cpu())
    inputs = torch.cat([torch.tensor([K]), flat[:299]])[None]
    window = integer_window_logits(IntegerNet(ip, "cuda"), layout, 0, inputs.cuda())
    assert torch.equal(window.cpu(), integer_window_logits(ip, layout, 0, inputs))


# ------------------------------------------------------------------------------------------- bits it costs
def _coded_bits(freqs: np.ndarray, target: np.ndarray) -> float:
    return float(-np.log2(freqs[np.arange(len(target)), target] / (1 << spec.FREQ_BITS)).sum())


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_integer_prior_costs_under_two_percent_more_bits(real_tokens, modality):
    """Chunks of 256 tokens, each from the start token (as the coder runs them): the integer prior's frequencies
    against the float prior's (``codec.bitstream.range_coding.integer_frequencies``) on the same chunks."""
    prior, flat, layout = real_tokens[modality]
    ip, K, chunk = IntegerPrior.from_float(prior), prior.config.codebook_size, 256
    float_bits = int_bits = 0.0
    for a in range(0, len(flat), chunk):
        target = flat[a : a + chunk]
        inputs = torch.cat([torch.tensor([K]), target[:-1]])[None]
        logits = integer_window_logits(ip, layout, a, inputs)[0]
        int_bits += _coded_bits(frequencies(logits).numpy(), target.numpy())
        with torch.no_grad():
            fl = prior(inputs, positions(layout, a, a + len(target))[None])
        float_bits += _coded_bits(integer_frequencies(fl[0]), target.numpy())
    print(f"{modality}: float {float_bits / len(flat):.4f} bits/token, integer {int_bits / len(flat):.4f}")
    assert int_bits <= 1.02 * float_bits


def test_floor_division_matches_python_integers_at_the_edges():
    """``frequencies`` divides with a float64 quotient corrected in integers: exact for every a < 2^53."""
    from prior.integer import _floor_div

    g = torch.Generator().manual_seed(0)
    b = torch.randint(1, 2**46, (200, 1), generator=g)
    q = torch.randint(0, 2**20, (200, 16), generator=g)
    a = torch.cat([q * b, q * b - 1, q * b + 1, torch.randint(0, 2**50, (200, 16), generator=g)], dim=1).clamp(min=0)
    want = [[x // int(y[0]) for x in row] for row, y in zip(a.tolist(), b.tolist())]
    assert _floor_div(a, b).tolist() == want
