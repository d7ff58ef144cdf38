"""prior.transformer owns the prior's network and the layout of its weights. The bundled priors were trained with
x-transformers: where it is installed (the dev extra pins the tested range), check that both compute the same."""

import pytest
import torch

from prior import PriorConfig, TokenPrior
from prior.layout import positions
from prior.transformer import EDGES

x_transformers = pytest.importorskip("x_transformers")


def x_transformers_net(c: PriorConfig):
    """The network the bundled priors were trained as: TransformerWrapper + Decoder, as prior.model built it."""
    return x_transformers.TransformerWrapper(
        num_tokens=c.codebook_size + 1 + c.num_classes,
        logits_dim=c.codebook_size,
        max_seq_len=0,
        embed_num_tokens={"level": c.levels, **{e: c.edge_positions for e in EDGES}},
        attn_layers=x_transformers.Decoder(
            dim=c.dim,
            depth=c.depth,
            heads=c.heads,
            attn_dim_head=c.dim // c.heads,
            ff_mult=c.ff_mult,
            attn_max_attend_past=c.context - 1,
            attn_flash=True,
        ),
    ).eval()


@pytest.mark.parametrize("residual", [False, True])
def test_same_weights_same_logits_as_x_transformers(residual):
    levels = 3 if residual else 1
    cfg = PriorConfig(codebook_size=20, levels=levels, residual=residual, context=7, dim=32, depth=2, heads=2)
    torch.manual_seed(0)
    ours = TokenPrior(cfg).eval()
    with torch.no_grad():  # LayerNorm gains are stored as offsets from one (zero at init): make them matter
        for name, p in ours.named_parameters():
            if name.endswith("gamma"):
                p.add_(torch.randn_like(p) * 0.3)
    theirs = x_transformers_net(cfg)
    theirs.load_state_dict(ours.net.state_dict())  # the same names and shapes: the files' layout
    n = 30  # past the window of 7
    inputs = torch.randint(0, 20, (2, n))
    inputs[:, 0] = 20  # the start token
    pos = positions((levels, 5, 8), 3, 3 + n)[None]
    edge = cfg.edge_positions - 1
    embed_ids = {"level": pos[..., 2], **{e: pos[..., i].clamp(max=edge) for e, i in zip(EDGES, (0, 1, 3, 4))}}
    freqs = (pos[..., :2, None].float() * ours.inv_freq).flatten(-2).repeat_interleave(2, dim=-1)
    with torch.no_grad():
        want = theirs(inputs, embed_ids=embed_ids, rotary_pos_emb=(freqs, 1.0))
        got = ours(inputs, pos)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
