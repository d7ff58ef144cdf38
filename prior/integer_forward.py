"""The integer prior's computation: token by token for B sequences (``IntegerStepDecoder``, the range coder's
path), or a whole window at once (``integer_window_logits``, teacher forcing). Both give the same int64 logits
(exact arithmetic: no rounding differs between them), the same on every machine, thread count and device.

The number formats, bounds and the reasons each step is exact are in ``prior.integer``. Here every tensor is
int64 except the float64 operands of matrix products, which hold integers small enough to be exact.
"""

import math

import torch

from prior.integer import (
    ATTN_DIGIT,
    ATTN_ONE,
    EXP_FRAC,
    F64_EXACT,
    GELU_RANGE,
    GEMM_DTYPE,
    HID_FRAC,
    HID_MAX,
    KV_FRAC,
    KV_MAX,
    LOGIT_MAX,
    NORM_FRAC,
    NORM_MAX,
    Q_FRAC,
    Q_MAX,
    RES_MAX,
    SQRT_FRAC,
    TRIG_BITS,
    TRIG_FRAC,
    TURN_BITS,
    IntegerPrior,
    IntLinear,
    exp_table,
    gelu_table,
    trig_tables,
)
from prior.layout import flat_positions
from prior.transformer import EDGES

SCORE_SHIFT = Q_FRAC + KV_FRAC - EXP_FRAC  # attention scores (2^-(Q + KV) nats) -> exp table index (2^-EXP nats)


