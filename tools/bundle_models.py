"""Package a trained codec, its prior and its context model as a bundled model inside the package
(codec/models/NAME, with NAME/prior and NAME/context), in fp16.

    python tools/bundle_models.py --codec runs/image --prior runs/image/prior --context runs/image/context --name image
    python tools/bundle_models.py --codec audio --prior audio/prior --context runs/audio-ctx --name audio

(the second re-bundles the bundled audio codec and prior, which fp16 leaves unchanged, with a new context model).

Weights are stored as float16 safetensors (loading casts them back to the model's float32), the codec's without
its codebooks' EMA sums (training state, rebuilt on loading as embed x cluster_size: 1 MB less for the audio
codec, 0.8 MB for the image codec; a codec already in float16, a bundled one, is re-bundled as it is); the context
model then in its compact form (``save_context(compact=True)``: int8 weight rows with power-of-two scales, checked to
derive the same integer network as its float16 weights), about 60% of the float16 bytes. Rounding the codec
changes its hash, so the prior's (and the context model's) ``codec_hash`` is rewritten to the rounded codec's: the
prior is then accepted by
``codec.load(NAME)``'s model and by ``compress``/``decompress``. The script first checks that the prior was trained
on the given codec, then the round trip (load both, check the new pairing), and prints the sizes; ``--max-mb``
guards the total of every bundled model, counted before the old bundle of that name is replaced (nothing is
replaced when over the limit, and no temporary folder is left behind).

A codec fine-tuned with a frozen encoder (``codec train --init image --freeze-encoder``) gives exactly its start
model's tokens, so the start model's prior serves it: ``--tokens-of image`` names that start model. The script
checks that the prior was trained on it and that the new codec's config and every tensor outside its decoder
equal the start model's, bit for bit, before it pairs the prior with the new codec:

    python tools/bundle_models.py --codec runs/img-dec --prior image/prior --tokens-of image --name image
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "codec" / "models"


def to_fp16(src: Path, dst: Path, rebuilt: frozenset[str] = frozenset()) -> None:
    """``src``'s weights rounded to float16 into ``dst``, without the tensors named in ``rebuilt`` (which loading
    rebuilds: the codec's codebook EMA sums) unless they are float16 already: a bundled codec is re-bundled as it
    is, so its hash, and every file made with it, stays valid."""
    state = load_file(src / "model.safetensors")
    if not all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point()):
        state = {k: v for k, v in state.items() if k not in rebuilt}
    half = {k: v.half().contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}
    dst.mkdir(parents=True, exist_ok=True)
    save_file(half, dst / "model.safetensors")


def same_tokens(new, start) -> None:
    """ValueError unless ``new`` encodes exactly as ``start``: configs equal outside the decoder-only fields
    (``DECODER_FIELDS``, such as a grown decoder's ``decoder_blocks``) and equal tensors outside the decoder."""
    from codec.core.config import DECODER_FIELDS
    from codec.train.codec_task import config_changes

    changed = config_changes(start.config, new.config, DECODER_FIELDS)
    if changed:
        raise ValueError(f"--tokens-of: the codec configs differ outside the decoder ({'; '.join(changed)})")
    a, b = new.state_dict(), start.state_dict()
    differ = [k for k in b if not k.startswith("decoder.") and not bool((a[k] == b[k]).all())]
    if differ:
        raise ValueError(f"--tokens-of: the encoders or codebooks differ ({', '.join(differ[:3])}, ...)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", required=True, help="codec run directory (or a bundled name)")
    ap.add_argument("--prior", required=True, help="prior run directory trained on that codec's tokens")
    ap.add_argument("--name", required=True, help="bundled name: codec/models/NAME")
    ap.add_argument("--context", help="context model run directory trained on that codec's tokens (optional)")
    ap.add_argument(
        "--tokens-of",
        metavar="MODEL",
        help="the codec the prior was trained on, whose tokens --codec gives exactly (a frozen-encoder fine-tune)",
    )
    ap.add_argument("--max-mb", type=float, default=40.0, help="limit on all bundled weights together")
    ap.add_argument("--dest", default=str(BUNDLED), help="folder of the bundled models (default codec/models)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO))
    import codec
    from codec.bitstream.context_coding import context_hash
    from codec.store import registry
    from codec.store.rundir import rebuilt_on_load
    from prior.checkpoint import load_prior
    from prior.context_checkpoint import load_context, save_context

    dest = Path(args.dest)
    out = dest / args.name
    tmp = dest / f".{args.name}.tmp"
    # the prior must belong to this codec before its pairing is rewritten for the rounded weights
    try:
        codec_dir = registry.model_dir(args.codec)  # a run directory or a bundled name
        original = codec.load_model(codec_dir, device="cpu")
        tokens_of = codec.load_model(registry.model_dir(args.tokens_of), device="cpu") if args.tokens_of else original
        load_prior(args.prior, codec=tokens_of, device="cpu")  # ModelMismatchError for another codec's prior
        context_dir = registry.context_dir(args.context) if args.context else None
        if context_dir is not None:
            load_context(context_dir, codec=tokens_of, device="cpu")
        if args.tokens_of:
            same_tokens(original, tokens_of)
    except (codec.CheckpointError, codec.ModelMismatchError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prior_dir = registry.prior_dir(args.prior)  # a bundled name ("image/prior") or a run directory
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        to_fp16(codec_dir, tmp, rebuilt=rebuilt_on_load(original))
        shutil.copy(codec_dir / "config.json", tmp / "config.json")
        rounded = codec.load_model(tmp, device="cpu")
        new_hash = codec.model_hash(rounded)
        to_fp16(prior_dir, tmp / "prior")
        prior_config = json.loads((prior_dir / "config.json").read_text())
        target = prior_config.get("prior", prior_config)
        target["codec_hash"] = new_hash
        (tmp / "prior" / "config.json").write_text(json.dumps(prior_config, indent=2) + "\n")
        load_prior(tmp / "prior", codec=rounded, device="cpu")  # the rewritten pairing loads
        if context_dir is not None:
            to_fp16(context_dir, tmp / "context")
            context_config = json.loads((context_dir / "config.json").read_text())
            context_config["codec_hash"] = new_hash
            (tmp / "context" / "config.json").write_text(json.dumps(context_config, indent=2) + "\n")
            half = load_context(tmp / "context", codec=rounded, device="cpu")
            save_context(tmp / "context", half, compact=True)  # 8-bit rows: the same integer network, fewer bytes
            compact = load_context(tmp / "context", codec=rounded, device="cpu")
            if context_hash(compact) != context_hash(half):
                raise RuntimeError("the compact context model derives another integer network")  # never expected

        # the size guard counts the new bundle in place of the one it replaces, before anything is replaced
        others = [p for p in dest.rglob("*.safetensors") if out not in p.parents and tmp not in p.parents]
        total = sum(p.stat().st_size for p in [*others, *tmp.rglob("*.safetensors")])
        for p in sorted(tmp.rglob("*.safetensors")):
            print(f"{out / p.relative_to(tmp)}: {p.stat().st_size / 2**20:.2f} MiB")
        print(f"codec hash {new_hash[:12]}; all bundled weights: {total / 2**20:.2f} MiB (limit {args.max_mb} MB)")
        if total > args.max_mb * 1e6:
            print(f"over the limit: {out} left as it was", file=sys.stderr)
            return 1
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
