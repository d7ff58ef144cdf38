"""Data folders: file discovery, held-out split, crops and segments, channel conversion, skipping bad files."""

import itertools
import warnings

import pytest
import torch
from PIL import Image
from synth_media import make_broken, make_image, make_wav

from codec.media import find_files
from codec.media.audio_io import read_audio, resample
from codec.media.image_io import read_image
from codec.train.data import (
    AudioFolderDataset,
    ImageFolderDataset,
    SkippedFileWarning,
    StreamSampler,
    collate,
    split_files,
    stream_loader,
)


def test_find_files_is_recursive_sorted_and_skips_hidden(tmp_path):
    for rel in ("b.png", "a/c.JPG", "a/.hidden.png", ".git/x.png", "z.txt", "s.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert find_files(tmp_path, "image") == ["a/c.JPG", "b.png"]
    assert find_files(tmp_path, "audio") == ["s.wav"]
    with pytest.raises(FileNotFoundError):
        find_files(tmp_path / "missing", "image")
    with pytest.raises(ValueError, match="no audio files"):
        find_files(tmp_path / "a", "audio")


def test_split_is_deterministic_stable_and_never_empty():
    files = [f"img{i:03d}.png" for i in range(200)]
    train, val = split_files(files, 0.1)
    assert (train, val) == split_files(list(reversed(files)), 0.1)
    assert 8 <= len(val) <= 35 and not set(train) & set(val) and len(train) + len(val) == 200
    _, val_more = split_files(files + [f"new{i}.png" for i in range(50)], 0.1)
    assert set(val) <= set(val_more)  # adding files never moves an existing file between splits
    assert len(split_files(["a.png", "b.png"], 0.05)[1]) == 1  # two files: one is held out
    assert split_files(["a.png"], 0.5) == (["a.png"], [])  # one file: it is used for training
    assert split_files(files, 0.0)[1] == []
    with pytest.raises(ValueError):
        split_files(files, 1.0)


def test_image_crops_flips_padding_and_channels(tmp_path):
    make_image(tmp_path / "rgb.png", size=(40, 24))
    make_image(tmp_path / "gray.png", size=(20, 12), mode="L")
    Image.new("RGB", (1, 1), (10, 200, 30)).save(tmp_path / "dot.png")  # replicated, nothing to reflect
    ds = ImageFolderDataset(tmp_path, crop=32, multiple=8, channels=3)
    assert ds.files == ["dot.png", "gray.png", "rgb.png"]
    for i in range(3):
        x = ds[(i, 5)]["x"]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert torch.allclose(ds[(0, 1)]["x"][:, 31, 31], torch.tensor([10, 200, 30]) / 255)
    gray = ds[(1, 0)]["x"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # grayscale replicated
    assert torch.equal(ds[(2, 11)]["x"], ds[(2, 11)]["x"])  # the item seed fixes crop and flip
    crops = {tuple(ds[(2, s)]["x"].flatten()[:50].tolist()) for s in range(12)}
    assert len(crops) > 2  # different seeds, different crops
    pixels = read_image(tmp_path / "rgb.png").pixels  # (3, 24, 40): the centre crop of 16 starts at (4, 12)
    centre = ImageFolderDataset(tmp_path, crop=16, multiple=8, files=["rgb.png"], train=False)[0]["x"]
    assert torch.equal(centre, pixels[:, 4:20, 12:28])
    luma = ImageFolderDataset(tmp_path, crop=16, multiple=8, channels=1, files=["rgb.png"], train=False)[0]["x"]
    expected = (pixels[:, 4:20, 12:28] * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    assert luma.shape == (1, 16, 16) and torch.allclose(luma, expected)
    with pytest.raises(ValueError, match="multiple"):
        ImageFolderDataset(tmp_path, crop=30, multiple=8)


def test_audio_segments_resample_and_convert_channels(tmp_path):
    make_wav(tmp_path / "long.wav", seconds=1.0, sample_rate=16000, channels=2)
    make_wav(tmp_path / "short.wav", seconds=0.05, sample_rate=8000, channels=1)
    ds = AudioFolderDataset(tmp_path, segment_samples=2048, sample_rate=8000, channels=1, multiple=8, train=False)
    x = ds[0]["x"]
    assert x.shape == (1, 2048)
    # The middle 2048 samples at 8 kHz of the whole file, resampled, averaged to mono: the partial read matches.
    full = resample(read_audio(tmp_path / "long.wav").samples, 16000, 8000).mean(dim=0, keepdim=True)
    start = (8000 - 2048) // 2
    assert torch.allclose(x, full[:, start : start + 2048], atol=2e-3)
    short = ds[1]["x"]
    assert short.shape == (1, 2048) and short[:, 400:].abs().max() == 0 and short[:, :400].abs().max() > 0.1
    stereo = AudioFolderDataset(tmp_path, 1024, 8000, channels=2, multiple=8, files=["short.wav"])[0]["x"]
    assert stereo.shape == (2, 1024) and torch.equal(stereo[0], stereo[1])
    train = AudioFolderDataset(tmp_path, 1024, 8000, channels=1, files=["long.wav"])
    segments = {tuple(train[(0, s)]["x"][0, :20].tolist()) for s in range(6)}
    assert len(segments) > 1 and torch.equal(train[(0, 3)]["x"], train[(0, 3)]["x"])
    with pytest.raises(ValueError, match="multiple"):
        AudioFolderDataset(tmp_path, 1001, 8000, multiple=8)


def test_bad_files_warn_once_are_counted_and_replaced(tmp_path):
    good = make_image(tmp_path / "good.png")
    make_broken(tmp_path, ".png", good)
    ds = ImageFolderDataset(tmp_path, crop=16, multiple=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[(i % len(ds), i)] for i in range(12)]
    assert all(it["x"].shape == (3, 16, 16) for it in items)  # every bad index was replaced by the good file
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedFileWarning)]
    assert len(messages) == 3 and ds.skipped == 3
    assert set(ds.skipped_files) == {"empty.png", "noise.png", "truncated.png"}
    assert ds.report([("noise.png", "again")]) == 0  # already known: no second warning
    gone = ImageFolderDataset(tmp_path, crop=16, multiple=8, files=["empty.png", "noise.png"])
    with warnings.catch_warnings(), pytest.raises(Exception, match="none of the 2 image files could be read"):
        warnings.simplefilter("ignore")
        gone[0]


def test_stream_sampler_is_a_pure_function_of_seed_and_position():
    head = list(itertools.islice(iter(StreamSampler(5, seed=1)), 23))
    assert sorted(i for i, _ in head[:5]) == list(range(5))  # each pass is a permutation of the files
    assert sorted(i for i, _ in head[5:10]) == list(range(5))
    assert list(itertools.islice(iter(StreamSampler(5, seed=1, start=7)), 16)) == head[7:]
    assert len({s for _, s in head}) == 23
    assert head != list(itertools.islice(iter(StreamSampler(5, seed=2)), 23))


def test_stream_loader_batches_and_worker_count_does_not_change_data(tmp_path):
    for i in range(3):
        make_image(tmp_path / f"{i}.png", seed=i)
    ds = ImageFolderDataset(tmp_path, crop=16, multiple=8)
    batches = [list(itertools.islice(iter(stream_loader(ds, 4, seed=0, num_workers=n)), 3)) for n in (0, 2)]
    for a, b in zip(*batches, strict=True):
        assert a["x"].shape == (4, 3, 16, 16) and a["bad"] == []
        assert torch.equal(a["x"], b["x"])
    assert collate([{"x": torch.zeros(1), "bad": [("a", "r")]}, {"x": torch.ones(1), "bad": []}])["bad"] == [("a", "r")]
