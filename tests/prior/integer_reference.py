"""An independent reference of the integer prior (``prior.integer``): the arithmetic its docstring specifies, written
plainly in numpy int64, position by position, with integer matrix products (numpy's exact integer loops, no BLAS
and no float anywhere) and ``math.isqrt``. It shares only the integer parameters and tables with the real thing.
"""

import math

import numpy as np

from prior import integer as spec


def _np(t) -> np.ndarray:
    return t.numpy().astype(np.int64)


def requantize(acc: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Column j: acc * 2^-shift[j], rounded half up (a left shift when shift[j] <= 0)."""
    out = np.empty_like(acc)
    for j, s in enumerate(shift.tolist()):
        out[..., j] = acc[..., j] << -s if s <= 0 else (acc[..., j] + (1 << (s - 1))) >> s
    return out


def linear(a: np.ndarray, lin) -> np.ndarray:
    acc = a @ _np(lin.weight).T
    if lin.bias is not None:
        acc = acc + _np(lin.bias)
    return requantize(acc, _np(lin.shift))


def layer_norm(x: np.ndarray, ip) -> np.ndarray:
    """Rows of x (n, D) in 2^-12 -> normalised rows in 2^-5."""
    n, D = x.shape
    out = np.empty_like(x)
    for i in range(n):
        mean = (2 * int(x[i].sum()) + D) // (2 * D)
        c = x[i] - mean
        r = math.isqrt(int((c * c).sum()) + ip.ln_eps)
        den = r << (spec.SQRT_FRAC - spec.NORM_FRAC)
        out[i] = (2 * c * ip.sqrt_dim + den) // (2 * den)
    return np.clip(out, -spec.NORM_MAX, spec.NORM_MAX)


def rotate(t: np.ndarray, cos: np.ndarray, sin: np.ndarray, bound: int) -> np.ndarray:
    """Turn each pair (2j, 2j + 1) of t (dh,) by the angle whose cos, sin (dh / 2,) are given."""
    t = np.clip(t, -bound, bound)
    out = np.empty_like(t)
    half = 1 << (spec.TRIG_FRAC - 1)
    for j in range(len(t) // 2):
        e, o = int(t[2 * j]), int(t[2 * j + 1])
        out[2 * j] = (e * int(cos[j]) - o * int(sin[j]) + half) >> spec.TRIG_FRAC
        out[2 * j + 1] = (o * int(cos[j]) + e * int(sin[j]) + half) >> spec.TRIG_FRAC
    return np.clip(out, -bound, bound)


def window_logits(ip, layout, start: int, inputs: np.ndarray) -> np.ndarray:
    """Logits (n, K) int64 of flat positions start .. start + n - 1 given input ids (n,) (the start id first)."""
    c = ip.config
    L, _, W = layout
    H, dh, n = c.heads, c.dim // c.heads, len(inputs)
    cos_t, sin_t = (t.astype(np.int64) for t in spec.trig_tables())
    attn_exp, gelu = spec.exp_table(spec.ATTN_ONE), spec.gelu_table()
    theta = _np(ip.theta)
    flat = np.arange(start, start + n)
    level, cell = flat % L, flat // L
    row, col = cell // W, cell % W
    down, right = layout[1] - 1 - row, W - 1 - col
    edge = c.edge_positions - 1
    x = _np(ip.token_emb)[inputs] + _np(ip.embeds["level"])[level]
    for name, p in zip(("top", "left", "bottom", "right"), (row, col, down, right)):
        x = x + _np(ip.embeds[name])[np.minimum(p, edge)]
    x = np.clip(x, -spec.RES_MAX, spec.RES_MAX)
    step = spec.TURN_BITS - spec.TRIG_BITS
    cos, sin = np.empty((n, dh // 2), np.int64), np.empty((n, dh // 2), np.int64)
    for i in range(n):
        phase = np.concatenate([row[i] * theta, col[i] * theta])  # pair j < dh / 4 turns with the row
        idx = ((phase + (1 << (step - 1))) >> step) % (1 << spec.TRIG_BITS)
        cos[i], sin[i] = cos_t[idx], sin_t[idx]
    gelu_r = spec.GELU_RANGE << spec.HID_FRAC
    score_shift = spec.Q_FRAC + spec.KV_FRAC - spec.EXP_FRAC
    for layer in ip.layers:
        qkv = linear(layer_norm(x, ip), layer.qkv).reshape(n, 3, H, dh)
        q = np.array([[rotate(qkv[i, 0, h], cos[i], sin[i], spec.Q_MAX) for h in range(H)] for i in range(n)])
        k = np.array([[rotate(qkv[i, 1, h], cos[i], sin[i], spec.KV_MAX) for h in range(H)] for i in range(n)])
        v = np.clip(qkv[:, 2], -spec.KV_MAX, spec.KV_MAX)
        o = np.empty((n, H, dh), np.int64)
        for i in range(n):
            j0 = max(0, i - c.context + 1)  # the sliding window, within the sequence
            for h in range(H):
                s = k[j0 : i + 1, h] @ q[i, h]
                e = attn_exp[np.minimum((s.max() - s + (1 << (score_shift - 1))) >> score_shift, len(attn_exp) - 1)]
                num, den = e @ v[j0 : i + 1, h], int(e.sum())
                o[i, h] = (2 * num + den) // (2 * den)
        x = np.clip(x + linear(o.reshape(n, H * dh), layer.out), -spec.RES_MAX, spec.RES_MAX)
        hid = np.clip(linear(layer_norm(x, ip), layer.ff1), -spec.HID_MAX, spec.HID_MAX)
        g = np.where(hid > gelu_r, hid, gelu[np.clip(hid, -gelu_r, gelu_r) + gelu_r])
        x = np.clip(x + linear(g, layer.ff2), -spec.RES_MAX, spec.RES_MAX)
    return np.clip(linear(layer_norm(x, ip), ip.to_logits), -spec.LOGIT_MAX, spec.LOGIT_MAX)


def frequencies(logits: np.ndarray, total_bits: int = spec.FREQ_BITS) -> np.ndarray:
    """Range-coder frequencies (n, K) from integer logits (n, K), row by row."""
    table = spec.exp_table(spec.PROB_ONE)
    total, K = 1 << total_bits, logits.shape[1]
    out = np.empty_like(logits)
    for i, row in enumerate(logits):
        e = table[np.minimum(row.max() - row, len(table) - 1)]
        f = e * (total - K) // int(e.sum()) + 1
        f[int(np.argmax(row))] += total - int(f.sum())
        out[i] = f
    return out
