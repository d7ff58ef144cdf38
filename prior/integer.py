"""IntegerPrior: a trained TokenPrior in exact integer arithmetic, so range-coded files decode on any machine.

Why. A range decoder must see exactly the frequencies the encoder used. Float logits differ in their last bits
between CPU kernels (``ATEN_CPU_CAPABILITY``), thread counts, libraries and devices, and one changed frequency
derails the decoder. The integer prior computes the same network as ``TokenPrior`` (pre-norm Transformer, 2-D
rotary attention over a sliding window, level and edge embeddings; see ``prior.transformer``)
with integers only, so its logits are a function of the tokens alone (Balle, Johnston and Minnen, "Integer
networks for data compression with latent-variable models", ICLR 2019, is the idea).

Number formats (a value is ``int * 2**-frac``; every bound is enforced by a clamp or proved below):

    quantity                           frac  |int| <=  computed by
    residual stream x                   12   2^23      embedding tables rounded; integer sums; clamped
    LayerNorm output (a GEMM input)      5   2^9       exact mean and variance, integer sqrt, one rounded division;
                                                       the gain (gamma) is folded into the next weights
    weights, per output row             e_j  127       w * 2^e_j rounded, 2^e_j the largest power of two that fits
    query (1 / sqrt(dim_head) folded)    8   2^10      rounded shifts of exact accumulators; clamped
    key, value, attention output         6   2^9       the same; keys and queries then turned by the rotary tables
    FF hidden, GELU output               5   2^9       GELU by a table over [-8, 8]; beyond it x (above) or 0 (below)
    rotary cos / sin                    14   2^14      tables of 2^14 angles per turn; phase (pos * theta) mod 2^32
    attention weights                    -   2^14      e = table round(2^14 exp(-t)), t = max score - score in steps
                                                       of 2^-8 nats; out = round(sum e v / sum e)
    logits                               8   2^24      rounded shift; clamped
    frequencies (``frequencies``)        -   2^20 sum  table round(2^30 exp(-t)); floor(e (2^20 - K) / sum e) + 1

Exactness. Elementwise work and reductions run on int64 tensors: exact, in any order, on any device. Matrix
products run as float64 GEMMs over integers whose every |product| and partial sum is below 2^53: float64 represents
each of them exactly, so any blocking, summation order, FMA use, thread count or device gives the same integer, at
BLAS speed. The bound is proved from the integer weights (the inputs' range and each row's sums of positive and
negative weights) when a layer is derived (``quantize_linear``). Never float32, even where 2^24 would suffice: a
process may ask torch to run float32 GEMMs in bf16 or TF32 (``torch.set_float32_matmul_precision("medium")``,
``torch.backends.mkldnn.matmul.fp32_precision``, TF32 on CUDA), and no such setting may change a file's bytes;
float64 GEMMs have no reduced mode. Attention weights enter their product as two base-2^7 digits. The int64
intermediates stay below 2^62 by the bounds in the table.

Derivation. ``from_float`` reads the float weights only (no calibration data, nothing computed with a GEMM), with
operations that IEEE 754 rounds exactly alike everywhere: power-of-two scaling, rounding, products, and
correctly rounded sqrt and division for a few constants. The tables depend on the design constants alone: exp
values from exact integer arithmetic, cos, sin and GELU from libm in float64, each checked to lie at least
``TABLE_MARGIN`` from a rounding boundary, so any libm accurate to that gives the same table. Post-training
quantization with these widths costs well under 0.1% of the bits on the bundled priors (see the tests).
``IntegerPrior.hash`` names the result (weights, constants, tables and ``VERSION``).
"""

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np
import torch

from prior.config import PriorConfig, config_to_dict
from prior.model import TokenPrior
from prior.transformer import EDGES

