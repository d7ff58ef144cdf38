"""Token datasets: a folder of images or audio encoded by a frozen codec into sharded safetensors files.

Layout of a tokens directory::

    index.json               what made it (codec hash, layout), the file plan, and the finished shards
    shard_00000.safetensors  "tokens": every item's tokens, flattened and concatenated (int16, or int32 if K > 32768)
                             "offsets": (n + 1,) int64 start of each item; "shapes": (n, ndim) int64 token shapes;
                             its metadata lists the items it holds and the files skipped ("items", "skipped": JSON)

Items are whole files: an image is encoded whole (no crops), an audio file whole, at the codec's rate and channel
count, through ``Codec.tokenize`` (files of one size, and equal tiles or chunks, run as one batch; tokens equal
``encode``'s but for rare near-ties in float rounding). The prior trains on random windows of each item's raster
sequence, so items need no common size. Item names (paths relative to the data folder) are kept in index.json;
the training script holds out items by a hash of their names (``codec.train.data.split_files``).

``tokenize_dataset`` is resumable and runs in one process or many (``torchrun`` / ``accelerate launch``: several
GPUs, or machines sharing the output folder). The first run fixes the plan (sorted file list, ``shard_size``
files per shard) in index.json, written by process 0; the shards not finished yet are dealt out round-robin, and
each process writes its own, atomically, each one describing itself. At the end process 0 merges every shard's
record into index.json. A rerun with any number of processes skips the shards already written and redoes at
most the one each process was writing. The tokens do not depend on the number of processes. Unreadable files
are skipped with a warning and counted. Nothing is pickled.
"""

import json
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from tqdm import tqdm

from codec.core import distributed
from codec.core.refine import check_refine
from codec.errors import CheckpointError, MediaError, ModelMismatchError
from codec.media import find_files, read_audio, read_image, to_audio_channels, to_image_channels
from codec.store.files import atomic_write_bytes, atomic_write_text
from codec.store.rundir import model_hash
from codec.train.data import SkippedFileWarning

INDEX_NAME = "index.json"
FORMAT = "vqcodec-tokens"
VERSION = 1
SHARD_SIZE = 256  # files per shard
BATCH_FILES = 8  # files per call of Codec.tokenize at most
BATCH_SAMPLES = 32 << 20  # and input values per call (128 MiB of float32) unless one file holds more
READ_THREADS = 4  # files are read (decoded, resampled) ahead in threads while a batch is encoded


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


def _read_item(codec_model, path: Path) -> torch.Tensor:
    """One file as the codec's input: image (C, H, W) in [0, 1] or audio (C, T) at its rate, on the CPU."""
    if codec_model.modality == "image":
        return to_image_channels(read_image(path).pixels, codec_model.channels)
    return to_audio_channels(read_audio(path, sample_rate=codec_model.sample_rate).samples, codec_model.channels)


def _read_or_reason(codec_model, path: Path) -> torch.Tensor | str:
    try:
        return _read_item(codec_model, path)
    except (MediaError, OSError) as e:
        return e.reason if isinstance(e, MediaError) else str(e)


def _shard_tensors(items: list[torch.Tensor], codebook_size: int, ndim: int) -> dict[str, torch.Tensor]:
    """A shard's tensors for items of ``ndim`` dimensions each."""
    dtype = torch.int16 if codebook_size <= 2**15 else torch.int32
    lengths = torch.tensor([0] + [t.numel() for t in items], dtype=torch.int64)
    return {
        "tokens": torch.cat([t.flatten() for t in items]).to(dtype) if items else torch.zeros(0, dtype=dtype),
        "offsets": lengths.cumsum(0),
        "shapes": torch.tensor([list(t.shape) for t in items], dtype=torch.int64).reshape(-1, ndim),
    }


def _shard_bytes(tensors: dict[str, torch.Tensor], names: list[str], skipped: dict[str, str]) -> bytes:
    """A shard file: its tensors, and its record (items, skipped files) in the metadata."""
    return save(tensors, metadata={"format": FORMAT, "items": json.dumps(names), "skipped": json.dumps(skipped)})


