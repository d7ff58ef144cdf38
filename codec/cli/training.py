"""The training subcommands of the ``codec`` CLI: ``train`` (a codec), ``tokenize`` and ``train-prior`` (a prior).

Argument parsing only at import; each command imports the training code when it runs (``codec --help`` stays
fast).
"""

import argparse
import json
import os

from codec.cli.common import add_quiet, positive_int, refine_steps, report, show_progress

TRAIN_EPILOG = """\
examples:
  codec train --modality image --data photos/ --out runs/img
  codec train --modality audio --data speech/ --out runs/speech --config small.json --steps 20000
  codec train --modality image --data photos/ --out runs/img --resume --steps 200000
  codec train --modality image --data photos/ --out runs/img-ft --init image --steps 2000 --lr 1e-4
  accelerate launch --multi_gpu --num_processes 4 -m codec.cli train --modality image --data photos/ --out runs/img
  torchrun --nproc-per-node 2 -m codec.cli train --modality audio --data speech/ --out runs/speech

--config FILE is a JSON object with optional "codec" and "train" sections; each is a partial dict that
overrides the defaults (or, with --resume, the run's saved settings), e.g.
  {"codec": {"base_channels": 32, "quantizer": {"codebook_size": 512}}, "train": {"batch_size": 8}}
Command-line flags override the file. With --resume only steps, eval_every, eval_items, sample_items,
checkpoint_every, log_every, num_workers and mixed_precision may change.
"""


TOKENIZE_EXAMPLES = """examples:
  codec tokenize --codec runs/image --data data/images --out tokens/images
  codec tokenize --codec runs/audio --data data/speech --out tokens/speech   # rerun to resume
  torchrun --nproc-per-node 8 -m codec.cli tokenize --codec runs/image --data data/images --out tokens/images
  accelerate launch --num_processes 4 -m codec.cli tokenize --codec audio --data speech/ --out tokens/speech

Under torchrun / accelerate launch each process (one per GPU: cuda:LOCAL_RANK; or CPU processes, over gloo)
takes its share of the shards; on several machines --out must be a folder they share. Process 0 merges the
shards into one index at the end. A rerun, with any number of processes, resumes.
"""

TRAIN_PRIOR_EXAMPLES = """examples:
  codec train-prior --tokens tokens/images --out priors/images
  codec train-prior --context --tokens tokens/images --out runs/img/context   # the fast entropy model
  codec train-prior --tokens tokens/images --out priors/images --steps 50000 --resume
  codec train-prior --tokens tokens/speech --out priors/speech --config prior.json

--config FILE is JSON: {"prior": {"dim": 384, "depth": 8, "context": 2048}, "train": {"batch_size": 32}}
(PriorConfig and TrainPriorConfig fields; the token layout always comes from --tokens). With --context the
sections hold ContextConfig and TrainContextConfig fields:
  {"prior": {"hidden": 96, "kernel": 5}, "train": {"crop": 32}}.
A codec uses the context model stored in RUN_DIR/context for coding when there is one (many times faster than the
Transformer; see README), and the Transformer in RUN_DIR/prior for sampling.
"""