VERSION = 1  # of the integer design: part of the hash, so a change here shows as another prior
RES_FRAC, RES_MAX = 12, 2**23  # residual stream
NORM_FRAC, NORM_MAX = 5, 2**9  # LayerNorm output
Q_FRAC, Q_MAX = 8, 2**10  # queries, scaled by 1 / sqrt(dim_head)
KV_FRAC, KV_MAX = 6, 2**9  # keys, values, attention output
HID_FRAC, HID_MAX = 5, 2**9  # FF hidden
LOGIT_FRAC, LOGIT_MAX = 8, 2**24  # logits, in 2^-8 nats
WEIGHT_MAX = 127  # |integer weight|: 8-bit
FINEST_WEIGHT_EXP = 30  # no weight row is scaled finer than 2^-30
F64_EXACT = 2**53  # every integer up to this is a float64
GEMM_DTYPE = torch.float64  # the type of every matrix product of the integer networks (see "Exactness")
TRIG_FRAC, TRIG_BITS, TURN_BITS = 14, 14, 32  # cos/sin * 2^14; 2^14 table angles per turn; phase in 2^-32 turns
EXP_FRAC = 8  # exp tables step t (nats) by 2^-8; logits are in the same units
ATTN_ONE, ATTN_DIGIT = 2**14, 7  # attention weights: round(2^14 exp(-t)), as two base-2^7 digits
PROB_ONE = 2**30  # the output exp table's value at t = 0
GELU_RANGE = 8  # the GELU table covers [-8, 8]
SQRT_FRAC = 20  # sqrt(dim) as an integer * 2^-20 (LayerNorm)
LN_EPS = 1e-5  # torch's LayerNorm eps, as prior.transformer.LayerNorm uses it
MAX_DIM = 2**12  # dim, FF width and context bounds under which the int64 intermediates cannot overflow
TABLE_MARGIN = 1e-9  # libm-computed table entries lie at least this far from a rounding boundary
FREQ_BITS = 20  # frequencies of one distribution sum to 2^20, as the float coder's FREQ_TOTAL


# --------------------------------------------------------------------------------------------- tables
def _decimal_round(v: Decimal) -> int:
    return int(v.to_integral_value(rounding=ROUND_HALF_EVEN))


@functools.cache
def exp_table(one: int) -> np.ndarray:
    """(n,) int64 ``round(one * exp(-i / 2^EXP_FRAC))`` for i = 0, 1, ... up to and including the first 0.

    Powers of exp(-2^-EXP_FRAC) in 160-bit fixed point with Python integers (the step from the decimal module):
    exact integer work, the same everywhere, and within 2^-140 of the true values.
    """
    bits = 160
    with localcontext() as ctx:
        ctx.prec = 60
        step = _decimal_round((Decimal(-1) / (1 << EXP_FRAC)).exp() * (1 << bits))
    out, v = [], 1 << bits
    while not out or out[-1]:
        out.append((v * one + (1 << (bits - 1))) >> bits)
        v = (v * step) >> bits
    return np.array(out, dtype=np.int64)


def _round_checked(values: np.ndarray, what: str) -> np.ndarray:
    """round(values) as int64; refuses values within TABLE_MARGIN of a rounding boundary (see module docstring)."""
    if np.abs(values - np.floor(values) - 0.5).min() < TABLE_MARGIN:
        raise RuntimeError(f"the {what} table has an entry too close to a rounding boundary")
    return np.floor(values + 0.5).astype(np.int64)


