"""Training a codec: the codec's part of the one training loop (``codec.train.loop``).

    metrics = train("image", "data/photos", "runs/img", ImageCodecConfig(), TrainConfig(steps=20_000))

``CodecTask`` plugs in what is the codec's own: datasets of image crops or audio segments with a held-out split,
the reconstruction + commitment loss (``codec.train.losses``), PSNR or SI-SNR and codebook usage per batch,
held-out metrics and reconstructions (``samples/``), and the model saved as a codec run directory. The quantizer
all-reduces its own EMA statistics in the forward pass, so its codebooks stay identical on every rank (DDP's
buffer broadcast from rank 0 before each forward is then a no-op; it is kept because torch deprecates turning it
off).
"""

import os
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch

from codec.core.checkpoint import load, save_model
from codec.core.config import (
    DECODER_FIELDS,
    AudioCodecConfig,
    CodecConfig,
    ImageCodecConfig,
    config_from_dict,
    config_to_dict,
)
from codec.core.model import Codec, CodecOutput
from codec.core.quantizer import QuantizerOutput, histogram_stats
from codec.core.refine import refine_tokens
from codec.core.spectral import mel_distance
from codec.errors import CheckpointError
from codec.media import write_audio, write_image
from codec.train.adversarial import Adversary
from codec.train.config import (
    RESUMABLE_CHANGES,
    TrainConfig,
    differences,
    merge,
    plain,
    train_config_from_dict,
)
from codec.train.data import AudioFolderDataset, ImageFolderDataset, find_files, split_files, stream_loader
from codec.train.loop import LoopSettings, TrainTask, run_training
from codec.train.losses import CodecLoss
from codec.train.metrics import psnr, si_snr
from codec.train.state import STATE_NAME, read_checkpoint_meta

SAMPLES_DIR = "samples"

# what a fine-tuning run (init=) may change in the start model's config: training knobs, not the architecture
INIT_CHANGEABLE = {
    "tile", "tile_overlap", "chunk_frames", "chunk_context", "padding",
    "quantizer.decay", "quantizer.dead_code_threshold", "quantizer.commitment_weight",
    "quantizer.quantizer_dropout", "quantizer.kmeans_init", "quantizer.rate_weight", "encoder_blocks",
    *DECODER_FIELDS,
}  # fmt: skip


def default_codec_config(modality: str) -> CodecConfig:
    if modality == "image":
        return ImageCodecConfig()
    if modality == "audio":
        return AudioCodecConfig()
    raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")


def loop_settings(cfg: TrainConfig) -> LoopSettings:
    """The loop's share of a codec's TrainConfig."""
    names = ("steps", "batch_size", "lr", "betas", "weight_decay", "warmup", "min_lr_ratio", "grad_clip")
    names += ("grad_accum", "mixed_precision", "log_every", "eval_every", "checkpoint_every", "seed", "max_minutes")
    return LoopSettings(**{k: getattr(cfg, k) for k in names})