def register(subparsers) -> None:
    """Register ``train``, ``tokenize`` and ``train-prior``."""
    raw = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "train",
        help="train a codec on a folder of images or audio files",
        description="Train a codec on a folder of images or audio files (CPU, GPU, or many of them through "
        "accelerate launch / torchrun). Writes checkpoints, metrics.jsonl and samples/ into the run directory.",
        epilog=TRAIN_EPILOG,
        formatter_class=raw,
    )
    p.add_argument("--modality", required=True, choices=("image", "audio"), help="what the data folder holds")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of media files, scanned recursively")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory for checkpoints and logs")
    p.add_argument("--config", metavar="FILE", help='JSON file with optional "codec" and "train" sections')
    p.add_argument("--steps", type=int, metavar="N", help="total optimizer steps (default 100000)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in RUN_DIR")
    p.add_argument(
        "--max-minutes",
        type=float,
        metavar="M",
        help="stop after about M minutes of this call's wall time (evaluated and checkpointed; --resume goes on)",
    )
    p.add_argument(
        "--init",
        metavar="MODEL",
        help="start from a trained codec's weights (run directory or bundled name, e.g. image): fine-tuning "
        "with a fresh optimizer; its config is the base of the codec section",
    )
    p.add_argument(
        "--freeze-encoder",
        action="store_true",
        default=None,
        help="with --init: train the decoder only; the tokens stay the start model's, so its prior stays valid",
    )
    p.add_argument(
        "--freeze-decoder",
        action="store_true",
        default=None,
        help="with --init: train the encoder only, against the start model's decoder and codebooks: the tokens "
        "change, what each code means does not (fine-tune the priors with train-prior --init)",
    )
    p.add_argument("--batch-size", type=int, metavar="N", help="items per process and micro-batch (default 16)")
    p.add_argument("--lr", type=float, metavar="LR", help="peak learning rate (default 3e-4)")
    p.add_argument(
        "--mixed-precision", choices=("no", "fp16", "bf16"), help="autocast precision (default no; fp16 needs CUDA)"
    )
    p.add_argument("--seed", type=int, help="seed of the whole run (default 0)")
    p.add_argument("--num-workers", type=int, metavar="N", help="DataLoader worker processes (default 0)")
    p.add_argument("--val-fraction", type=float, metavar="F", help="share of files held out (default 0.05)")
    add_quiet(p)
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "tokenize",
        help="encode a folder of images or audio into token shards for prior training",
        description="Encode every image or audio file under --data (whole files) with a frozen codec into "
        "sharded safetensors token files. Resumable: rerun the same command to finish an interrupted run. Runs "
        "in one process or under torchrun / accelerate launch, each process taking its share of the files.",
        epilog=TOKENIZE_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--codec", required=True, metavar="MODEL", help="codec run directory or bundled name (image, audio)")
    p.add_argument("--data", required=True, metavar="DIR", help="folder of images or audio (scanned recursively)")
    p.add_argument("--out", required=True, metavar="TOKENS_DIR", help="output tokens directory")
    p.add_argument("--shard-size", type=positive_int, default=256, help="files per shard (default 256)")
    p.add_argument(
        "--refine",
        type=refine_steps,
        default=0,
        metavar="STEPS",
        help="encode each file with STEPS steps of the encoder-side search, as `codec encode --refine` does: the "
        "tokens an entropy model for searched files should learn (slower; default 0)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda or cuda:N (default: cuda when available; cuda:LOCAL_RANK under a launcher)",
    )
    add_quiet(p)
    p.set_defaults(func=cmd_tokenize)

    p = subparsers.add_parser(
        "train-prior",
        help="train a Transformer prior (or, with --context, a context model) on token shards",
        description="Train a TokenPrior with accelerate on a tokens directory made by `codec tokenize`: AdamW "
        "with warmup and cosine decay, gradient clipping, mixed precision on GPU, periodic held-out bits/token "
        "and atomic checkpoints. Launch with `accelerate launch` for several GPUs.",
        epilog=TRAIN_PRIOR_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--tokens", required=True, metavar="TOKENS_DIR", help="tokens directory from `codec tokenize`")
    p.add_argument("--out", required=True, metavar="PRIOR_DIR", help="run directory for the prior")
    p.add_argument(
        "--context",
        action="store_true",
        help="train a context model (the parallel entropy model used for coding) instead of a Transformer prior",
    )
    p.add_argument("--config", metavar="FILE", help='JSON overrides: {"prior": {...}, "train": {...}}')
    p.add_argument("--steps", type=positive_int, help="total optimisation steps (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument(
        "--max-minutes", type=float, metavar="M", help="stop after about M minutes of this call (checkpointed)"
    )
    p.add_argument(
        "--init",
        metavar="PRIOR",
        help="start from a trained prior's weights and architecture (run directory, bundled name such as image, "
        "or a codec run directory holding prior/); it must belong to the codec of --tokens",
    )
    add_quiet(p)
    p.set_defaults(func=cmd_train_prior)


def cmd_train(args: argparse.Namespace) -> int:
    from codec.train.codec_task import resolve_configs, train  # torch and accelerate load only when needed
    from codec.train.config import read_config_file
    from codec.train.memory import keep_freed_memory

    keep_freed_memory()  # no page faults on every step's activations (codec.train.memory)

    sections = read_config_file(args.config, ("codec", "train")) if args.config else {}
    flags = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "mixed_precision": args.mixed_precision,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "val_fraction": args.val_fraction,
        "max_minutes": args.max_minutes,
        "freeze_encoder": args.freeze_encoder,
        "freeze_decoder": args.freeze_decoder,
    }
    train_overrides = {**sections.get("train", {}), **{k: v for k, v in flags.items() if v is not None}}
    init = None
    if args.init:  # loaded once, for its config and then its weights
        from codec.core.checkpoint import load

        init = load(args.init, device="cpu")
    codec_config, train_config = resolve_configs(
        args.modality,
        args.out,
        resume=args.resume,
        codec_overrides=sections.get("codec"),
        train_overrides=train_overrides,
        init=init,
    )
    metrics = train(
        args.modality, args.data, args.out, codec_config, train_config, args.resume, init, progress=not args.quiet
    )
    if int(os.environ.get("RANK", "0")) == 0 and not args.quiet:  # one summary line, from the main process
        print(json.dumps(metrics))
    return 0


def cmd_tokenize(args) -> dict:
    import torch.distributed as dist

    from codec.core import distributed
    from codec.core.checkpoint import load
    from prior.data import tokenize_dataset

    device = distributed.process_device(args.device)  # a bad --device fails before any process group forms
    created = distributed.join_launched_group()
    try:
        model = load(args.codec, device=device)
        summary = tokenize_dataset(
            model, args.data, args.out, shard_size=args.shard_size, progress=show_progress(args), refine=args.refine
        )
        main = distributed.rank() == 0
    finally:
        if created:
            dist.destroy_process_group()
    if main:  # one report, from process 0
        processes = f", {summary['processes']} processes" if summary["processes"] > 1 else ""
        report(
            args,
            f"tokenized {summary['items']} files into {summary['shards']} shards in {args.out} "
            f"({summary['tokens']} tokens, {summary['skipped']} unreadable files skipped, "
            f"{summary['resumed_shards']} shards already done{processes})",
        )
    return summary


def cmd_train_prior(args) -> dict:
    from codec.train.config import read_config_file
    from codec.train.memory import keep_freed_memory

    keep_freed_memory()

    if args.context:
        from prior.context_train import train_context as train_prior
    else:
        from prior.train import train_prior

    overrides = read_config_file(args.config, ("prior", "train")) if args.config else {}
    train = dict(overrides.get("train", {}))
    if args.steps is not None:
        train["steps"] = args.steps
    if args.max_minutes is not None:
        train["max_minutes"] = args.max_minutes
    summary = train_prior(
        args.tokens, args.out, overrides.get("prior", {}), train, args.resume, progress=not args.quiet, init=args.init
    )
    report(
        args,
        f"{'context model' if args.context else 'prior'} in {summary['out']} at step {summary['step']}: "
        f"held-out {summary['val_bits']:.4f} bits/token "
        f"(log2 K = {summary['log2_K']:g})",
    )
    return summary