@functools.cache
def trig_tables() -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each (2^TRIG_BITS,) int64: ``round(2^TRIG_FRAC * cos(2 pi i / 2^TRIG_BITS))``."""
    angle = np.arange(1 << TRIG_BITS, dtype=np.float64) * (2 * math.pi / (1 << TRIG_BITS))
    one = float(1 << TRIG_FRAC)
    return _round_checked(np.cos(angle) * one, "cos"), _round_checked(np.sin(angle) * one, "sin")


@functools.cache
def gelu_table() -> np.ndarray:
    """(2 R + 1,) int64 GELU at x = i / 2^HID_FRAC for i = -R..R, R = GELU_RANGE * 2^HID_FRAC, in 2^-HID_FRAC units."""
    r, one = GELU_RANGE << HID_FRAC, 1 << HID_FRAC
    return _round_checked(np.array([0.5 * i * math.erfc(-i / one / math.sqrt(2)) for i in range(-r, r + 1)]), "GELU")


def rotary_theta(config: PriorConfig) -> np.ndarray:
    """(dim_head / 4,) int64 rotary frequencies in 2^-TURN_BITS turns per position: round(2^32 base^(-i/q) / 2 pi).

    Computed with the decimal module (software arithmetic, the same everywhere) rather than libm.
    """
    quarter = config.dim // config.heads // 4
    pi = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
    with localcontext() as ctx:
        ctx.prec = 50
        base = Decimal(config.rotary_base)
        return np.array(
            [_decimal_round(base ** (Decimal(-i) / quarter) / (2 * pi) * (1 << TURN_BITS)) for i in range(quarter)],
            dtype=np.int64,
        )


# ------------------------------------------------------------------------------------------- network
@dataclass
class IntLinear:
    """y = round((a @ weight.T + bias) * 2^-shift): integer weights with one power-of-two scale per output row.

    Attributes:
        weight: (out, in) int64, |w| <= WEIGHT_MAX.
        shift: (out,) int64: from the accumulator's units to the output's (negative: a left shift).
        bias: (out,) int64 in the accumulator's units, or None.
        in_range: (lo, hi), lo <= 0 <= hi: bounds of the inputs; with the weights they bound every partial sum
            of the product (``sum_bound``).
    """

    weight: torch.Tensor
    shift: torch.Tensor
    bias: torch.Tensor | None
    in_range: tuple[int, int]

    _sum_bound: int | None = field(default=None, init=False, repr=False, compare=False)  # sum_bound, once

    def sum_bound(self) -> int:
        """The largest |partial sum| of a row's products, in any order: positive weights times the largest
        input plus negative weights times the smallest (or the reverse), over the worst row. Computed once."""
        if self._sum_bound is None:
            lo, hi = self.in_range
            w = self.weight
            pos, neg = w.clamp(min=0).sum(dim=1).tolist(), (-w).clamp(min=0).sum(dim=1).tolist()
            self._sum_bound = max(max(p * hi - n * lo, n * hi - p * lo) for p, n in zip(pos, neg))  # Python ints
        return self._sum_bound


def row_quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-bit weights with a power-of-two scale per row: (out, in) float64 -> (wq (out, in), e (out,)), int64, with
    w ~ wq 2^-e, |wq| <= 127 and max |wq| of a row >= 64 (unless the row is below 2^-FINEST_WEIGHT_EXP).

    Idempotent for every row that does not round to zeros: rows of wq 2^-e give wq and e again (what lets a model
    be stored as wq and e, as bundled context models are, and derive the same integer network). A row that rounds
    to zeros has e = 7 if it is exactly zero, else FINEST_WEIGHT_EXP (``prior.context_integer.compact_state``
    stores the latter so that it comes back).
    """
    _, p = np.frexp(np.abs(w).max(axis=1))  # max |w| of a row < 2^p
    e = np.minimum(7 - p, FINEST_WEIGHT_EXP).astype(np.int64)  # max |w| 2^e < 2^7: rounds to at most 128
    wq = np.rint(np.ldexp(w, e[:, None]))  # scaling by 2^e is exact, so only the rounding changes values
    wq = np.clip(wq, -WEIGHT_MAX, WEIGHT_MAX)  # 128 (from 127.5 and above) -> 127
    return wq.astype(np.int64), e


def quantize_linear(w: np.ndarray, bias, in_frac: int, out_frac, in_range: tuple[int, int], what: str) -> IntLinear:
    """An ``IntLinear`` from float64 weights (out, in) whose inputs are integers in ``in_range`` (2^-in_frac units).

    Args:
        bias: (out,) float64 or None. out_frac: the output's frac, one for all rows or (out,) int64.

    Raises:
        ValueError: a product that not even a float64 GEMM could carry exactly.
    """
    wq, e = row_quantize(w)
    bq = None if bias is None else torch.from_numpy(np.rint(np.ldexp(bias, in_frac + e)).astype(np.int64))
    shift = torch.from_numpy(in_frac + e - np.asarray(out_frac, dtype=np.int64))
    lin = IntLinear(torch.from_numpy(wq), shift, bq, in_range)
    if lin.sum_bound() > F64_EXACT:
        raise ValueError(f"{what}: a product could exceed 2^53, which no float GEMM carries exactly")
    biggest = lin.sum_bound() + (int(bq.abs().max()) if bq is not None else 0)
    if biggest << max(0, -int(shift.min())) > 2**62:  # the accumulator, biased and shifted, stays an int64
        raise ValueError(f"{what}: weights or biases too large for the integer prior")
    return lin


