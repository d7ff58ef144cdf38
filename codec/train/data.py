"""Training data: folders of images or audio, random crops and segments, a deterministic held-out split.

An item is addressed by a key ``(file_index, item_seed)``. Every random choice made for it (crop position,
flip, segment start, the replacement for an unreadable file) comes from a generator seeded with
``item_seed``, and ``StreamSampler`` derives both numbers from the run's seed and the item's position in
the stream. So the data a run sees depends only on its seed: not on the number of DataLoader workers, and
not on whether the run was interrupted and resumed (the sampler restarts at the right position).

Unreadable files (``MediaError``: empty, truncated, corrupt, vanished) are skipped: each one is warned
about once (``SkippedFileWarning``), counted in ``dataset.skipped``, never tried again, and replaced by
another file, so a long run does not stop for a bad file. DataLoader workers cannot update the main
process's dataset, so every item also lists the files found bad while making it (``item["bad"]``); the
training loop passes them to ``dataset.report``, which warns and counts each file once.
"""

import hashlib
import math
import os
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from codec.errors import MediaError
from codec.media import find_files, read_audio, read_image, to_audio_channels, to_image_channels
from codec.media.channels import LUMA

RESAMPLE_MARGIN = 64  # extra samples (model rate) read on each side of a segment, so resampling edges fall outside


class SkippedFileWarning(UserWarning):
    """A data file could not be read and is left out of training."""


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (stable across runs, machines and Python versions)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(values)}q", *values), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def unit_hash(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (the held-out splits here and in the corpus builders of ``tools/``)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") / 2**64