def round_div(n: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """round(n / d) (halves up) for integers, d > 0."""
    return torch.div(2 * n + d, 2 * d, rounding_mode="floor")


def round_shift(x: torch.Tensor, s: int) -> torch.Tensor:
    """round(x / 2^s) (halves up), s >= 1."""
    return (x + (1 << (s - 1))) >> s


def lookup(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table[idx]`` for int64 idx of any shape (index_select: many times faster than advanced indexing)."""
    return table.index_select(0, idx.reshape(-1)).view(*idx.shape, *table.shape[1:])


def isqrt(v: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(v)) for int64 v >= 0, exactly: a float64 estimate (off by at most one) corrected in integers."""
    r = torch.sqrt(v.double()).long()  # truncation: floor
    r = torch.where(r * r > v, r - 1, r)
    return torch.where((r + 1) * (r + 1) <= v, r + 1, r)


class _Linear:
    """An ``IntLinear`` on a device: its weights in float64 (``GEMM_DTYPE``, exact for its GEMM), and shifts."""

    def __init__(self, lin: IntLinear, device):
        self.dtype = GEMM_DTYPE
        self.weight = lin.weight.to(device, self.dtype).t().contiguous()  # (in, out)
        shift = lin.shift.to(device)
        bias = lin.bias.to(device) if lin.bias is not None else torch.zeros_like(shift)
        self.right, left = shift.clamp(min=0), (-shift).clamp(min=0)
        half = torch.where(self.right > 0, 1 << (self.right - 1).clamp(min=0), 0)
        if bool(left.any()):  # a row shifted left has no rounding: (acc + bias) << left
            self.bias, self.left, self.half = bias, left, half
        else:
            self.bias, self.left, self.half = bias + half, None, None

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """(..., in) int64 -> (..., out) int64 in the output's units (not clamped)."""
        acc = torch.matmul(a.to(self.dtype), self.weight).long()  # exact: every partial sum is a small integer
        if self.left is not None:
            return (((acc + self.bias) << self.left) + self.half) >> self.right
        return (acc + self.bias) >> self.right  # the bias holds the rounding half


class IntegerNet:
    """An ``IntegerPrior`` on a device, with the operations both paths share."""

    def __init__(self, iprior: IntegerPrior, device=None):
        self.iprior, c = iprior, iprior.config
        self.device = torch.device(device or "cpu")
        dev = self.device
        self.heads, self.dim_head, self.context = c.heads, c.dim // c.heads, c.context
        self.edge = c.edge_positions - 1
        self.token_emb = iprior.token_emb.to(dev)
        self.embeds = {k: v.to(dev) for k, v in iprior.embeds.items()}
        self.layers = [{n: _Linear(getattr(layer, n), dev) for n in vars(layer)} for layer in iprior.layers]
        self.to_logits = _Linear(iprior.to_logits, dev)
        self.theta = iprior.theta.to(dev)
        cos, sin = (torch.from_numpy(t) for t in trig_tables())
        self.cos_sin, self.sin_cos = torch.stack([cos, sin], -1).to(dev), torch.stack([-sin, cos], -1).to(dev)
        self.qkv_max = torch.tensor([Q_MAX, KV_MAX, KV_MAX], device=dev)[:, None, None]
        self.gelu_lut = torch.from_numpy(gelu_table()).to(dev)
        # q.k (|q| <= Q_MAX, |k| <= KV_MAX) and digits of e times [v, 1] (<= 2^7 each) are exact float64 GEMMs
        if max(self.dim_head * Q_MAX * KV_MAX, self.context * (ATTN_ONE >> ATTN_DIGIT) * KV_MAX) > F64_EXACT:
            raise ValueError("attention too wide or too long for exact float64 products")
        self.key_dtype = self.value_dtype = GEMM_DTYPE
        e = torch.from_numpy(exp_table(ATTN_ONE))
        self.attn_hi = (e >> ATTN_DIGIT).to(dev, self.value_dtype)
        self.attn_lo = (e & ((1 << ATTN_DIGIT) - 1)).to(dev, self.value_dtype)

    def embed(self, inputs: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(...) input ids and (..., 5) positions -> (..., D) residual stream."""
        x = lookup(self.token_emb, inputs) + lookup(self.embeds["level"], pos[..., 2])
        for name, i in zip(EDGES, (0, 1, 3, 4)):
            x = x + lookup(self.embeds[name], pos[..., i].clamp(max=self.edge))
        return x.clamp(-RES_MAX, RES_MAX)

    def trig(self, pos: torch.Tensor) -> torch.Tensor:
        """(..., 5) positions -> (2, ..., dim_head / 2, 2) int64 in 2^-TRIG_FRAC: (cos, sin) and (-sin, cos) of
        the rotary angle of each pair of dimensions (``rotate``)."""
        phase = (pos[..., :2, None] * self.theta).flatten(-2)  # row angles, then column angles
        step = TURN_BITS - TRIG_BITS
        idx = ((phase + (1 << (step - 1))) >> step) & ((1 << TRIG_BITS) - 1)
        return torch.stack([lookup(self.cos_sin, idx), lookup(self.sin_cos, idx)])

    def layer_norm(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) residual stream -> (x - mean) / sqrt(var + eps) in 2^-NORM_FRAC units (gain folded downstream)."""
        D = x.shape[-1]
        c = x - torch.div(x.sum(dim=-1, keepdim=True) + D // 2, D, rounding_mode="floor")  # the mean, rounded
        r = isqrt((c * c).sum(dim=-1, keepdim=True) + self.iprior.ln_eps)  # sqrt(D (var + eps)), residual units
        den = r << (SQRT_FRAC - NORM_FRAC)  # round(c sqrt(D) / r) = floor((2 c sqrt(D) + den) / (2 den))
        a = torch.div(c * (2 * self.iprior.sqrt_dim) + den, den << 1, rounding_mode="floor")
        return a.clamp(-NORM_MAX, NORM_MAX)

    def qkv(self, layer: dict, x: torch.Tensor, trig: torch.Tensor):
        """(..., D) residual stream -> rotated queries and keys (..., 2, H, dh) and values (..., H, dh), int64.

        trig: ``trig`` of the positions, shaped to broadcast against (..., H, dh / 2, 2).
        """
        qkv = layer["qkv"](self.layer_norm(x)).unflatten(-1, (3, self.heads, self.dim_head))
        qkv = qkv.clamp(-self.qkv_max, self.qkv_max)  # queries to Q_MAX, keys and values to KV_MAX
        return self.rotate(qkv[..., :2, :, :], trig[:, ..., None, :, :, :], self.qkv_max[:2]), qkv[..., 2, :, :]

    @staticmethod
    def rotate(t: torch.Tensor, trig: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """Rotary embedding: each pair (2i, 2i + 1) of (..., dh) turned by its angle; ``trig`` as from ``trig``."""
        pairs = t.unflatten(-1, (-1, 2))  # (..., dh / 2, 2)
        turned = pairs[..., :1] * trig[0] + pairs[..., 1:] * trig[1]  # (e cos - o sin, e sin + o cos)
        return round_shift(turned, TRIG_FRAC).flatten(-2).clamp(-bound, bound)

    def attend(self, q: torch.Tensor, keys_t: torch.Tensor, values: torch.Tensor, mask=None) -> torch.Tensor:
        """Softmax attention of q (..., n, dh) int64 over keys_t (..., dh, m) (keys transposed: the product runs
        twice as fast) and values with a column of ones (..., m, dh + 1), both float holding integers
        (``key_dtype``, ``value_dtype``).

        mask: (n, m) bool, True where a query may see a key; None: all. Returns (..., n, dh) int64.
        """
        scores = torch.matmul(q.to(self.key_dtype), keys_t)  # exact integers, 2^-(Q + KV) nats
        if mask is not None:
            scores.masked_fill_(~mask, -math.inf)
        # idx = min(round(d / 2^SCORE_SHIFT), end) with d = max - score, in float64: exact while d < 2^53,
        # and any larger d (rounded or not, or infinite where masked) lands on the end, whose weight is 0
        d = torch.sub(scores.amax(dim=-1, keepdim=True), scores, out=scores)
        d.add_(1 << (SCORE_SHIFT - 1)).mul_(2.0**-SCORE_SHIFT).floor_().clamp_(max=len(self.attn_hi) - 1)
        idx = d.long()
        n = q.shape[-2]
        # the weights e as two digits, e = hi 2^7 + lo: rows (..., 2n, m)
        digits = torch.cat([lookup(self.attn_hi, idx), lookup(self.attn_lo, idx)], dim=-2)
        acc = torch.matmul(digits, values).long()  # exact: (..., 2n, dh + 1)
        acc = (acc[..., :n, :] << ATTN_DIGIT) + acc[..., n:, :]  # sum e v, and sum e in the last column
        return round_div(acc[..., :-1], acc[..., -1:])

    def gelu(self, h: torch.Tensor) -> torch.Tensor:
        r = GELU_RANGE << HID_FRAC
        return torch.where(h > r, h, lookup(self.gelu_lut, h.clamp(-r, r) + r))

    def feed_forward(self, layer: dict, x: torch.Tensor) -> torch.Tensor:
        h = layer["ff1"](self.layer_norm(x)).clamp(-HID_MAX, HID_MAX)
        return (x + layer["ff2"](self.gelu(h))).clamp(-RES_MAX, RES_MAX)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_logits(self.layer_norm(x)).clamp(-LOGIT_MAX, LOGIT_MAX)


class IntegerStepDecoder:
    """Token-by-token integer logits for B sequences of one grid layout: ``prior.incremental.StepDecoder``'s
    interface and ring buffer, in integers.

    Args:
        net: an ``IntegerNet`` (or an ``IntegerPrior``, put on ``device``).
        layout: (L, H, W) of the item's token grid (``TokenPrior.layout(shape)``).
        starts: (B,) int64 flat position of each sequence's first token.

    Use: ``logits = dec.step(inputs)`` with (B,) int64 inputs: the start id for a sequence's first step, then the
    token whose logits the previous step gave. Step s returns (B, K) int64 logits (2^-LOGIT_FRAC nats) of the
    tokens at flat positions ``starts + s``.
    """

    def __init__(self, net, layout: tuple[int, int, int], starts: torch.Tensor, device=None):
        self.net = net if isinstance(net, IntegerNet) else IntegerNet(net, device)
        self.layout = tuple(int(v) for v in layout)
        self.starts = torch.as_tensor(starts, dtype=torch.int64, device=self.net.device).reshape(-1)
        self.batch, self.step_index = self.starts.numel(), 0
        n = self.net
        shape = (len(n.layers), self.batch, n.heads)  # then a ring of context slots per layer: keys transposed
        self.keys_t = torch.zeros(shape + (n.dim_head, n.context), dtype=n.key_dtype, device=n.device)
        self.values = torch.ones(shape + (n.context, n.dim_head + 1), dtype=n.value_dtype, device=n.device)

    def step(self, inputs: torch.Tensor) -> torch.Tensor:
        """Feed (B,) input ids; returns (B, K) int64 logits of the next token of every sequence."""
        n, dh = self.net, self.net.dim_head
        last = self.layout[0] * self.layout[1] * self.layout[2] - 1  # a finished sequence repeats the last position
        pos = flat_positions(self.layout, (self.starts + self.step_index).clamp(max=last))  # (B, 5)
        x = n.embed(inputs.to(n.device, torch.int64), pos)
        trig = n.trig(pos)[:, :, None]  # (2, B, 1, dh / 2, 2): broadcast over heads
        slot, filled = self.step_index % n.context, min(self.step_index + 1, n.context)
        for i, layer in enumerate(n.layers):
            qk, v = n.qkv(layer, x, trig)  # (B, 2, H, dh), (B, H, dh)
            self.keys_t[i, :, :, :, slot] = qk[:, 1]
            self.values[i, :, :, slot, :dh] = v
            attn = n.attend(qk[:, 0, :, None], self.keys_t[i, ..., :filled], self.values[i, :, :, :filled])
            x = (x + layer["out"](attn.flatten(1))).clamp(-RES_MAX, RES_MAX)
            x = n.feed_forward(layer, x)
        self.step_index += 1
        return n.logits(x)


def integer_window_logits(net, layout, start, inputs: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Teacher forcing: the logits ``IntegerStepDecoder`` gives, for all n positions of B windows at once.

    Args:
        net: an ``IntegerNet`` or ``IntegerPrior``.
        layout: (L, H, W); start: flat position of the windows' first tokens: an int, or (B,) int64, one each.
        inputs: (B, n) int64 input ids: the start id, then tokens start .. start + n - 2.
        block: query positions per attention block (bounds memory).

    Returns:
        (B, n, K) int64 logits, equal to what ``IntegerStepDecoder`` returns step by step.
    """
    n = net if isinstance(net, IntegerNet) else IntegerNet(net)
    length = inputs.shape[1]
    starts = torch.as_tensor(start, dtype=torch.int64, device=n.device).reshape(-1, 1)  # (B or 1, 1)
    pos = flat_positions(tuple(layout), starts + torch.arange(length, device=n.device))  # (B or 1, n, 5)
    x = n.embed(inputs.to(n.device, torch.int64), pos)  # (B, n, D)
    trig = n.trig(pos)[:, :, :, None]  # (2, B or 1, n, 1, dh / 2, 2): broadcast over heads
    t = torch.arange(length, device=n.device)
    for layer in n.layers:
        qk, v = n.qkv(layer, x, trig)
        q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), v.transpose(1, 2)  # (B, H, n, dh)
        k = k.transpose(-1, -2).to(n.key_dtype).contiguous()  # (B, H, dh, n)
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1).to(n.value_dtype)
        out = torch.empty_like(q)
        for a in range(0, length, block):
            b, k0 = min(length, a + block), max(0, a - n.context + 1)
            i, j = t[a:b, None], t[None, k0:b]
            mask = (j <= i) & (j > i - n.context)  # the sliding window of the step decoder's ring
            out[:, :, a:b] = n.attend(q[:, :, a:b], k[..., k0:b], v[:, :, k0:b], mask)
        x = (x + layer["out"](out.transpose(1, 2).flatten(2))).clamp(-RES_MAX, RES_MAX)
        x = n.feed_forward(layer, x)
    return n.logits(x)
