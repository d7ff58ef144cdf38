"""Fast incremental inference of a TokenPrior over many independent sequences at once: the entropy coder's path.

``StepDecoder`` reads a ``TokenPrior``'s weights (their layout is ``prior.transformer``'s) and computes the same
function as ``TokenPrior.forward`` (pre-norm Transformer, 2-D rotary attention over a sliding window, level and
edge embeddings) one position at a time, with

- one fused q/k/v projection per layer;
- keys stored already rotated (a key's rotation depends only on its own position) in a ring buffer of
  ``context`` slots per layer, written in place: no copying of the cache;
- B sequences in lockstep, each a window of flat positions of one item's raster sequence starting anywhere
  (``starts``), every one beginning from the start token (no earlier context).

Determinism: the logits of a step are a function of the inputs so far and of the shapes involved (B, the ring
size, the step), computed by the same sequence of torch operations at encode and decode time, so the encoder
and the decoder see bit-identical logits on one machine. They equal ``TokenPrior.forward`` over the same window
up to float rounding (the tests check both).
"""

import torch
import torch.nn.functional as F

from prior.layout import flat_positions, positions
from prior.transformer import EDGES


class StepDecoder:
    """Token-by-token logits for B sequences of one grid layout; see the module docstring.

    Args:
        prior: the ``TokenPrior`` whose weights are used (not modified; later changes to it are not seen).
        layout: (L, H, W) of the item's token grid (``prior.layout(shape)``).
        starts: (B,) int64 flat position of each sequence's first token.
        device: where to compute (default: the prior's).

    Use: ``logits = dec.step(inputs)`` with (B,) int64 inputs: the start id for a sequence's first step, then
    the token whose logits the previous step gave. Step s returns (B, K) float32 logits of the tokens at flat
    positions ``starts + s``.
    """

    def __init__(self, prior, layout: tuple[int, int, int], starts: torch.Tensor, device=None):
        c = prior.config
        self.device = torch.device(device) if device is not None else prior.inv_freq.device
        self.layout = tuple(int(v) for v in layout)
        self.starts = torch.as_tensor(starts, dtype=torch.int64, device=self.device).reshape(-1)
        self.batch = self.starts.numel()
        self.heads, self.dim_head = c.heads, c.dim // c.heads
        self.window = c.context  # slots: the position itself and the context - 1 before it
        self.edge = c.edge_positions - 1
        self.scale = self.dim_head**-0.5
        self.step_index = 0

        def w(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(self.device, torch.float32).contiguous()

        net = prior.net
        self.token_emb = w(net.token_emb.emb.weight)
        self.embeds = {name: w(net.embeds[f"{name}_embed"].weight) for name in ("level", *EDGES)}
        self.layers = []
        for attn_block, ff_block in net.attn_layers.blocks():
            attn, ff = attn_block.branch, ff_block.branch.ff
            self.layers.append(
                dict(
                    g1=w(attn_block.norm.gain()),
                    qkv=w(torch.cat([attn.to_q.weight, attn.to_k.weight, attn.to_v.weight])),
                    out=w(attn.to_out.weight),
                    g2=w(ff_block.norm.gain()),
                    w1=w(ff[0][0].weight),
                    b1=w(ff[0][0].bias),
                    w2=w(ff[2].weight),
                    b2=w(ff[2].bias),
                )
            )
        self.final_gamma = w(net.attn_layers.final_norm.gain())
        self.to_logits = w(net.to_logits.weight)
        self.inv_freq = w(prior.inv_freq)
        shape = (len(self.layers), self.batch, self.heads, self.window, self.dim_head)
        self.keys = torch.zeros(shape, device=self.device)
        self.values = torch.zeros(shape, device=self.device)

    @torch.inference_mode()
    def step(self, inputs: torch.Tensor) -> torch.Tensor:
        """Feed (B,) input ids; returns (B, K) float32 logits of the next token of every sequence."""
        B, H, dh, D = self.batch, self.heads, self.dim_head, self.token_emb.shape[1]
        pos = flat_positions(self.layout, self.starts + self.step_index)  # (B, 5)
        x = self.token_emb[inputs.to(self.device, torch.int64)] + self.embeds["level"][pos[:, 2]]
        for name, i in zip(EDGES, (0, 1, 3, 4)):
            x = x + self.embeds[name][pos[:, i].clamp(max=self.edge)]
        # the rotary embedding turns each pair (2i, 2i+1) by an angle: a complex product, q and k at once
        angles = (pos[:, :2, None].float() * self.inv_freq).flatten(-2)  # (B, dh / 2)
        turn = torch.polar(torch.ones_like(angles), angles)[:, None, None, :]  # (B, 1, 1, dh / 2)
        slot = self.step_index % self.window
        filled = min(self.step_index + 1, self.window)
        for i, layer in enumerate(self.layers):
            h = F.layer_norm(x, (D,), layer["g1"])
            qkv = F.linear(h, layer["qkv"]).view(B, 3, H, dh // 2, 2)
            qk = torch.view_as_real(torch.view_as_complex(qkv[:, :2]) * turn).view(B, 2, H, dh)
            self.keys[i, :, :, slot] = qk[:, 1]
            self.values[i, :, :, slot] = qkv[:, 2].view(B, H, dh)
            keys, values = self.keys[i, :, :, :filled], self.values[i, :, :, :filled]  # (B, H, n, dh)
            scores = torch.matmul(qk[:, 0, :, None], keys.transpose(-1, -2)).mul_(self.scale)  # (B, H, 1, n)
            attn = torch.matmul(scores.softmax(dim=-1), values)  # (B, H, 1, dh)
            x = x + F.linear(attn.view(B, H * dh), layer["out"])
            h = F.layer_norm(x, (D,), layer["g2"])
            x = x + F.linear(F.gelu(F.linear(h, layer["w1"], layer["b1"])), layer["w2"], layer["b2"])
        self.step_index += 1
        return F.linear(F.layer_norm(x, (D,), self.final_gamma), self.to_logits)


def window_logits(prior, layout, start: int, inputs: torch.Tensor) -> torch.Tensor:
    """Reference: ``TokenPrior.forward`` over one window of n positions from flat ``start`` (no cache).

    Args:
        inputs: (B, n) int64 input ids (start id first).

    Returns:
        (B, n, K) float32 logits.
    """
    pos = positions(tuple(layout), start, start + inputs.shape[1], inputs.device)[None]
    with torch.inference_mode():
        logits = prior(inputs, pos)
    return logits.float()