class CodecTask(TrainTask):
    """A codec trained on a folder of images or audio files (see the module docstring)."""

    kind = "codec"

    def __init__(
        self,
        data_dir: Path,
        codec_config: CodecConfig,
        cfg: TrainConfig,
        init_state: dict | None = None,
    ):
        super().__init__(loop_settings(cfg))
        self.data_dir, self.codec_config, self.cfg, self.init_state = data_dir, codec_config, cfg, init_state
        self.modality = codec_config.modality
        self.quality = "psnr" if self.modality == "image" else "si_snr"
        terms = ["recon", "vq"] if self.modality == "image" else ["recon", "stft", "mel", "cstft", "periodic", "vq"]
        if cfg.adversarial:
            if self.modality != "audio":
                raise ValueError("train config: the adversarial loss is for audio codecs only")
            terms += ["adv", "feat", "disc"]
        self.terms = tuple(terms)
        self.adversary: Adversary | None = None
        self.stat_names = ("loss", *terms, self.quality, "usage", "perplexity")
        self.progress_stats = ("loss", self.quality, "usage")

    # ------------------------------------------------------------------------------------------ setup
    def build_model(self) -> Codec:
        model = Codec(self.codec_config)
        if self.cfg.freeze_encoder:  # the tokens stay the start model's: only the decoder learns
            for p in (*model.encoder.parameters(), *model.quantizer.parameters()):
                p.requires_grad_(False)
        if self.cfg.freeze_decoder:  # the codes and the decoder stay the start model's: only the encoder learns
            for p in (*model.decoder.parameters(), *model.quantizer.parameters()):
                p.requires_grad_(False)
        if self.init_state is not None:
            load_init_state(model, self.init_state)
            self.init_state = None  # free the copy
        return model

    def param_groups(self, model: Codec):
        if self.cfg.freeze_encoder:
            return model.decoder.parameters()
        return model.encoder.parameters() if self.cfg.freeze_decoder else model.parameters()

    def start(self, model: Codec, accelerator) -> None:
        cfg, main = self.cfg, accelerator.is_main_process
        self.device, self.sample_rate = accelerator.device, model.sample_rate
        self.loss_fn = CodecLoss(
            self.modality,
            image_loss=cfg.image_loss,
            clamp_aware=cfg.image_clamp_aware,
            sample_rate=model.sample_rate,
            hop=model.downsample if self.modality == "audio" else None,
            recon_weight=cfg.recon_weight,
            stft_weight=cfg.stft_weight,
            mel_weight=cfg.mel_weight,
            cstft_weight=cfg.cstft_weight,
            periodic_weight=cfg.periodic_weight,
            vq_weight=cfg.vq_weight,
        ).to(accelerator.device)
        files = find_files(self.data_dir, self.modality)
        train_files, val_files = split_files(files, cfg.val_fraction)
        self.eval_on = "val"
        if not val_files:
            if main:
                warnings.warn(f"{self.data_dir}: no held-out files; evaluating on training files", stacklevel=4)
            val_files, self.eval_on = train_files, "train"
        root, m = self.data_dir, model
        if self.modality == "image":
            jitter = cfg.saturation_jitter
            make = partial(ImageFolderDataset, root, cfg.crop, m.downsample, m.channels, saturation=jitter)
        else:
            make = partial(AudioFolderDataset, root, cfg.segment_samples, m.sample_rate, m.channels, m.downsample)
        self.train_ds, self.eval_ds = make(files=train_files, train=True), make(files=val_files, train=False)
        if self.eval_on == "train":
            self.eval_ds.share_skips(self.train_ds)  # one warning per bad file, counted once
        if main:
            check_dead_code_threshold(self.codec_config, cfg, accelerator.num_processes)
        if cfg.adversarial:
            with torch.random.fork_rng(devices=[]):  # the same discriminator on every process; the stream untouched
                torch.manual_seed(cfg.seed + 1)
                self.adversary = Adversary(
                    accelerator.device, cfg.disc_lr or cfg.lr, cfg.disc_channels, autocast=accelerator.autocast
                )

    def train_loader(self, position: int):
        cfg = self.cfg
        return stream_loader(self.train_ds, cfg.batch_size, cfg.seed, position, cfg.num_workers)

    # ------------------------------------------------------------------------------------------ steps
    def loss(self, model: Codec, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        self.train_ds.report(batch["bad"])
        x = batch["x"]
        frozen = self.cfg.frozen_codebooks
        out = self._frozen_forward(model, x, train_encoder=self.cfg.freeze_decoder) if frozen else model(x)
        total, terms = self.loss_fn(out.x_hat, x, out.vq.loss)
        if self.adversary is not None and self.step >= self.cfg.adversarial_start:
            x_hat_w, x_w = random_windows(out.x_hat, x, self.cfg.disc_samples)
            terms["disc"] = self.adversary.update(x_hat_w, x_w)  # first the discriminator, on this batch
            adv, feat = self.adversary.generator_terms(x_hat_w, x_w)  # then the codec, against it
            total = total + self.cfg.adversarial_weight * adv + self.cfg.feature_weight * feat
            terms["adv"], terms["feat"] = adv.detach(), feat.detach()
        quality = self._quality(out.x_hat.detach(), x).mean()
        values = [total.detach().float(), *[terms.get(k, torch.zeros(())).float() for k in self.terms]]
        values += [quality, out.vq.usage.float().mean(), out.vq.perplexity.float().mean()]
        return total, torch.stack([v.to(x.device) for v in values])

    def _frozen_forward(self, model, x: torch.Tensor, train_encoder: bool = False) -> CodecOutput:
        """The training pass of a fine-tune with frozen codebooks: the model's tokens (eval mode: no EMA update, no
        code reset), each item cut to a random number of residual levels with the quantizer-dropout probability
        as in training, and the decoder's output with gradients. Statistics: usage/perplexity of the tokens per
        level.

        ``train_encoder`` False (a frozen encoder): the gradient reaches the decoder only; vq loss 0.
        ``train_encoder`` True (a frozen decoder): the gradient passes straight through the quantizer to the
        encoder (the decoder's weights get none), and the vq loss is the commitment term,
        ``commitment_weight * mean ||z - sg(quantized)||^2``."""
        net = getattr(model, "module", model)  # DDP wraps the model; the frozen parts need no gradient sync
        if not train_encoder:
            net.encoder.eval()
        net.quantizer.eval()
        with torch.set_grad_enabled(train_encoder):
            z_grad = net.encoder(x).movedim(1, -1).float()  # (B, *grid, D)
        with torch.no_grad():
            z = z_grad.detach()
            q = net.quantizer
            if net.residual:
                idx = q.encode_indices(z)  # (B, *grid, n)
                n = idx.shape[-1]
                keep = q.dropout_stages(x.shape[0], n, x.device) if q.quantizer_dropout > 0 else torch.full((1,), n)
                quantized = torch.zeros_like(z)
                for i, layer in enumerate(q.layers):
                    mask = (keep > i).to(z.device).view(-1, *([1] * (z.ndim - 1)))
                    quantized = quantized + layer.decode_indices(idx[..., i]) * mask
            else:
                idx = q.encode_indices(z)[..., None]
                quantized = q.decode_indices(idx[..., 0])
            if self.cfg.search_steps and not train_encoder:  # the search runs its own gradient pass on the latents
                quantized, idx = self._searched(net, x, z, quantized, idx)
            k = net.codebook_size
            stats = [
                histogram_stats(torch.bincount(idx[..., i].reshape(-1), minlength=k).float())
                for i in range(idx.shape[-1])
            ]
            perplexity, usage = (torch.stack(v) for v in zip(*stats))
        vq_loss = torch.zeros((), device=x.device)
        if train_encoder:
            vq_loss = self.codec_config.quantizer.commitment_weight * (z_grad - quantized).square().mean()
            quantized = z_grad + (quantized - z_grad).detach()  # straight through to the encoder
        x_hat = net.decoder(quantized.movedim(-1, 1))
        tokens = idx.movedim(-1, 1) if net.residual else idx[..., 0]
        zeros = torch.zeros(idx.shape[-1], dtype=torch.int64, device=x.device)  # no code resets
        vq = QuantizerOutput(quantized, idx, vq_loss, perplexity, usage, zeros)
        return CodecOutput(x_hat, tokens, vq)

    def _searched(self, net: Codec, x: torch.Tensor, z: torch.Tensor, quantized: torch.Tensor, idx: torch.Tensor):
        """(quantized, idx) with the first ``search_share`` of the batch's items re-coded by the encoder-side search
        (``codec.core.refine.refine_tokens``: ``search_steps`` steps against the decoder as it is now, in eval mode,
        on the whole item; it enables gradients on the latents itself, so it runs under ``no_grad``), all of them
        at one level count drawn by the quantizer-dropout rule. ``z`` (B, *grid, D)
        the encoder's latents; ``quantized`` (B, *grid, D) and ``idx`` (B, *grid[, n]) the plain tokens'."""
        q, k = net.quantizer, max(1, round(self.cfg.search_share * x.shape[0]))
        n = None
        if net.residual:
            n = idx.shape[-1]
            n = int(q.dropout_stages(1, n, x.device)[0]) if q.quantizer_dropout > 0 else n
        training = net.decoder.training
        net.decoder.eval()
        mask = torch.ones_like(x[:k, :1])
        found = refine_tokens(q, net.decoder, z[:k], x[:k], mask, n, self.cfg.search_steps, net.sample_rate)
        net.decoder.train(training)
        quantized = torch.cat([q.decode_indices(found), quantized[k:]])
        idx = idx.clone()  # the statistics and tokens count what the decoder is given
        if net.residual:
            idx[:k, ..., :n] = found
        else:
            idx[:k, ..., 0] = found
        return quantized, idx

    def _quality(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.modality == "image":
            return psnr(x_hat.float().clamp(0, 1), x)
        return si_snr(x_hat.float().clamp(-1, 1), x)

    def log_extras(self) -> dict:
        return {"skipped": self.train_ds.skipped}

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, model: Codec, accelerator, step: int) -> dict:
        """Held-out loss, PSNR (or SI-SNR and mel distance) and code usage; reconstructions into samples/."""
        cfg = self.cfg
        n = min(cfg.eval_items, len(self.eval_ds))
        items = [self.eval_ds[i] for i in range(n)]
        self.eval_ds.report([b for it in items for b in it["bad"]])
        xs, x_hats, tokens, losses = [], [], [], []
        for i in range(0, n, cfg.batch_size):
            x = torch.stack([it["x"] for it in items[i : i + cfg.batch_size]]).to(accelerator.device)
            with accelerator.autocast():
                out = model(x)
            losses.append(self.loss_fn(out.x_hat, x, out.vq.loss)[0].float() * x.shape[0])
            xs.append(x)
            x_hats.append(out.x_hat.float().clamp(0 if self.modality == "image" else -1, 1))
            tokens.append(out.tokens)
        x, x_hat, tok = torch.cat(xs), torch.cat(x_hats), torch.cat(tokens)
        row = {"eval_on": self.eval_on, "items": n, "loss": round(float(torch.stack(losses).sum() / n), 6)}
        if self.modality == "image":
            row["psnr"] = round(float(psnr(x_hat, x).mean()), 4)
        else:
            row["si_snr"] = round(float(si_snr(x_hat, x).mean()), 4)
            row["mel_distance"] = round(float(mel_distance(x_hat, x, model.sample_rate).mean()), 6)
        row["usage"] = round(code_usage(tok, model.residual, model.codebook_size), 6)
        self._write_samples(x, x_hat, step)
        return row

    def _write_samples(self, x: torch.Tensor, x_hat: torch.Tensor, step: int) -> None:
        k = min(self.cfg.sample_items, x.shape[0])
        if k == 0:
            return
        folder = self.out_dir / SAMPLES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"step{step:07d}"
        if self.modality == "image":
            top = torch.cat(list(x[:k].float().cpu()), dim=-1)  # (C, H, k*W)
            bottom = torch.cat(list(x_hat[:k].cpu()), dim=-1)
            write_image(folder / f"{stem}.png", torch.cat([top, bottom], dim=-2))
            return
        for i in range(k):
            write_audio(folder / f"{stem}_{i}_original.wav", x[i].float().cpu(), self.sample_rate)
            write_audio(folder / f"{stem}_{i}_reconstruction.wav", x_hat[i].cpu(), self.sample_rate)

    # ------------------------------------------------------------------------------------------ files
    def save_model(self, out_dir: Path, model: Codec) -> None:
        save_model(out_dir, model)

    def extra_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        if self.adversary is None:
            return {}, {}
        tensors, opt_meta = self.adversary.state_tensors()
        return tensors, {"adversary_optimizer": opt_meta}

    def restore_extra(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        if self.adversary is None:
            return
        where = str(self.out_dir / STATE_NAME)
        if "adversary_optimizer" not in meta:
            raise CheckpointError(f"{where}: holds no discriminator state to resume the adversarial loss from")
        try:
            self.adversary.load_state_tensors(tensors, meta["adversary_optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{where}: the saved discriminator does not fit ({e})") from None

    def state(self) -> dict:
        return {
            "modality": self.modality,
            "data_dir": str(self.data_dir.resolve()),
            "codec_config": plain(config_to_dict(self.codec_config)),
            "train_config": plain(self.cfg),
            "skipped_files": self.train_ds.skipped_files,
        }


def random_windows(a: torch.Tensor, b: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random window of ``length`` samples (0 or longer than the items: all) of each item of two (B, C, T)
    batches, drawn from torch's global RNG: ((B, C, length), (B, C, length))."""
    t = a.shape[-1]
    if length <= 0 or length >= t:
        return a, b
    start = torch.randint(0, t - length + 1, (a.shape[0],))
    idx = (start[:, None] + torch.arange(length)).to(a.device)  # (B, length)
    idx = idx[:, None, :].expand(-1, a.shape[1], -1)
    return a.gather(-1, idx), b.gather(-1, idx)


def code_usage(tokens: torch.Tensor, residual: bool, codebook_size: int) -> float:
    """Mean over quantizer stages of the fraction of codes used at least once in ``tokens``."""
    per_stage = tokens.movedim(1, 0).reshape(tokens.shape[1], -1) if residual else tokens.reshape(1, -1)
    return float(np.mean([row.unique().numel() / codebook_size for row in per_stage]))


def check_dead_code_threshold(codec_config: CodecConfig, cfg: TrainConfig, processes: int) -> None:
    """Warn when codes cannot stay alive: a code's EMA count settles near (vectors per update) / K when every
    code is used equally, so a dead-code threshold above that resets healthy codes at every step. Under residual
    quantizer dropout (probability p, n stages) the top stage updates only on the items that keep every stage,
    a fraction (1 - p) + p / n of them (``ResidualVectorQuantizer.dropout_stages``): its count is the one checked.
    Fine-tunes with frozen codebooks (``freeze_encoder`` / ``freeze_decoder``) update no counts and reset nothing:
    no warning."""
    if cfg.frozen_codebooks:
        return
    q, f = codec_config.quantizer, (codec_config.downsample if codec_config.modality == "image" else None)
    per_item = (cfg.crop // f) ** 2 if f else cfg.segment_samples // codec_config.hop
    top = (1.0 - q.quantizer_dropout) + q.quantizer_dropout / q.num_quantizers if q.num_quantizers > 1 else 1.0
    vectors = cfg.batch_size * processes * per_item * top
    mean_count = vectors / q.codebook_size
    if q.dead_code_threshold > 0.5 * mean_count:
        seen = ""
        if top < 1:
            seen = f" (the top of {q.num_quantizers} levels under quantizer dropout {q.quantizer_dropout:g})"
        warnings.warn(
            f"dead_code_threshold {q.dead_code_threshold} is high for {vectors:.0f} vectors per update{seen} and "
            f"{q.codebook_size} codes (about {mean_count:.2f} per code): healthy codes will be reset as dead; keep "
            f"it under {0.5 * mean_count:.2g} (about {0.2 * mean_count:.2g} leaves a margin) or use a larger batch",
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------------ configs
def _init_model(init) -> Codec:
    """The codec a run starts from: a ``Codec`` as it is, else loaded (run directory or bundled name) on the CPU."""
    return init if isinstance(init, Codec) else load(init, device="cpu")


def resolve_configs(
    modality: str,
    out_dir: str | Path,
    *,
    resume: bool = False,
    codec_overrides: dict | None = None,
    train_overrides: dict | None = None,
    init=None,
) -> tuple[CodecConfig, TrainConfig]:
    """The configs of a run: defaults (or, with ``resume``, the run's saved configs; with ``init``, that model's
    codec config) with overrides on top.

    Args:
        modality: "image" or "audio".
        out_dir: the run directory (read only when resuming).
        resume: start from the configs saved in ``out_dir``.
        codec_overrides: partial codec config dict (nested "quantizer" dict allowed).
        train_overrides: partial TrainConfig dict.
        init: a trained codec to start from (a ``Codec``, run directory or bundled name): its codec config is
            the base (overrides may change the training knobs in ``INIT_CHANGEABLE``, such as the quantizer's
            decay or dead-code threshold; ``train`` refuses any other change).

    Raises:
        CheckpointError: resume without a checkpoint; an ``init`` model that cannot be loaded.
        ValueError: unknown keys, bad values, or a "modality" override that contradicts ``modality``.
    """
    codec_overrides, train_overrides = dict(codec_overrides or {}), dict(train_overrides or {})
    if codec_overrides.get("modality", modality) != modality:
        raise ValueError(f"the codec config is for {codec_overrides['modality']!r} but --modality is {modality!r}")
    if resume and init is not None:
        raise ValueError("--init starts a new run from a model's weights; --resume continues a run: use one")
    if resume:
        meta = read_checkpoint_meta(out_dir)
        if meta["modality"] != modality:
            raise ValueError(f"{out_dir} holds a {meta['modality']} codec; cannot resume it as {modality}")
        base_codec, base_train = meta["codec_config"], meta["train_config"]
    elif init is not None:
        start = _init_model(init)
        if start.modality != modality:
            name = getattr(start, "name", "") or init
            raise ValueError(f"--init {name}: a codec for {start.modality}, not {modality}")
        base_codec, base_train = plain(start.config), plain(TrainConfig())
    else:
        base_codec, base_train = plain(default_codec_config(modality)), plain(TrainConfig())
    codec_config = config_from_dict(merge(base_codec, {**codec_overrides, "modality": modality}))
    return codec_config, train_config_from_dict(merge(base_train, train_overrides))


def _check_resume(meta, modality, data_dir, codec_config, train_config) -> tuple[CodecConfig, TrainConfig]:
    if meta["modality"] != modality:
        raise ValueError(f"the run holds a {meta['modality']} codec; cannot resume it as {modality}")
    # a setting added since the run was saved counts at its default, which is what the run trained with
    saved = plain(config_to_dict(config_from_dict(meta["codec_config"])))
    given = plain(config_to_dict(codec_config)) if codec_config is not None else saved
    diff = differences(saved, given)
    if diff:
        raise ValueError(f"cannot resume with another codec config; it differs in {', '.join(diff)}")
    saved = plain(train_config_from_dict(meta["train_config"]))
    given = plain(train_config) if train_config is not None else saved
    diff = [d for d in differences(saved, given) if d.split(" ")[0] not in RESUMABLE_CHANGES]
    if diff:
        raise ValueError(
            f"cannot resume with another train config; it differs in {', '.join(diff)} "
            f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change)"
        )
    if str(Path(data_dir).resolve()) != meta["data_dir"]:
        warnings.warn(f"resuming on {data_dir}; the run was trained on {meta['data_dir']}", stacklevel=3)
    return config_from_dict(meta["codec_config"]), train_config_from_dict(given)


def load_init_state(model: Codec, state: dict) -> None:
    """Load a start model's tensors into ``model``. A deeper encoder or decoder than the start model's is grown:
    an "stft" audio encoder's ``encoder_blocks`` or decoder's ``decoder_blocks`` (the start model's blocks come
    first, each new block starts with layer scale 0) or a "shuffle" image decoder's ``decoder_res_blocks`` (the new
    blocks of each stage follow the start model's, each with its last convolution at zero). Every new block starts
    as the identity, so the grown codec encodes and decodes exactly as the start model until it trains. ValueError
    for anything else that does not fit."""
    blocks = ("encoder.blocks.", "decoder.blocks.")  # ConvNeXt blocks of an "stft" audio codec
    grown = (*blocks, "decoder.grow.")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)  # shape mismatches raise here
        if unexpected or not all(k.startswith(grown) for k in missing):
            model.load_state_dict(state)  # raises with torch's description of the mismatch
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise ValueError(f"the init model's weights do not fit the codec config: {first}") from None
    with torch.no_grad():
        for name in {".".join(k.split(".")[:3]) for k in missing if k.startswith(blocks)}:
            model.get_submodule(name).gamma.zero_()  # "encoder.blocks.<i>" or "decoder.blocks.<i>": a new block
        for name in {".".join(k.split(".")[:4]) for k in missing if k.startswith("decoder.grow.")}:
            conv = model.get_submodule(name).conv2  # "decoder.grow.<stage>.<j>" of a new residual block
            conv.weight.zero_()
            conv.bias.zero_()


def config_changes(start: CodecConfig, codec_config: CodecConfig, allowed: set[str]) -> list[str]:
    """The differences of ``codec_config`` from the start model's config outside the ``allowed`` fields."""
    return [d for d in differences(plain(start), plain(codec_config)) if d.split(" ")[0] not in allowed]


# what a frozen-encoder run may change: knobs of the quantizer's own training, which is off
FROZEN_CHANGEABLE = {
    "quantizer.decay", "quantizer.dead_code_threshold", "quantizer.commitment_weight",
    "quantizer.quantizer_dropout", "quantizer.kmeans_init",
    *DECODER_FIELDS,
}  # fmt: skip


def _init_state(init, modality: str, codec_config: CodecConfig | None, frozen: bool) -> tuple[dict, CodecConfig]:
    """(the start model's tensors, the codec config: its own when none is given), after the checks. A frozen
    encoder must give exactly the start model's tokens: no change of padding, tiling or chunking either (they shape
    the tokens of big inputs)."""
    start = _init_model(init)
    if start.modality != modality:
        raise ValueError(f"init: a codec for {start.modality}, not {modality}")
    codec_config = codec_config or start.config
    changed = config_changes(start.config, codec_config, INIT_CHANGEABLE)
    if changed:
        raise ValueError(
            f"init: the codec config changes the start model's architecture ({'; '.join(changed)}); only "
            f"{', '.join(sorted(INIT_CHANGEABLE))} may change"
        )
    changed = config_changes(start.config, codec_config, FROZEN_CHANGEABLE) if frozen else []
    if changed:
        raise ValueError(
            f"freeze_encoder keeps the start model's tokens; the codec config changes {'; '.join(changed)}"
        )
    return {k: v.detach().cpu().clone() for k, v in start.state_dict().items()}, codec_config


# ------------------------------------------------------------------------------------------ entry point
def train(
    modality: str,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    codec_config: CodecConfig | None = None,
    train_config: TrainConfig | None = None,
    resume: bool = False,
    init=None,
    progress: bool = True,
) -> dict:
    """Train a codec on a folder of images or audio files.

    Args:
        modality: "image" or "audio".
        data_dir: the folder, scanned recursively; a hash of each path holds out ``val_fraction`` of the files.
        out_dir: the run directory (see ``codec.train.loop``); created if needed.
        codec_config: the model; None = the defaults (or, with ``resume``, the run's saved config).
        train_config: None = the defaults (or, with ``resume``, the run's saved config).
        resume: continue from the run's last checkpoint. The codec config and the train config (apart from
            RESUMABLE_CHANGES such as ``steps``) must equal the saved ones.
        init: start from a trained codec's weights (a ``Codec``, run directory or bundled name such as "image"),
            with a fresh optimizer and schedule: fine-tuning, e.g. the bundled model on your own data. Its
            codebooks are already initialised (no k-means); ``codec_config`` None means the model's own.
        progress: a progress bar on a terminal, or a plain line per log and evaluation step on stderr elsewhere
            (a log file); False: neither.

    Returns:
        Final metrics: "step", "skipped_files", the last training log as "train_*" (loss, psnr or si_snr,
        usage, ...) and the last evaluation as "eval_*" (psnr, or si_snr and mel_distance, usage, ...).

    Raises:
        CheckpointError: ``resume`` without a checkpoint, an unreadable one, or a fresh run in a directory
            that holds one.
        ValueError: configs that do not fit the modality or the saved run; bad settings; ``init`` together with
            ``resume``, or an ``init`` model whose weights do not fit ``codec_config``.
        FileNotFoundError: no data directory.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if modality not in ("image", "audio"):
        raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")
    if resume and init is not None:
        raise ValueError("init starts a new run from a model's weights; resume continues a run: use one")
    frozen = train_config is not None and train_config.freeze_encoder
    if frozen and init is None and not resume:
        raise ValueError("freeze_encoder trains the decoder of a trained codec: give init (e.g. --init image)")
    if train_config is not None and train_config.freeze_decoder and init is None and not resume:
        raise ValueError("freeze_decoder trains the encoder of a trained codec: give init (e.g. --init image)")
    init_state = None
    if init is not None:
        init_state, codec_config = _init_state(init, modality, codec_config, frozen)
    if resume:
        meta = read_checkpoint_meta(out_dir)
        codec_config, train_config = _check_resume(meta, modality, data_dir, codec_config, train_config)
    codec_config = codec_config or default_codec_config(modality)
    train_config = train_config or TrainConfig()
    if codec_config.modality != modality:
        raise ValueError(f"the codec config is for {codec_config.modality!r} data, not {modality!r}")
    task = CodecTask(data_dir, codec_config, train_config, init_state)
    out = run_training(task, out_dir, resume=resume, progress=progress)
    skipped = {**task.train_ds.skipped_files, **task.eval_ds.skipped_files}
    result = {"step": out["step"], "skipped_files": len(skipped)}
    result.update({f"train_{k}": v for k, v in out["train"].items() if k not in ("step", "kind")})
    result.update(
        {k if k == "eval_on" else f"eval_{k}": v for k, v in out["eval"].items() if k not in ("step", "kind")}
    )
    return result
