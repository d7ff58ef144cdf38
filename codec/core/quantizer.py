"""EMA vector quantizer with k-means init and dead-code reset, and its residual (multi-stage) version.

The codebook is learned by exponential moving averages only (van den Oord et al. 2017, appendix A.1):

    N_k <- gamma N_k + (1 - gamma) n_k                       (cluster sizes)
    m_k <- gamma m_k + (1 - gamma) sum_{i: idx_i = k} z_i    (vector sums)
    e_k  = m_k / ((N_k + eps) / (n + K eps) * n),  n = sum_k N_k   (Laplace smoothing)

Under torch.distributed the per-step counts and sums are all-reduced, and every random choice (k-means
samples, replacement vectors) is made on rank 0 and broadcast, so codebooks stay bitwise identical.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.core import distributed as D
from codec.core.kmeans import kmeans
from kernels import nearest_code


@dataclass
class QuantizerOutput:
    """Result of a quantizer forward pass.

    Attributes:
        quantized: same shape and dtype as the input z; value = the chosen codes, gradient = identity to z.
        indices: int64, z.shape[:-1] (single VQ) or z.shape[:-1] + (n_q,) (residual VQ).
        loss: scalar, commitment_weight * mean ||z - sg(e)||^2 (summed over stages for residual VQ).
        perplexity: exp(entropy) of this batch's code histogram; scalar, or (n_q,) for residual VQ.
        usage: fraction of the K codes selected at least once in this batch; scalar or (n_q,).
        resets: number of dead codes replaced this step; int64 scalar or (n_q,).
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor
    resets: torch.Tensor


