"""Token datasets: a folder of images or audio encoded by a frozen codec into sharded safetensors files.

Layout of a tokens directory::

    index.json               what made it (codec hash, layout), the file plan, and the finished shards
    shard_00000.safetensors  "tokens": every item's tokens, flattened and concatenated (int16, or int32 if K > 32768)
                             "offsets": (n + 1,) int64 start of each item; "shapes": (n, ndim) int64 token shapes

Items are whole files: an image is encoded whole (no crops), an audio file whole, at the codec's rate and channel
count. The prior trains on random windows of each item's raster sequence, so items need no common size, and it
sees the same tokens the entropy coder will code. Item names (paths relative to the data folder) are kept in
index.json; the training script holds out items by a hash of their names (``codec.train.data.split_files``).

``tokenize_dataset`` is resumable: the first run fixes the plan (sorted file list, ``shard_size`` files per
shard) in index.json; each shard is written atomically and then recorded in index.json, so a rerun skips the
finished shards and redoes at most the one that was interrupted. Unreadable files are skipped with a warning
and counted. Nothing is pickled.
"""

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from tqdm import tqdm

from codec.errors import CheckpointError, MediaError, ModelMismatchError
from codec.media import find_files, read_audio, read_image, to_audio_channels, to_image_channels
from codec.store.files import atomic_write_bytes, atomic_write_text
from codec.store.rundir import model_hash
from codec.train.data import SkippedFileWarning

INDEX_NAME = "index.json"
FORMAT = "vqcodec-tokens"
VERSION = 1
SHARD_SIZE = 256  # files per shard


@dataclass
class TokenItems:
    """The items of a tokens directory, in plan order.

    Attributes:
        meta: index.json without the shard list: codec_hash, modality, codebook_size, levels, residual.
        names: item names (paths relative to the data folder).
        tokens: one int64 tensor per item, shaped as the codec's ``encode`` gives it without the batch axis.
    """

    meta: dict
    names: list[str]
    tokens: list[torch.Tensor]


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def read_index(tokens_dir: str | Path) -> dict:
    """The parsed index.json of a tokens directory.

    Raises:
        CheckpointError: no index, unreadable JSON, or not a vqcodec tokens directory.
    """
    path = Path(tokens_dir) / INDEX_NAME
    if not path.is_file():
        raise CheckpointError(f"{tokens_dir}: not a tokens directory (no {INDEX_NAME}; run `codec tokenize` first)")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable index: {e}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
        raise CheckpointError(f"{path}: not a {FORMAT} v{VERSION} index")
    return index


def _load_item(codec_model, path: Path) -> torch.Tensor:
    """Encode one file whole: (h, w), (n_q, h, w) or (n_q, t) int64 tokens on the CPU."""
    if codec_model.modality == "image":
        x = to_image_channels(read_image(path).pixels, codec_model.channels)
    else:
        x = to_audio_channels(read_audio(path, sample_rate=codec_model.sample_rate).samples, codec_model.channels)
    return codec_model.encode(x[None].to(codec_model.device))[0].cpu()


def _shard_tensors(items: list[torch.Tensor], codebook_size: int, ndim: int) -> dict[str, torch.Tensor]:
    """A shard's tensors for items of ``ndim`` dimensions each."""
    dtype = torch.int16 if codebook_size <= 2**15 else torch.int32
    lengths = torch.tensor([0] + [t.numel() for t in items], dtype=torch.int64)
    return {
        "tokens": torch.cat([t.flatten() for t in items]).to(dtype) if items else torch.zeros(0, dtype=dtype),
        "offsets": lengths.cumsum(0),
        "shapes": torch.tensor([list(t.shape) for t in items], dtype=torch.int64).reshape(-1, ndim),
    }


def _encode_shard(codec_model, root: Path, files: list[str], bar) -> tuple[dict, list[str], dict[str, str]]:
    """Encode files into one shard's tensors; returns (tensors, names kept, {name: reason} skipped)."""
    names, items, skipped = [], [], {}
    for rel in files:
        try:
            items.append(_load_item(codec_model, root / rel))
            names.append(rel)
        except (MediaError, OSError) as e:
            skipped[rel] = e.reason if isinstance(e, MediaError) else str(e)
            warnings.warn(f"{root / rel}: {skipped[rel]}; skipping this file", SkippedFileWarning, stacklevel=3)
        bar.update(1)
    ndim = 2 if codec_model.modality == "audio" or not codec_model.residual else 3
    return _shard_tensors(items, codec_model.codebook_size, ndim), names, skipped


def _new_index(codec_hash: str, modality: str, codebook_size: int, levels: int, residual: bool, **extra) -> dict:
    return dict(
        format=FORMAT,
        version=VERSION,
        codec_hash=codec_hash,
        modality=modality,
        codebook_size=codebook_size,
        levels=levels,
        residual=residual,
        **extra,
        shards={},
    )


