"""The context model (``prior.context``) in exact integer arithmetic: the ``context-1`` coder's network.

Like the integer Transformer prior (``prior.integer``, whose building blocks this reuses), the logits are a
function of the tokens alone, the same on every machine, kernel choice, thread count and device:

    quantity                       frac  |int| <=  computed by
    embeddings, known masks          6   2^12      tables rounded and clipped; a known mask is 2^6
    activations (after each conv)    6   2^12      rounded shifts of exact accumulators; ReLU; clamped
    weights, per output row         e_j  127       ``prior.integer.quantize_linear``
    logits                           8   2^24      rounded shift (in float64, exactly); clamped
    frequencies                      -   2^20 sum  ``frequencies``: a 2^16 exp table, exact float64 arithmetic

Convolutions run as matrix products over unfolded windows (``torch.nn.functional.unfold`` moves values, it does
not compute) in float64 GEMMs whose every partial sum is an exact integer below 2^53 (checked when the network is
derived), so any blocking or summation order gives the same integers; never float32, whose GEMMs a process may
switch to bf16 or TF32 (``prior.integer``, "Exactness"). Activations are int64; the heads' outputs and the
frequencies are float64 holding integers, every operation on them exact (bounded in ``from_float`` and
``frequencies``).
"""

import functools
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from codec.store.rundir import EXP2_SUFFIX, model_state
from prior.context import ContextConfig, ContextPrior, context_config_to_dict, pad_levels, pass_masks
from prior.integer import (
    F64_EXACT,
    FINEST_WEIGHT_EXP,
    FREQ_BITS,
    LOGIT_FRAC,
    LOGIT_MAX,
    IntLinear,
    exp_table,
    quantize_linear,
    row_quantize,
)
from prior.integer_forward import _Linear

VERSION = 1  # of the integer context design: part of the hash
ACT_FRAC, ACT_MAX = 6, 2**12  # embeddings, masks and activations
CONV_BAND_BYTES = 1 << 20  # unfolded windows per step of a convolution (speed only)
PROB_ONE = 2**16  # the frequency table's value at the most probable symbol (see ``frequencies``)


def embed_units(w: np.ndarray) -> np.ndarray:
    """Float64 embeddings -> int64 in 2^-ACT_FRAC units, clamped to +-ACT_MAX (idempotent on its own output)."""
    return np.clip(np.rint(np.ldexp(w, ACT_FRAC)), -ACT_MAX, ACT_MAX).astype(np.int64)