class _StraightThrough(torch.autograd.Function):
    """Forward returns q exactly; backward passes the gradient to z unchanged."""

    @staticmethod
    def forward(ctx, z, q):
        return q.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def histogram_stats(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Perplexity and used fraction of a (K,) code histogram."""
    total = counts.sum().clamp_min(1e-12)
    p = counts / total
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()


class VectorQuantizer(nn.Module):
    """EMA vector quantizer.

    Args:
        dim: vector size D.
        codebook_size: number of codes K.
        decay: EMA decay gamma in [0, 1).
        eps: Laplace smoothing constant.
        dead_code_threshold: codes whose EMA cluster size falls below this are replaced by random vectors of
            the current batch (0 disables the reset). Cluster sizes count vectors per step (over all ranks).
        kmeans_init: initialise the codebook by k-means on the first training batch.
        commitment_weight: weight of the commitment loss.
        kmeans_iters: Lloyd iterations of that initialisation.
        kmeans_samples: at most this many vectors (over all ranks) feed the k-means.
        rate_weight: lambda of an entropy-constrained code choice (ECVQ, Chou, Lookabaugh and Gray 1989): each
            vector takes the code minimising ||z - e_k||^2 + lambda * l_k, where l_k = -log2 p_k is the code's
            length in bits under its EMA usage p_k (``code_lengths``). Training with it makes the codes' usage
            skewed, so an entropy coder spends fewer bits on them, at the price of a larger squared error; the
            same rule chooses the codes at encoding time. 0 (the default) is the plain nearest code.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 2.0,
        kmeans_init: bool = True,
        commitment_weight: float = 0.25,
        kmeans_iters: int = 10,
        kmeans_samples: int = 32768,
        rate_weight: float = 0.0,
    ):
        super().__init__()
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be >= 1, got {dim} and {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.dim, self.codebook_size = dim, codebook_size
        self.decay, self.eps = decay, eps
        if rate_weight < 0:
            raise ValueError(f"rate_weight must be >= 0, got {rate_weight}")
        self.dead_code_threshold = dead_code_threshold
        self.rate_weight = rate_weight
        self.commitment_weight = commitment_weight
        self.kmeans_iters, self.kmeans_samples = kmeans_iters, kmeans_samples
        embed = torch.randn(codebook_size, dim)
        # Without k-means, codes start as if they had just been reset: alive, with a consistent EMA state.
        start_size = max(dead_code_threshold, 1.0)
        self.register_buffer("embed", embed)  # (K, D)
        self.register_buffer("embed_sum", embed * start_size)  # (K, D)
        self.register_buffer("cluster_size", torch.full((codebook_size,), start_size))  # (K,)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) float32 codebook."""
        return self.embed

    # Bundled models leave out the EMA sums (training state only; 1 MB of the audio codec): a state without them
    # gets embed x cluster_size, elementwise in float32 (the same bits on every machine, so the model's hash is
    # too), which is what the sums hold once a code's EMA has settled, up to the Laplace smoothing
    rebuilt_on_load = ("embed_sum",)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        embed, size, sums = (prefix + name for name in ("embed", "cluster_size", "embed_sum"))
        if sums not in state_dict and embed in state_dict and size in state_dict:
            state_dict[sums] = state_dict[embed].float() * state_dict[size].float()[:, None]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantize the last axis of ``z``.

        Args:
            z: (..., D) float tensor.
            mask: optional bool tensor of shape z.shape[:-1]; only True vectors update the codebook and count
                in the loss and statistics (used by residual quantizer dropout).

        Returns:
            QuantizerOutput (see its docstring). In eval mode nothing in the quantizer changes.
        """
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected z with last dimension {self.dim}, got shape {tuple(z.shape)}")
        if mask is not None and mask.shape != z.shape[:-1]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match z.shape[:-1] = {tuple(z.shape[:-1])}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            zf = z.float()  # quantization math in fp32 whatever the autocast state
            flat = zf.detach().reshape(-1, self.dim)  # (M, D)
            keep = None if mask is None else mask.reshape(-1)
            active = flat if keep is None else flat[keep]  # (M', D)
            if self.training and not bool(self.initialized):
                self._kmeans_init(active)
            indices = self._search(flat)  # (M,)
            q = F.embedding(indices, self.embed)  # (M, D), the codebook used for the search
            active_idx = indices if keep is None else indices[keep]
            counts = torch.bincount(active_idx, minlength=self.codebook_size).float()  # (K,)
            resets = torch.zeros((), dtype=torch.int64, device=z.device)
            if self.training:
                counts = self._ema_update(active, active_idx, counts)
                resets = self._reset_dead_codes(active)
            perplexity, usage = histogram_stats(counts)
            q = q.view_as(zf)
            if keep is None:
                loss = F.mse_loss(zf, q)
            elif bool(keep.any()):
                loss = F.mse_loss(zf[mask], q[mask])
            else:
                loss = zf.sum() * 0.0
            loss = self.commitment_weight * loss
        quantized = _StraightThrough.apply(z, q.to(z.dtype))
        return QuantizerOutput(quantized, indices.view(z.shape[:-1]), loss, perplexity, usage, resets)

    @torch.no_grad()
    def encode_indices(self, z: torch.Tensor, rate_scale: float = 1.0) -> torch.Tensor:
        """The indices ``forward`` gives, (...) int64 of z (..., D), without its statistics or updates (inference);
        ``rate_scale`` multiplies ``rate_weight`` for this search (the encoder-side search's choice)."""
        return self._search(z.float().reshape(-1, self.dim), rate_scale).view(z.shape[:-1])

    @torch.no_grad()
    def code_lengths(self) -> torch.Tensor:
        """(K,) float32 length in bits of each code, -log2 p_k, under the EMA usage ``_usage``."""
        return -torch.log2(self._usage())

    def _usage(self) -> torch.Tensor:
        """(K,) float32 Laplace-smoothed EMA usage p_k = (n_k + eps) / (n + K eps) of the codes."""
        counts = self.cluster_size.float()
        return (counts + self.eps) / (counts.sum() + self.codebook_size * self.eps)

    def _search(self, flat: torch.Tensor, rate_scale: float = 1.0) -> torch.Tensor:
        """(M,) int64 codes of flat (M, D) float32: the nearest, or under ``rate_weight`` (times ``rate_scale``) the
        argmin of the squared distance plus lambda times the code length. The rate term rides as one extra
        coordinate, sqrt(lambda * (l_k - min l)) on each code and 0 on each vector, so the same nearest-code kernel
        does both searches."""
        weight = self.rate_weight * rate_scale
        if weight == 0:
            return nearest_code(flat, self.embed)[0]
        bits = self.code_lengths()
        extra = (weight * (bits - bits.min())).sqrt()  # (K,) >= 0; a constant shift leaves the argmin
        codes = torch.cat([self.embed.float(), extra[:, None]], dim=1)  # (K, D + 1)
        return nearest_code(torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], dim=1), codes)[0]

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of ``indices``: (...) int64 in [0, K) -> (..., D) float32."""
        _check_indices(indices, self.codebook_size)
        return F.embedding(indices, self.embed)

    @torch.no_grad()
    def _kmeans_init(self, x: torch.Tensor) -> None:
        """k-means on this batch (pooled over ranks); EMA sums set consistently with the counts."""
        world_total = D.all_reduce_sum_(torch.tensor([float(x.shape[0])], device=x.device))
        per_rank = self.kmeans_samples if not D.is_distributed() else max(1, self.kmeans_samples // _world())
        sample = x[torch.randperm(x.shape[0], device=x.device)[:per_rank]]
        pool = D.all_gather_rows(sample)
        if pool.shape[0] == 0:  # identical on every rank: nobody had data yet
            return
        centroids, counts = kmeans(pool, self.codebook_size, self.kmeans_iters)
        counts = counts * (world_total / pool.shape[0])  # per-step scale of the EMA cluster sizes
        self.embed.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(centroids * counts[:, None])
        for buf in (self.embed, self.cluster_size, self.embed_sum):
            D.broadcast_(buf)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, x: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One EMA step from this batch's assignments; returns the counts summed over ranks."""
        sums = torch.zeros_like(self.embed).index_add_(0, idx, x)  # (K, D)
        stats = D.all_reduce_sum_(torch.cat([counts[:, None], sums], dim=1))  # one collective
        counts, sums = stats[:, 0], stats[:, 1:]
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        smoothed = self._usage() * self.cluster_size.sum()  # Laplace-smoothed cluster sizes, same total
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        return counts

    @torch.no_grad()
    def _reset_dead_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Replace codes whose cluster size fell below the threshold by random vectors of this batch."""
        none = torch.zeros((), dtype=torch.int64, device=x.device)
        if self.dead_code_threshold <= 0:
            return none
        dead = self.cluster_size < self.dead_code_threshold  # identical on every rank
        n_dead = int(dead.sum())
        if n_dead == 0:
            return none
        local = x[torch.randperm(x.shape[0], device=x.device)[:n_dead]]
        pool = D.all_gather_rows(local)  # (P, D), identical on every rank
        if pool.shape[0] == 0:
            return none
        if pool.shape[0] >= n_dead:
            choice = torch.randperm(pool.shape[0], device=x.device)[:n_dead]
        else:
            choice = torch.randint(0, pool.shape[0], (n_dead,), device=x.device)
        D.broadcast_(choice)
        fresh = pool[choice]  # (n_dead, D)
        self.embed[dead] = fresh
        self.cluster_size[dead] = self.dead_code_threshold
        self.embed_sum[dead] = fresh * self.dead_code_threshold
        return torch.tensor(n_dead, device=x.device)


def _world() -> int:
    return torch.distributed.get_world_size() if D.is_distributed() else 1


def _check_indices(indices: torch.Tensor, k: int) -> None:
    if indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"indices must be int64 or int32, got {indices.dtype}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
        raise ValueError(f"indices must lie in [0, {k}), got range [{int(indices.min())}, {int(indices.max())}]")


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ: stage i quantizes what stages 0..i-1 left over; the first n stages give one bitrate.

    Args:
        dim, codebook_size: as for VectorQuantizer (every stage has K codes).
        num_quantizers: number of stages n_q.
        quantizer_dropout: in training, the probability that an item (index along z's first axis) keeps only
            a random number 1..n of stages, so one model serves every bitrate. Every stage still runs on every
            rank (the dropped vectors are masked out of its EMA update), so distributed runs never hang.
        **options: VectorQuantizer keywords (decay, eps, dead_code_threshold, kmeans_init, ...).
    """

    def __init__(self, dim: int, codebook_size: int, num_quantizers: int, *, quantizer_dropout: float = 0.0, **options):
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.dim, self.codebook_size, self.num_quantizers = dim, codebook_size, num_quantizers
        self.quantizer_dropout = quantizer_dropout
        self.layers = nn.ModuleList(VectorQuantizer(dim, codebook_size, **options) for _ in range(num_quantizers))

    def _stages(self, num_quantizers: int | None) -> int:
        n = self.num_quantizers if num_quantizers is None else int(num_quantizers)
        if not 1 <= n <= self.num_quantizers:
            raise ValueError(f"num_quantizers must be in [1, {self.num_quantizers}], got {num_quantizers}")
        return n

    def forward(self, z: torch.Tensor, num_quantizers: int | None = None) -> QuantizerOutput:
        """Quantize ``z`` (..., D) with the first ``num_quantizers`` stages (all by default).

        Returns:
            QuantizerOutput with indices of shape z.shape[:-1] + (n,) and per-stage (n,) statistics. Under
            quantizer dropout (training only) the indices of dropped stages are still the nearest codes of
            the residual, but they do not contribute to ``quantized``.
        """
        n = self._stages(num_quantizers)
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected z with last dimension {self.dim}, got shape {tuple(z.shape)}")
        keep_stages = None
        if self.training and self.quantizer_dropout > 0 and z.ndim >= 2:
            n_item = self.dropout_stages(z.shape[0], n, z.device)  # (B,)
            keep_stages = n_item.view(-1, *([1] * (z.ndim - 2))).expand(z.shape[:-1])  # z.shape[:-1]
        with torch.autocast(device_type=z.device.type, enabled=False):
            residual = z.float()
            total = torch.zeros_like(residual)
            outs = []
            for i, layer in enumerate(self.layers[:n]):
                mask = None if keep_stages is None else keep_stages > i
                out = layer(residual, mask=mask)
                q = out.quantized.detach()
                if mask is not None:
                    q = q * mask[..., None]
                total = total + q
                residual = residual - q
                outs.append(out)
        quantized = _StraightThrough.apply(z, total.to(z.dtype))
        return QuantizerOutput(
            quantized=quantized,
            indices=torch.stack([o.indices for o in outs], dim=-1),
            loss=torch.stack([o.loss for o in outs]).sum(),
            perplexity=torch.stack([o.perplexity for o in outs]),
            usage=torch.stack([o.usage for o in outs]),
            resets=torch.stack([o.resets for o in outs]),
        )

    def dropout_stages(self, items: int, n: int, device) -> torch.Tensor:
        """(items,) int64 stages each item keeps under quantizer dropout: a random 1..n with probability
        ``quantizer_dropout``, else n."""
        drop = torch.rand(items, device=device) < self.quantizer_dropout
        return torch.where(drop, torch.randint(1, n + 1, (items,), device=device), n)

    @torch.no_grad()
    def encode_indices(
        self, z: torch.Tensor, num_quantizers: int | None = None, rate_scale: float = 1.0
    ) -> torch.Tensor:
        """The indices ``forward`` gives in eval mode, (..., n) int64 of z (..., D), without its statistics;
        ``rate_scale`` multiplies each level's ``rate_weight`` for this search."""
        residual, out = z.float(), []
        for layer in self.layers[: self._stages(num_quantizers)]:
            idx = layer.encode_indices(residual, rate_scale)
            residual = residual - F.embedding(idx, layer.embed)  # as forward: the same operations, the same bits
            out.append(idx)
        return torch.stack(out, dim=-1)

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Rebuild ``quantized`` from indices (..., n) with 1 <= n <= num_quantizers -> (..., D) float32."""
        if indices.ndim < 1:
            raise ValueError("indices must have a last axis of stages")
        n = self._stages(indices.shape[-1])
        total = torch.zeros(*indices.shape[:-1], self.dim, device=indices.device)
        for i, layer in enumerate(self.layers[:n]):
            total = total + layer.decode_indices(indices[..., i])
        return total