@dataclass
class IntLayer:
    """One Transformer layer: attention (q, k, v, out) then feed-forward (ff1, GELU, ff2); LayerNorm gains folded."""

    qkv: IntLinear
    out: IntLinear
    ff1: IntLinear
    ff2: IntLinear


@dataclass
class IntegerPrior:
    """The integer network derived from a TokenPrior (``from_float``); see the module docstring.

    Attributes:
        config: the float prior's config.
        token_emb: (V, D) int64 token (and start token) embeddings in 2^-RES_FRAC units.
        embeds: level and edge embeddings (name -> (n, D) int64), as ``TokenPrior``'s.
        layers: the Transformer layers.
        to_logits: the final projection (final LayerNorm gain folded in).
        theta: (dim_head / 4,) int64 rotary frequencies (``rotary_theta``).
        sqrt_dim: round(sqrt(D) * 2^SQRT_FRAC); ln_eps: LayerNorm's eps * D in (2^-RES_FRAC)^2 units.
    """

    config: PriorConfig
    token_emb: torch.Tensor
    embeds: dict[str, torch.Tensor]
    layers: list[IntLayer]
    to_logits: IntLinear
    theta: torch.Tensor
    sqrt_dim: int
    ln_eps: int

    @classmethod
    def from_float(cls, prior: TokenPrior) -> "IntegerPrior":
        """Derive the integer network from a float prior, deterministically (the same integers on any machine).

        Raises:
            ValueError: a config or weights outside what the integer design can compute exactly.
        """
        c = prior.config
        dim_head = c.dim // c.heads
        if max(c.dim, c.dim * c.ff_mult, c.context) > MAX_DIM:
            raise ValueError(f"the integer prior supports dim, dim * ff_mult and context up to {MAX_DIM}")

        def f64(t: torch.Tensor) -> np.ndarray:
            return t.detach().to("cpu", torch.float32).double().numpy()

        def gain(norm) -> np.ndarray:  # prior.transformer.LayerNorm: ln(x) * (1 + gamma)
            return f64(norm.gamma) + 1.0

        def embed(w: torch.Tensor) -> torch.Tensor:  # clipped: the sum of six tables stays far inside int64
            return torch.from_numpy(np.clip(np.rint(np.ldexp(f64(w), RES_FRAC)), -RES_MAX, RES_MAX).astype(np.int64))

        # q, k, v rows: queries carry attention's 1 / sqrt(dim_head), so scores come out in 2^-(Q + KV) nats
        qkv_frac = np.repeat(np.array([Q_FRAC, KV_FRAC, KV_FRAC]), c.dim)
        q_scale = np.repeat(np.array([1 / math.sqrt(dim_head), 1.0, 1.0]), c.dim)[:, None]
        norm, kv, hid = (-NORM_MAX, NORM_MAX), (-KV_MAX, KV_MAX), (int(gelu_table().min()), HID_MAX)
        net, layers, lin = prior.net, [], quantize_linear
        for i, (attn_block, ff_block) in enumerate(net.attn_layers.blocks()):
            attn, ff = attn_block.branch, ff_block.branch.ff
            qkv = np.concatenate([f64(attn.to_q.weight), f64(attn.to_k.weight), f64(attn.to_v.weight)])
            qkv = qkv * q_scale * gain(attn_block.norm)
            w1, w2 = ff[0][0], ff[2]
            ff1 = f64(w1.weight) * gain(ff_block.norm)
            layers.append(
                IntLayer(
                    qkv=lin(qkv, None, NORM_FRAC, qkv_frac, norm, f"layer {i} qkv"),
                    out=lin(f64(attn.to_out.weight), None, KV_FRAC, RES_FRAC, kv, f"layer {i} out"),
                    ff1=lin(ff1, f64(w1.bias), NORM_FRAC, HID_FRAC, norm, f"layer {i} ff1"),
                    ff2=lin(f64(w2.weight), f64(w2.bias), HID_FRAC, RES_FRAC, hid, f"layer {i} ff2"),
                )
            )
        to_logits = f64(net.to_logits.weight) * gain(net.attn_layers.final_norm)
        return cls(
            config=c,
            token_emb=embed(net.token_emb.emb.weight),
            embeds={name: embed(net.embeds[f"{name}_embed"].weight) for name in ("level", *EDGES)},
            layers=layers,
            to_logits=lin(to_logits, None, NORM_FRAC, LOGIT_FRAC, norm, "to_logits"),
            theta=torch.from_numpy(rotary_theta(c)),
            sqrt_dim=round(math.sqrt(c.dim) * (1 << SQRT_FRAC)),
            ln_eps=round(LN_EPS * c.dim * (1 << (2 * RES_FRAC))),
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every integer the network uses, by name: weights, constants and tables."""
        out = {"token_emb": self.token_emb, "theta": self.theta}
        out.update({f"embeds.{k}": v for k, v in self.embeds.items()})
        linears = [(f"layers.{i}.{n}", getattr(layer, n)) for i, layer in enumerate(self.layers) for n in vars(layer)]
        for name, lin in [*linears, ("to_logits", self.to_logits)]:
            out.update({f"{name}.weight": lin.weight, f"{name}.shift": lin.shift})
            if lin.bias is not None:
                out[f"{name}.bias"] = lin.bias
        out["constants"] = torch.tensor([self.sqrt_dim, self.ln_eps])
        cos, sin = trig_tables()
        tables = {"attn_exp": exp_table(ATTN_ONE), "prob_exp": exp_table(PROB_ONE), "gelu": gelu_table()}
        out.update({f"tables.{k}": torch.from_numpy(v) for k, v in {**tables, "cos": cos, "sin": sin}.items()})
        return out

    def hash(self) -> str:
        """Hex SHA-256 of ``VERSION``, the config and every integer of the network: what a file names."""
        h = hashlib.sha256()
        h.update(json.dumps({"integer_prior": VERSION, "config": config_to_dict(self.config)}, sort_keys=True).encode())
        for name, t in sorted(self.tensors().items()):
            h.update(f"{name}|{tuple(t.shape)}".encode())
            h.update(np.ascontiguousarray(t.numpy(), dtype="<i8").tobytes())
        return h.hexdigest()


def frequencies(logits: torch.Tensor, total_bits: int = FREQ_BITS) -> torch.Tensor:
    """Integer range-coder frequencies from integer logits: exact, so the same on every machine.

    Args:
        logits: (B, K) int64 in 2^-LOGIT_FRAC nats (``IntegerStepDecoder.step``), K < 2^(total_bits - 4).

    Returns:
        (B, K) int64 frequencies >= 1 summing to 2^total_bits in every row: each symbol gets
        floor(e * (2^total_bits - K) / sum(e)) + 1 units with e = round(2^30 exp(logit - max)) from a table; the
        units left over go to the most probable symbol (the first one on ties).
    """
    table = torch.from_numpy(exp_table(PROB_ONE)).to(logits.device)
    idx = (logits.amax(dim=1, keepdim=True) - logits).clamp(max=len(table) - 1)
    e = table.index_select(0, idx.reshape(-1)).view(idx.shape)
    total, K = 1 << total_bits, logits.shape[1]
    freq = _floor_div(e * (total - K), e.sum(dim=1, keepdim=True)) + 1
    rows = torch.arange(len(freq), device=freq.device)
    freq[rows, logits.argmax(dim=1)] += total - freq.sum(dim=1)
    return freq


def _floor_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """floor(a / b) for int64 0 <= a < 2^53, 0 < b < 2^53 (broadcast), exactly: a float64 quotient (a and b are
    exact in float64; the rounded quotient is off by at most one) corrected with integer remainders. Several times
    faster than int64 division."""
    q = torch.floor(a.double() / b.double()).long()
    r = a - q * b
    return q - (r < 0).long() + (r >= b).long()