@dataclass
class IntegerContext:
    """The integer network derived from a ContextPrior (``from_float``).

    Attributes:
        config: the float model's config.
        embed: (L, K, E) int64 in 2^-ACT_FRAC units.
        conv_in: the first convolution as a linear map of unfolded windows (hidden, C kh kw), without bias;
            pass_bias: (P, hidden) int64, its bias plus each pass's, in the accumulator's units.
        convs, proj: the residual convolutions and the 1 x 1 projection.
        heads: one linear map per level, (K, hidden), to logits in 2^-LOGIT_FRAC nats.
    """

    config: ContextConfig
    embed: torch.Tensor
    conv_in: IntLinear
    pass_bias: torch.Tensor
    convs: list[IntLinear]
    proj: IntLinear
    heads: list[IntLinear]

    @classmethod
    def from_float(cls, model: ContextPrior) -> "IntegerContext":
        """Derive the integer network, deterministically (rounding of exactly scaled weights only).

        Raises:
            ValueError: weights that no float64 GEMM could carry exactly.
        """
        c = model.config

        def f64(t: torch.Tensor) -> np.ndarray:
            return t.detach().to("cpu", torch.float32).double().numpy()

        act = (0, ACT_MAX)  # inputs of every layer after the first are ReLU outputs
        emb = embed_units(f64(model.embed))
        w_in = f64(model.conv_in.weight).reshape(c.hidden, -1)
        conv_in = quantize_linear(w_in, None, ACT_FRAC, ACT_FRAC, (-ACT_MAX, ACT_MAX), "conv_in")
        scale = np.ldexp(1.0, (conv_in.shift.numpy() + ACT_FRAC))  # accumulator units per unit, by row
        bias = f64(model.conv_in.bias)[None] + f64(model.pass_bias)  # (P, hidden)
        pass_bias = torch.from_numpy(np.rint(bias * scale[None]).astype(np.int64))
        convs = [
            quantize_linear(f64(m.weight).reshape(c.hidden, -1), f64(m.bias), ACT_FRAC, ACT_FRAC, act, f"convs.{i}")
            for i, m in enumerate(model.convs)
        ]
        proj = quantize_linear(
            f64(model.proj.weight).reshape(c.hidden, -1), f64(model.proj.bias), ACT_FRAC, ACT_FRAC, act, "proj"
        )
        heads = [
            quantize_linear(f64(model.head[lv]), f64(model.head_bias[lv]), ACT_FRAC, LOGIT_FRAC, act, f"heads.{lv}")
            for lv in range(c.levels)
        ]
        if int(pass_bias.abs().max()) > 2**52:
            raise ValueError("conv_in: biases too large for the integer context model")
        for i, head in enumerate(
            heads
        ):  # the heads finish in float64 (``IntegerContextNet.head_logits``): every value exact
            biggest = head.sum_bound() + int(head.bias.abs().max()) + 1
            if biggest << max(0, -int(head.shift.min())) >= F64_EXACT:
                raise ValueError(f"heads.{i}: weights or biases too large for the integer context model")
        return cls(c, torch.from_numpy(emb), conv_in, pass_bias, convs, proj, heads)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every integer the network uses, by name."""
        out = {"embed": self.embed, "pass_bias": self.pass_bias, "prob_exp": torch.from_numpy(exp_table(PROB_ONE))}
        linears = [("conv_in", self.conv_in), ("proj", self.proj)]
        linears += [(f"convs.{i}", m) for i, m in enumerate(self.convs)]
        linears += [(f"heads.{i}", m) for i, m in enumerate(self.heads)]
        for name, lin in linears:
            out.update({f"{name}.weight": lin.weight, f"{name}.shift": lin.shift})
            if lin.bias is not None:
                out[f"{name}.bias"] = lin.bias
        return out

    def hash(self) -> str:
        """Hex SHA-256 of ``VERSION``, the config and every integer of the network: what a file names."""
        h = hashlib.sha256()
        h.update(
            json.dumps(
                {"integer_context": VERSION, "config": context_config_to_dict(self.config)}, sort_keys=True
            ).encode()
        )
        for name, t in sorted(self.tensors().items()):
            h.update(f"{name}|{tuple(t.shape)}".encode())
            h.update(np.ascontiguousarray(t.numpy(), dtype="<i8").tobytes())
        return h.hexdigest()


def compact_state(model: ContextPrior) -> dict[str, torch.Tensor]:
    """The model's tensors as ``IntegerContext.from_float`` reads them, for storing (``save_context(compact=True)``):
    each weight matrix as int8 rows with power-of-two scales (``row_quantize``: ``X`` and ``X.exp2``, as
    ``codec.store.rundir`` loads them), the embeddings as int16 in 2^-ACT_FRAC units, biases unchanged. Loaded back,
    they derive exactly the same ``IntegerContext`` (``row_quantize`` is idempotent; the embeddings are already on
    their grid), in about half the bytes of float16."""
    state = model_state(model)
    rows = {"conv_in.weight", "proj.weight", "head"} | {f"convs.{i}.weight" for i in range(len(model.convs))}
    for name in rows:  # rows: output channels of convolutions (over inputs and kernel), (level, code) of heads
        w = state[name]
        lead = 2 if name == "head" else 1
        q, e = row_quantize(w.double().reshape(-1, int(np.prod(w.shape[lead:]))).numpy())
        tiny = (q == 0).all(axis=1) & (e == FINEST_WEIGHT_EXP)  # nonzero, but below 2^-31: rounds to zeros
        q[tiny, 0], e[tiny] = 1, FINEST_WEIGHT_EXP + 2  # 2^-32: again below 2^-31 with the same exponent
        state[name] = torch.from_numpy(q.astype(np.int8)).reshape(w.shape)
        state[name + EXP2_SUFFIX] = torch.from_numpy(e.astype(np.int8)).reshape(*w.shape[:lead], *[1] * (w.ndim - lead))
    emb = embed_units(state["embed"].double().numpy())
    state["embed"] = torch.from_numpy(emb.astype(np.int16))
    state["embed" + EXP2_SUFFIX] = torch.full((1,) * emb.ndim, ACT_FRAC, dtype=torch.int8)
    return state


def frequencies(logits: torch.Tensor, total_bits: int = FREQ_BITS) -> torch.Tensor:
    """Range-coder frequencies of the ``context-1`` coder from integer logits (n, K) (int64, or float64 holding
    integers) in 2^-LOGIT_FRAC nats: (n, K) float64 holding integers >= 1 that sum to 2^total_bits in every row.

    Each symbol gets floor(e (2^total_bits - K) / sum e) + 1 units with e = round(2^16 exp(logit - max)) from a
    table; the units left over go to the most probable symbol (the first on ties). Like ``prior.integer``'s, but
    with a 2^16 table: then sum e < 2^33 (K <= 2^16), so the float64 quotient is never rounded across an integer
    (its error is below 2^-33, an integer quotient's distance from a non-integer one at least 1 / sum e) and every
    step is exact in float64, twice as fast as int64 arithmetic and with no correction.
    """
    table = _prob_table(str(logits.device))
    top, first = logits.max(dim=1, keepdim=True)  # the maximum and its first position (ties: the first)
    idx = (top - logits).clamp_(max=len(table) - 1).long()
    e = table.index_select(0, idx.reshape(-1)).view(idx.shape)
    total, K = 1 << total_bits, logits.shape[1]
    s = e.sum(dim=1, keepdim=True)
    q = e.mul_(total - K).div_(s).floor_().add_(1)
    rows = torch.arange(len(q), device=q.device)
    q[rows, first[:, 0]] += total - q.sum(dim=1)
    return q


@functools.cache
def _prob_table(device: str) -> torch.Tensor:
    return torch.from_numpy(exp_table(PROB_ONE)).to(device, torch.float64)


def _accumulate(weight: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Exact integer accumulators (..., out) int64 of a (..., in) integers times ``weight`` (in, out), a float64 GEMM
    whose every partial sum is an exact integer (bounded by ``quantize_linear``; a block of rows of a layer's weight
    has partial sums no larger than the whole layer's)."""
    return torch.matmul(a.to(weight.dtype), weight).long()


def _finish(lin: _Linear, acc: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Accumulators (..., out) plus bias (and an optional extra bias in accumulator units), shifted and rounded to
    the output's units."""
    if extra is not None:
        acc = acc + extra
    if lin.left is not None:
        return (((acc + lin.bias) << lin.left) + lin.half) >> lin.right
    return (acc + lin.bias) >> lin.right


def _apply(lin: _Linear, a: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """``lin`` on (..., in) int64 with an optional extra bias (..., out) in accumulator units; (..., out) int64."""
    return _finish(lin, _accumulate(lin.weight, a), extra)


class IntegerContextNet:
    """An ``IntegerContext`` ready to run on a device: ``pass_logits`` for the coder."""

    def __init__(self, icontext: IntegerContext, device=None):
        self.icontext, self.config = icontext, icontext.config
        dev = self.device = torch.device(device or "cpu")
        self.embed = icontext.embed.to(dev)
        self.conv_in = _Linear(icontext.conv_in, dev)
        self.pass_bias = icontext.pass_bias.to(dev)
        self.convs = [_Linear(m, dev) for m in icontext.convs]
        self.proj = _Linear(icontext.proj, dev)
        self.heads = [_Linear(m, dev) for m in icontext.heads]
        self.head_finish = []  # (bias + rounding half, 2^-shift) per level, float64
        for m in icontext.heads:
            half = torch.where(m.shift > 0, torch.ones_like(m.shift) << (m.shift - 1).clamp(min=0), 0)
            scale = torch.pow(2.0, -m.shift.double())
            self.head_finish.append(((m.bias + half).double().to(dev), scale.to(dev)))
        kh, kw = self.config.kernel_hw
        self.kernel, self.padding = (kh, kw), (kh // 2, kw // 2)

    def _conv_acc(self, weight: torch.Tensor, x: torch.Tensor, post=None) -> torch.Tensor:
        """(C, H, W) int64 -> exact accumulators (H, W, out) int64 of ``weight`` (C kh kw, out) over every window of
        the zero-padded grid, in bands of rows whose unfolded windows stay near CONV_BAND_BYTES (cache sized:
        several times faster than one unfold of the whole grid; the integers are the same). ``post(band, acc)``,
        if given, maps each band's accumulators (rows ``band``) to what is stored, while they are in cache."""
        C, H, W = x.shape
        (kh, kw), (ph, pw) = self.kernel, self.padding
        xp = F.pad(x.to(weight.dtype), (pw, pw, ph, ph))[None]
        out = torch.empty(H, W, weight.shape[1], dtype=torch.int64, device=x.device)
        band = max(1, CONV_BAND_BYTES // max(1, W * C * kh * kw * 8))
        for r in range(0, H, band):
            rows = min(band, H - r)
            cols = F.unfold(xp[:, :, r : r + rows + kh - 1], self.kernel)[0]  # (C kh kw, rows W): moves values only
            acc = _accumulate(weight, cols.t()).view(rows, W, -1)
            out[r : r + rows] = acc if post is None else post(slice(r, r + rows), acc)
        return out

    def _conv_at(self, lin: _Linear, x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """``lin`` over the windows of (C, H, W) int64 centred on the positions ``where`` (n,) (flat, raster):
        (n, out) int64, not clamped. Gathers just those windows."""
        C, H, W = x.shape
        (kh, kw), (ph, pw) = self.kernel, self.padding
        xp = F.pad(x.to(lin.dtype), (pw, pw, ph, ph)).reshape(C, -1)
        r, c = where // W, where % W
        di, dj = torch.meshgrid(torch.arange(kh, device=x.device), torch.arange(kw, device=x.device), indexing="ij")
        idx = (r[:, None] + di.reshape(1, -1)) * (W + 2 * pw) + c[:, None] + dj.reshape(1, -1)  # (n, kh kw)
        cols = xp[:, idx.reshape(-1)].view(C, len(where), kh * kw).permute(1, 0, 2).reshape(len(where), -1)
        return _apply(lin, cols)

    def inputs(self, tokens: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """(B, L, H, W) tokens and known masks -> (B, L (E + 1), H, W) int64 (``ContextPrior.inputs``)."""
        B, L, H, W = tokens.shape
        K = self.config.codebook_size
        idx = tokens.clamp(0, K - 1).transpose(0, 1).reshape(L, -1)  # (L, B H W)
        emb = torch.stack([self.embed[j].index_select(0, idx[j]) for j in range(L)])  # (L, B H W, E)
        emb = emb.view(L, B, H, W, -1).transpose(0, 1) * known[..., None]
        x = torch.cat([emb, known[..., None].long() << ACT_FRAC], dim=-1)
        return x.permute(0, 1, 4, 2, 3).reshape(B, -1, H, W)

    def head_logits(self, feats: torch.Tensor, level: int) -> torch.Tensor:
        """(n, hidden) int64 features -> (n, K) float64 holding the integer logits (2^-LOGIT_FRAC nats): the
        accumulators plus the bias (and rounding half), scaled by the row's power of two and floored, all exact in
        float64 (bounded in ``IntegerContext.from_float``): ``_apply``'s integers without int64 passes."""
        bias, scale = self.head_finish[level]
        acc = torch.matmul(feats.to(torch.float64), self.heads[level].weight.to(torch.float64))
        return acc.add_(bias).mul_(scale).floor_().clamp_(-LOGIT_MAX, LOGIT_MAX)

    def pass_logits(self, tokens, inside, rows, cols, level: int, group: int) -> torch.Tensor:
        """(n, K) int64 logits of one pass's targets over a window (L, H, W), raster order (``ContextPrior``'s
        ``pass_logits`` in integers)."""
        return PassRunner(self, tokens, inside, rows, cols).run(level, group)[0].long()


class PassRunner:
    """The passes over one window, sharing work between them; each pass's logits equal ``pass_logits``'s.

    The first convolution is linear in its input, whose channels come in one block per level, so its exact
    accumulators are the sum of one partial product per level: the lower levels' sum is kept from pass to pass
    (updated once per level) and only the coded level's block is computed anew. The last convolution, the
    projection and the head run at the pass's targets only.

    Use: ``runner.tokens`` (L, H, W) holds the window's tokens (the decoder writes each pass's tokens there before
    asking for the next pass); ``runner.run(level, group)`` in coding order.
    """

    def __init__(self, net: IntegerContextNet, tokens, inside, rows, cols):
        self.net, c = net, net.config
        self.tokens, self.inside = pad_levels(tokens, inside, c.levels)
        self.rows, self.cols = rows, cols
        kk = self.net.kernel[0] * self.net.kernel[1]
        block = (c.embed + 1) * kk
        self.blocks = [net.conv_in.weight[j * block : (j + 1) * block] for j in range(c.levels)]
        self.lower, self.lower_levels = None, 0  # accumulators of levels < lower_levels, fully known

    def _level_input(self, level: int, known: torch.Tensor) -> torch.Tensor:
        """(E + 1, H, W) int64: level's embeddings where known, and its known mask (``ContextPrior.inputs``)."""
        K = self.net.config.codebook_size
        t = self.tokens[level]
        emb = self.net.embed[level].index_select(0, t.clamp(0, K - 1).reshape(-1)).view(*t.shape, -1)
        x = torch.cat([emb * known[..., None], known[..., None].long() << ACT_FRAC], dim=-1)
        return x.permute(2, 0, 1)

    def run(self, level: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (n, K) float64 holding the integer logits, in raster order of the targets; targets (H, W) bool)
        of one pass."""
        net, c = self.net, self.net.config
        known, target = pass_masks(c, self.rows, self.cols, self.inside, level, group)
        if not bool(target.any()):
            return torch.zeros(0, c.codebook_size, dtype=torch.float64, device=target.device), target
        if self.lower is None or self.lower_levels > level:
            self.lower, self.lower_levels = 0, 0
        while self.lower_levels < level:  # levels below are complete by now: add their blocks once
            j = self.lower_levels
            self.lower = self.lower + net._conv_acc(self.blocks[j], self._level_input(j, self.inside[j]))
            self.lower_levels += 1
        extra, lower = net.pass_bias[c.pass_index(level, group)], self.lower

        def first(band, acc):
            acc = acc if isinstance(lower, int) else acc + lower[band]
            return _finish(net.conv_in, acc, extra).clamp_(0, ACT_MAX)

        h = net._conv_acc(self.blocks[level], self._level_input(level, known[level]), first).permute(2, 0, 1)
        where = target.reshape(-1).nonzero()[:, 0]
        for i, lin in enumerate(net.convs):
            if i + 1 < len(net.convs):
                hc = h.permute(1, 2, 0)

                def residual(band, acc, lin=lin, hc=hc):
                    return (hc[band] + _finish(lin, acc).clamp_(0, ACT_MAX)).clamp_(max=ACT_MAX)

                h = net._conv_acc(lin.weight, h, residual).permute(2, 0, 1)
            else:  # the last one at the targets only
                h = (h.reshape(h.shape[0], -1)[:, where].t() + net._conv_at(lin, h, where).clamp_(0, ACT_MAX)).clamp_(
                    max=ACT_MAX
                )
        if not net.convs:
            h = h.reshape(h.shape[0], -1)[:, where].t()
        return net.head_logits(_apply(net.proj, h).clamp_(0, ACT_MAX), level), target