def _shard_record(path: Path) -> dict | None:
    """{"items", "skipped", "tokens"} from a shard file's header (tensors are not read), or None."""
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            tokens = f.get_slice("tokens").get_shape()[0]
        return dict(items=json.loads(meta["items"]), skipped=json.loads(meta["skipped"]), tokens=int(tokens))
    except Exception:  # absent, foreign or damaged: not a finished shard
        return None


def _finished(out: Path, index: dict, chunks: list[list[str]]) -> dict[int, dict]:
    """{shard number: record} of the shards already written for this plan (their files as the record says)."""
    done = {}
    for i, chunk in enumerate(chunks):
        path = out / _shard_name(i)
        if not path.is_file():
            continue
        record = _shard_record(path) or index["shards"].get(_shard_name(i))  # the index: shards of older versions
        if record is not None and sorted([*record["items"], *record["skipped"]]) == sorted(chunk):
            done[i] = record
    return done


def _encode_files(
    codec_model, root: Path, files: list[str], bar, refine: int = 0
) -> tuple[list, list[str], dict[str, str]]:
    """Tokens (CPU) of the readable files, in order; returns (tokens, names kept, {name: reason} skipped).

    Files are read ahead in threads and encoded ``BATCH_FILES`` (or ``BATCH_SAMPLES`` values) at a time, with
    ``refine`` steps of the encoder-side search (``codec.core.refine``).
    """
    tokens, names, skipped = [], [], {}

    def encode(batch: list[tuple[str, torch.Tensor]]) -> None:
        try:
            out = codec_model.tokenize([x for _, x in batch], refine=refine)
        except ValueError:  # find the item the codec refuses; encode the others
            out = []
            for rel, x in batch:
                try:
                    out += codec_model.tokenize([x], refine=refine)
                except ValueError as e:
                    skip(rel, str(e).removeprefix("items[0]: "))
                    out.append(None)
        for (rel, _), t in zip(batch, out):
            if t is not None:
                names.append(rel)
                tokens.append(t.cpu())

    def skip(rel: str, reason: str) -> None:
        skipped[rel] = reason
        warnings.warn(f"{root / rel}: {reason}; skipping this file", SkippedFileWarning, stacklevel=4)

    pool, pending, ahead = ThreadPoolExecutor(READ_THREADS), iter(files), deque()

    def read_ahead() -> None:  # at most 2 * BATCH_FILES files read but not encoded yet
        while len(ahead) < 2 * BATCH_FILES and (rel := next(pending, None)) is not None:
            ahead.append((rel, pool.submit(_read_or_reason, codec_model, root / rel)))

    try:
        read_ahead()
        batch, values = [], 0
        while ahead:
            rel, future = ahead.popleft()
            item = future.result()
            read_ahead()
            if isinstance(item, str):
                skip(rel, item)
                bar.update(1)
            else:
                batch.append((rel, item))
                values += item.numel()
            if batch and (len(batch) >= BATCH_FILES or values >= BATCH_SAMPLES or not ahead):
                encode(batch)
                bar.update(len(batch))
                batch, values = [], 0
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return tokens, names, skipped


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


def _write_index(out: Path, index: dict) -> None:
    atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")


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
    atomic_write_bytes(out / _shard_name(0), _shard_bytes(tensors, list(names), {}))
    index["shards"][_shard_name(0)] = dict(items=list(names), skipped={}, tokens=int(tensors["tokens"].numel()))
    _write_index(out, index)


def _plan(codec_model, root: Path, out: Path, shard_size: int, refine: int = 0) -> dict:
    """The index of ``out``: the existing plan (checked against the codec) or a new one, written."""
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
        if index.get("refine", 0) != refine:
            raise ValueError(
                f"{out} holds tokens made with refine={index.get('refine', 0)}, not {refine}; use a new --out directory"
            )
        new = sorted(set(files) - set(index["files"]))
        if new:
            msg = f"{len(new)} files under {root} are not in the plan of {out}; tokenize them into a new directory"
            warnings.warn(msg, stacklevel=3)
        return index
    index = _new_index(
        digest,
        codec_model.modality,
        codec_model.codebook_size,
        codec_model.num_quantizers if codec_model.residual else 1,
        codec_model.residual,
        data_dir=str(root),
        shard_size=shard_size,
        refine=refine,
        files=files,
    )
    _write_index(out, index)
    return index