def write_tokens(out_dir: str | Path, names: list[str], tokens: list[torch.Tensor], **layout) -> None:
    """Write already-made tokens as a one-shard tokens directory (synthetic data, tests, other tokenizers).

    Args:
        out_dir: the directory (created if needed; must not hold a tokens index yet).
        names: one name per item (held-out items are chosen by a hash of it).
        tokens: one integer tensor per item, shaped as a codec's ``encode`` gives it without the batch axis.
        layout: codec_hash, modality, codebook_size, levels and residual, as in a PriorConfig.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / INDEX_NAME).exists():
        raise ValueError(f"{out} already holds tokens")
    index = _new_index(**layout, files=list(names), shard_size=len(names))
    tensors = _shard_tensors(list(tokens), index["codebook_size"], tokens[0].ndim)
    atomic_write_bytes(out / _shard_name(0), save(tensors, metadata={"format": FORMAT}))
    index["shards"][_shard_name(0)] = dict(items=list(names), skipped={}, tokens=int(tensors["tokens"].numel()))
    atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")


def tokenize_dataset(
    codec_model,
    data_dir: str | Path,
    out_dir: str | Path,
    shard_size: int = SHARD_SIZE,
    progress: bool = True,
) -> dict:
    """Encode every image or audio file under ``data_dir`` into token shards in ``out_dir`` (resumable).

    Args:
        codec_model: the frozen codec (``codec.load``); its modality picks the files.
        data_dir: folder scanned recursively (``codec.media.find_files``).
        out_dir: tokens directory, created if needed. If it holds an unfinished run with the same codec, the
            run is resumed: finished shards are kept.
        shard_size: files per shard (used for a new directory; a resumed run keeps its own).
        progress: show a tqdm progress bar.

    Returns:
        {"items": tokenized items, "skipped": unreadable files, "tokens": total tokens, "shards": shard count,
        "resumed_shards": shards already done before this call}.

    Raises:
        ModelMismatchError: ``out_dir`` was started with another codec.
        ValueError: no media files under ``data_dir``, or a bad shard_size.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    root, out = Path(data_dir), Path(out_dir)
    try:
        files = find_files(root, codec_model.modality)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    digest = model_hash(codec_model)
    if (out / INDEX_NAME).exists():
        index = read_index(out)
        if index["codec_hash"] != digest:
            raise ModelMismatchError(
                f"{out} holds tokens of another codec ({index['codec_hash'][:12]}, not {digest[:12]}); "
                "use a new --out directory"
            )
        new = sorted(set(files) - set(index["files"]))
        if new:
            msg = f"{len(new)} files under {root} are not in the plan of {out}; tokenize them into a new directory"
            warnings.warn(msg, stacklevel=2)
    else:
        index = _new_index(
            digest,
            codec_model.modality,
            codec_model.codebook_size,
            codec_model.num_quantizers if codec_model.residual else 1,
            codec_model.residual,
            data_dir=str(root),
            shard_size=shard_size,
            files=files,
        )
        atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    plan, size = index["files"], index["shard_size"]
    chunks = [plan[a : a + size] for a in range(0, len(plan), size)]
    done = {name for name in index["shards"] if (out / name).is_file()}
    todo = [i for i in range(len(chunks)) if _shard_name(i) not in done]
    with tqdm(total=sum(len(chunks[i]) for i in todo), desc="tokenize", unit="file", disable=not progress) as bar:
        for i in todo:
            tensors, names, skipped = _encode_shard(codec_model, root, chunks[i], bar)
            atomic_write_bytes(out / _shard_name(i), save(tensors, metadata={"format": FORMAT}))
            index["shards"][_shard_name(i)] = dict(items=names, skipped=skipped, tokens=int(tensors["tokens"].numel()))
            atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    shards = index["shards"].values()
    return dict(
        items=sum(len(s["items"]) for s in shards),
        skipped=sum(len(s["skipped"]) for s in shards),
        tokens=sum(s["tokens"] for s in shards),
        shards=len(index["shards"]),
        resumed_shards=len(chunks) - len(todo),
    )


def load_tokens(tokens_dir: str | Path) -> TokenItems:
    """Read every finished shard of a tokens directory.

    Raises:
        CheckpointError: missing index or shard, unreadable shard, or a shard that disagrees with the index.
    """
    tokens_dir = Path(tokens_dir)
    index = read_index(tokens_dir)
    names, tokens = [], []
    for shard, info in sorted(index["shards"].items()):
        try:
            t = load_file(tokens_dir / shard)
        except Exception as e:  # safetensors raises several kinds on a damaged file
            raise CheckpointError(f"{tokens_dir / shard}: unreadable shard: {e}") from None
        offsets, shapes = t["offsets"].tolist(), t["shapes"].tolist()
        if len(shapes) != len(info["items"]) or len(offsets) != len(shapes) + 1 or offsets[-1] != t["tokens"].numel():
            raise CheckpointError(f"{tokens_dir / shard}: shard does not match {INDEX_NAME}")
        flat = t["tokens"].to(torch.int64)
        for name, a, b, shape in zip(info["items"], offsets, offsets[1:], shapes):
            names.append(name)
            tokens.append(flat[a:b].reshape(shape))
    meta = {k: v for k, v in index.items() if k not in ("shards", "files")}
    return TokenItems(meta=meta, names=names, tokens=tokens)