# ------------------------------------------------------------------------------------------- file lists
def split_files(files: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train / held-out split by a hash of each relative path.

    A file is held out when the hash of its path, as a number in [0, 1), is below ``val_fraction``, so
    adding files never moves existing ones between the splits. With two or more files and
    ``val_fraction > 0`` at least one file is held out, and at least one is always kept for training.

    Returns:
        (train files, held-out files), each sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    score = {f: unit_hash(f) for f in files}
    val = {f for f in files if score[f] < val_fraction}
    if val_fraction > 0 and not val and len(files) >= 2:
        val = {min(files, key=score.__getitem__)}
    if files and len(val) == len(files):
        val.discard(max(val, key=score.__getitem__))
    return sorted(f for f in files if f not in val), sorted(val)


# ---------------------------------------------------------------------------------------------- datasets
class _FolderDataset(Dataset):
    """Files under ``root`` with skip-and-replace on MediaError; subclasses implement ``_load``."""

    modality = ""

    def __init__(self, root: str | os.PathLike, files: list[str] | None, train: bool):
        self.root = Path(root)
        self.files = list(find_files(root, self.modality) if files is None else files)
        if not self.files:
            raise ValueError(f"no {self.modality} files to use under {self.root}")
        self.train = train
        self._position = {f: i for i, f in enumerate(self.files)}
        self._bad: set[int] = set()  # never tried again in this process
        self._reported: dict[str, str] = {}  # relative path -> reason, warned about once

    def __len__(self) -> int:
        return len(self.files)

    @property
    def skipped(self) -> int:
        """Number of distinct files skipped as unreadable (as reported to this process)."""
        return len(self._reported)

    @property
    def skipped_files(self) -> dict[str, str]:
        """Relative path -> reason, for every file skipped so far."""
        return dict(self._reported)

    def share_skips(self, other: "_FolderDataset") -> None:
        """Share ``other``'s record of unreadable files (both must list the same files, e.g. train and eval)."""
        if other.files != self.files:
            raise ValueError("share_skips needs two datasets over the same files")
        self._bad, self._reported = other._bad, other._reported

    def report(self, bad: list[tuple[str, str]]) -> int:
        """Record files found unreadable (``item["bad"]`` from any worker); warns once per file.

        Returns:
            How many of them were new.
        """
        new = 0
        for rel, reason in bad:
            if rel in self._position:
                self._bad.add(self._position[rel])
            if rel in self._reported:
                continue
            self._reported[rel] = reason
            new += 1
            warnings.warn(f"{self.root / rel}: {reason}; skipping this file", SkippedFileWarning, stacklevel=2)
        return new

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """One item.

        Args:
            key: ``(file_index, item_seed)``, or an int i meaning ``(i, i)``.

        Returns:
            {"x": the item tensor, "bad": [(relative path, reason), ...] files found unreadable meanwhile}.

        Raises:
            MediaError: every file of the dataset is unreadable.
        """
        index, seed = key if isinstance(key, tuple) else (int(key), int(key))
        g = torch.Generator().manual_seed(int(seed))
        found: list[tuple[str, str]] = []
        while True:
            if index not in self._bad:
                try:
                    return {"x": self._load(index, g), "bad": found}
                except (MediaError, OSError) as e:
                    reason = e.reason if isinstance(e, MediaError) else str(e)
                    self._bad.add(index)
                    found.append((self.files[index], reason))
                    if get_worker_info() is None:  # in the main process: warn and count now
                        self.report(found[-1:])
            good = [i for i in range(len(self.files)) if i not in self._bad]
            if not good:
                raise MediaError(self.root, f"none of the {len(self.files)} {self.modality} files could be read")
            index = good[int(torch.randint(len(good), (1,), generator=g))]

    def _load(self, index: int, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class ImageFolderDataset(_FolderDataset):
    """Square crops of the images under a folder.

    Training items are random crops with random horizontal flips; held-out items (``train=False``) are
    centre crops. Images smaller than the crop are padded by reflection (by replication when 1 pixel wide).

    Args:
        root: the folder, scanned recursively with ``is_image_file``.
        crop: crop side in pixels; a multiple of ``multiple``.
        multiple: the model's downsampling factor.
        channels: the model's channels: 3 (grayscale images are replicated) or 1 (RGB becomes BT.601 luma).
        files: relative paths to use (e.g. one side of ``split_files``); None = every image under root.
        train: random crops and flips (True) or centre crops (False).
        saturation: training only, with 3 channels: each crop's saturation is scaled by 1 + U(-s, s) about its
            BT.601 luma and clamped to [0, 1] (0 = off).

    Items: {"x": (channels, crop, crop) float32 in [0, 1], "bad": [...]}.
    """

    modality = "image"

    def __init__(
        self,
        root: str | os.PathLike,
        crop: int,
        multiple: int = 1,
        channels: int = 3,
        files: list[str] | None = None,
        train: bool = True,
        saturation: float = 0.0,
    ):
        if crop < 1 or crop % multiple:
            raise ValueError(f"crop must be a positive multiple of the model's downsampling {multiple}, got {crop}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        super().__init__(root, files, train)
        self.crop, self.channels, self.saturation = crop, channels, saturation

    def _load(self, index: int, g: torch.Generator) -> torch.Tensor:
        x = to_image_channels(read_image(self.root / self.files[index]).pixels, self.channels)
        x = _pad_to(x, self.crop)  # (C, H', W'), H', W' >= crop
        h, w = x.shape[-2:]
        if self.train:
            top = int(torch.randint(h - self.crop + 1, (1,), generator=g))
            left = int(torch.randint(w - self.crop + 1, (1,), generator=g))
        else:
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
        x = x[:, top : top + self.crop, left : left + self.crop]
        if self.train and bool(torch.rand((), generator=g) < 0.5):
            x = x.flip(-1)
        if self.train and self.saturation and x.shape[0] == 3:
            scale = 1 + self.saturation * (2 * float(torch.rand((), generator=g)) - 1)
            gray = (x * torch.tensor(LUMA, dtype=x.dtype).view(3, 1, 1)).sum(0, keepdim=True)
            x = (gray + scale * (x - gray)).clamp(0, 1)
        return x.contiguous()


def _pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (C, H, W) at the bottom and right to at least size x size, by reflection where possible."""
    while x.shape[-2] < size or x.shape[-1] < size:
        h, w = x.shape[-2:]
        ph, pw = max(0, size - h), max(0, size - w)
        if (ph and h < 2) or (pw and w < 2):  # nothing to reflect
            return F.pad(x[None], (0, pw, 0, ph), mode="replicate")[0]
        x = F.pad(x[None], (0, min(pw, w - 1), 0, min(ph, h - 1)), mode="reflect")[0]
    return x


class AudioFolderDataset(_FolderDataset):
    """Fixed-length segments of the audio files under a folder, at the model's rate and channel count.

    Only the needed part of a file is decoded (read_audio ``start`` / ``frames`` at the file's own rate, with
    a small margin on each side for the resampler), then resampled to ``sample_rate``. Training segments start
    at random; held-out segments are taken from the middle of the file. Files shorter than a segment are
    zero-padded at the end. Mono files are duplicated for a stereo model; a mono model gets the mean of the
    channels; a stereo model gets the first two channels of a file with more.

    Args:
        root: the folder, scanned recursively with ``is_audio_file``.
        segment_samples: segment length at ``sample_rate``; a multiple of ``multiple``.
        sample_rate: the model's rate in Hz.
        channels: the model's channels (1 or 2).
        multiple: the model's hop.
        files: relative paths to use; None = every audio file under root.
        train: random segments (True) or the middle of each file (False).

    Items: {"x": (channels, segment_samples) float32 in [-1, 1], "bad": [...]}.
    """

    modality = "audio"

    def __init__(
        self,
        root: str | os.PathLike,
        segment_samples: int,
        sample_rate: int,
        channels: int = 1,
        multiple: int = 1,
        files: list[str] | None = None,
        train: bool = True,
    ):
        if segment_samples < 1 or segment_samples % multiple:
            raise ValueError(
                f"segment_samples must be a positive multiple of the model's hop {multiple}, got {segment_samples}"
            )
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        super().__init__(root, files, train)
        self.segment, self.sample_rate, self.channels = segment_samples, sample_rate, channels
        self._info: dict[int, tuple[int, int]] = {}  # file index -> (frames, rate) of the file

    def _file_info(self, index: int) -> tuple[int, int]:
        if index not in self._info:
            data = read_audio(self.root / self.files[index], frames=0)  # opens and checks, decodes nothing
            self._info[index] = (data.frames, data.orig_sample_rate)
        return self._info[index]

    def _load(self, index: int, g: torch.Generator) -> torch.Tensor:
        path = self.root / self.files[index]
        total, rate = self._file_info(index)
        need = math.ceil(self.segment * rate / self.sample_rate)  # file frames covering one segment
        margin = 0 if rate == self.sample_rate else math.ceil(RESAMPLE_MARGIN * rate / self.sample_rate)
        slack = max(0, total - need)
        start = int(torch.randint(slack + 1, (1,), generator=g)) if self.train else slack // 2
        first, last = max(0, start - margin), min(total, start + need + margin)
        try:
            y = read_audio(path, sample_rate=self.sample_rate, start=first, frames=last - first).samples
        except MediaError:
            raise
        except ValueError as e:  # the file's stated length was wrong (e.g. an MP3 estimate)
            raise MediaError(path, str(e)) from e
        offset = round((start - first) * self.sample_rate / rate)
        y = y[:, offset : offset + self.segment]
        if y.shape[-1] < self.segment:
            y = F.pad(y, (0, self.segment - y.shape[-1]))
        return to_audio_channels(y, self.channels).contiguous()


# ------------------------------------------------------------------------------------- sampling, loading
class StreamSampler(Sampler):
    """Endless stream of item keys ``(file_index, item_seed)``: a fresh permutation of the files per pass.

    Position p of the stream is a pure function of (seed, p), so a resumed run restarts exactly where it
    stopped by passing ``start`` = the number of items already consumed (by all processes together).

    Args:
        num_files: dataset length.
        seed: the run's seed.
        start: position of the first key.
    """

    def __init__(self, num_files: int, seed: int, start: int = 0):
        if num_files < 1:
            raise ValueError("StreamSampler needs at least one file")
        self.num_files, self.seed, self.start = num_files, seed, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = -1, []
        position = self.start
        while True:
            e, i = divmod(position, self.num_files)
            if e != epoch:
                g = torch.Generator().manual_seed(mix_seed(self.seed, e, 0))
                epoch, order = e, torch.randperm(self.num_files, generator=g).tolist()
            yield order[i], mix_seed(self.seed, position, 1)
            position += 1


def collate(items: list[dict]) -> dict:
    """Stack items: {"x": (B, C, ...) tensor, "bad": every item's list of unreadable files, joined}."""
    return {"x": torch.stack([it["x"] for it in items]), "bad": [b for it in items for b in it["bad"]]}


def stream_loader(
    dataset: Dataset, batch_size: int, seed: int, start: int = 0, num_workers: int = 0, collate_fn=collate
) -> DataLoader:
    """An endless DataLoader of batches over ``StreamSampler(len(dataset), seed, start)``: the data stream of every
    training run (``dataset[(index, item_seed)]`` makes item ``position`` from its key alone).

    Under ``accelerate`` (after ``accelerator.prepare``) consecutive batches go to consecutive processes, so
    the stream position after s optimizer steps is ``s * grad_accum * batch_size * num_processes``.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=StreamSampler(len(dataset), seed, start),
        drop_last=True,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # worker seeds; keeps the global RNG untouched
    )