def _plan_on_rank0(codec_model, root: Path, out: Path, shard_size: int, refine: int = 0) -> dict:
    """``_plan`` made by process 0 alone; every process then reads it. An error there is raised on every process
    (its own message on process 0), never a hang."""
    error = None
    if distributed.rank() == 0:
        try:
            _plan(codec_model, root, out, shard_size, refine)
        except BaseException as e:  # noqa: BLE001 (re-raised below, after the others heard of it)
            error = e
    if not distributed.all_agree(error is None):
        if error is not None:
            raise error
        raise CheckpointError(f"{out}: process 0 could not prepare the tokens directory (its error is in its log)")
    return read_index(out)


def tokenize_dataset(
    codec_model,
    data_dir: str | Path,
    out_dir: str | Path,
    shard_size: int = SHARD_SIZE,
    progress: bool = True,
    refine: int = 0,
) -> dict:
    """Encode every image or audio file under ``data_dir`` into token shards in ``out_dir`` (resumable).

    In one process, or in each of the processes ``torchrun`` / ``accelerate launch`` started (after
    ``codec.core.distributed.join_launched_group``), each taking its share of the shards; see the module
    docstring. Every process must call it with the same arguments.

    Args:
        codec_model: the frozen codec (``codec.load``), on this process's device; its modality picks the files.
        data_dir: folder scanned recursively (``codec.media.find_files``).
        out_dir: tokens directory, created if needed. If it holds an unfinished run with the same codec, the
            run is resumed: finished shards are kept.
        shard_size: files per shard (used for a new directory; a resumed run keeps its own).
        progress: show a tqdm progress bar (process 0's share).
        refine: steps of the encoder-side search per file (``Codec.tokenize(..., refine=)``): the tokens the
            files would have with ``codec encode --refine``, to train an entropy model on. Recorded in the index;
            resuming with another value is refused.

    Returns:
        {"items": tokenized items, "skipped": unreadable files, "tokens": total tokens, "shards": shard count,
        "resumed_shards": shards already done before this call, "processes": processes that shared the work},
        the same on every process.

    Raises:
        ModelMismatchError: ``out_dir`` was started with another codec.
        ValueError: no media files under ``data_dir``, a bad shard_size or refine, or ``out_dir`` started with
            another refine.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    root, out = Path(data_dir), Path(out_dir)
    rank, world = distributed.rank(), distributed.world_size()
    index = _plan_on_rank0(codec_model, root, out, shard_size, check_refine(refine))
    plan, size = index["files"], index["shard_size"]
    chunks = [plan[a : a + size] for a in range(0, len(plan), size)]
    resumed = _finished(out, index, chunks)
    distributed.barrier()  # every process has seen the same finished shards before any writes another
    mine = [i for i in range(len(chunks)) if i not in resumed][rank::world]
    ndim = 2 if codec_model.modality == "audio" or not codec_model.residual else 3
    desc = "tokenize" if world == 1 else f"tokenize (process 0 of {world})"
    total = sum(len(chunks[i]) for i in mine)
    with tqdm(total=total, desc=desc, unit="file", disable=not progress or rank != 0) as bar:
        for i in mine:
            tokens, names, skipped = _encode_files(codec_model, root, chunks[i], bar, refine)
            tensors = _shard_tensors(tokens, codec_model.codebook_size, ndim)
            atomic_write_bytes(out / _shard_name(i), _shard_bytes(tensors, names, skipped))
            if world == 1:  # the index follows every shard (a lone process owns it)
                index["shards"][_shard_name(i)] = dict(
                    items=names, skipped=skipped, tokens=int(tensors["tokens"].numel())
                )
                _write_index(out, index)
    distributed.barrier()  # every shard is written
    if rank == 0:
        index["shards"] = {_shard_name(i): r for i, r in sorted(_finished(out, index, chunks).items())}
        _write_index(out, index)
    distributed.barrier()
    shards = read_index(out)["shards"].values()
    return dict(
        items=sum(len(s["items"]) for s in shards),
        skipped=sum(len(s["skipped"]) for s in shards),
        tokens=sum(s["tokens"] for s in shards),
        shards=len(shards),
        resumed_shards=len(resumed),
        processes=world,
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
