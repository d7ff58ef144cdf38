"""An independent reference of the integer context model (``prior.context_integer``): its arithmetic written
plainly in numpy int64, convolutions as loops over kernel offsets of a zero-padded grid with integer products (no
unfold, no BLAS, no float), and the pass masks rebuilt from the schedule definitions in the docstring of
``prior.context``. It shares only the integer parameters with the real thing.
"""

import numpy as np

ACT_FRAC, ACT_MAX = 6, 2**12
LOGIT_FRAC, LOGIT_MAX = 8, 2**24


def _np(t) -> np.ndarray:
    return t.numpy().astype(np.int64)


def group_of(schedule: str, r: int, c: int) -> int:
    """The schedule tables of ``prior.context``, position by position."""
    if schedule == "cb":
        return (r + c) % 2
    if r % 4 == 0 and c % 4 == 0:
        return 0
    if r % 4 == 2 and c % 4 == 2:
        return 1
    if r % 2 == 0 and c % 2 == 0:
        return 2
    if r % 2 == 1 and c % 2 == 1:
        return 3
    return 4


def requantize(acc: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Last axis j: acc * 2^-shift[j], rounded half up (a left shift when shift[j] <= 0)."""
    out = np.empty_like(acc)
    for j, s in enumerate(shift.tolist()):
        out[..., j] = acc[..., j] << -s if s <= 0 else (acc[..., j] + (1 << (s - 1))) >> s
    return out


def conv(x: np.ndarray, lin, kernel: tuple[int, int], extra=None) -> np.ndarray:
    """x (H, W, C) int64 -> (H, W, out): the weight rows (out, C kh kw) ordered channel-major, then kernel row and
    column (torch's Conv2d layout), over a zero-padded grid."""
    H, W, C = x.shape
    kh, kw = kernel
    w = _np(lin.weight).reshape(-1, C, kh, kw)
    pad = np.zeros((H + kh - 1, W + kw - 1, C), dtype=np.int64)
    pad[kh // 2 : kh // 2 + H, kw // 2 : kw // 2 + W] = x
    acc = np.zeros((H, W, w.shape[0]), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += pad[i : i + H, j : j + W] @ w[:, :, i, j].T
    if lin.bias is not None:
        acc += _np(lin.bias)
    if extra is not None:
        acc += extra
    return requantize(acc, _np(lin.shift))


def pass_logits(ic, tokens: np.ndarray, inside: np.ndarray, rows, cols, level: int, group: int) -> np.ndarray:
    """Logits (n, K) of one pass over a window: tokens, inside (L, H, W); rows, cols: absolute coordinates."""
    c = ic.config
    L, H, W = tokens.shape
    sched = [c.first_schedule if lv == 0 else c.schedule for lv in range(L)]
    g = np.array([[group_of(sched[level], r, q) for q in cols] for r in rows])
    known = inside.copy()
    known[level + 1 :] = False
    known[level] &= g < group
    target = inside[level] & (g == group)
    emb = _np(ic.embed)
    x = np.zeros((H, W, L * (c.embed + 1)), dtype=np.int64)
    for lv in range(L):
        e = emb[lv][tokens[lv]] * known[lv][..., None]
        x[..., lv * (c.embed + 1) : lv * (c.embed + 1) + c.embed] = e
        x[..., lv * (c.embed + 1) + c.embed] = known[lv].astype(np.int64) << ACT_FRAC
    kernel = (1, c.kernel) if c.modality == "audio" else (c.kernel, c.kernel)
    index = sum(2 if s == "cb" else 5 for s in sched[:level]) + group
    h = np.clip(conv(x, ic.conv_in, kernel, _np(ic.pass_bias)[index]), 0, ACT_MAX)
    for lin in ic.convs:
        h = np.clip(h + np.clip(conv(h, lin, kernel), 0, ACT_MAX), None, ACT_MAX)
    h = np.clip(conv(h, ic.proj, (1, 1)), 0, ACT_MAX)
    head = ic.heads[level]
    logits = requantize(h[target] @ _np(head.weight).T + _np(head.bias), _np(head.shift))
    return np.clip(logits, -LOGIT_MAX, LOGIT_MAX)
