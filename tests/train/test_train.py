"""Training: overfitting, kill-and-resume, unreadable files, seeds, resume checks, and 2-process CPU training."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from synth_media import make_broken, make_image, make_wav

from codec import load_model, model_hash, save_model
from codec.cli import main as cli_main
from codec.core.config import AudioCodecConfig, ImageCodecConfig, QuantizerConfig, config_to_dict
from codec.core.model import Codec
from codec.errors import CheckpointError
from codec.media import read_image
from codec.train.codec_task import check_dead_code_threshold, train
from codec.train.config import TrainConfig
from codec.train.data import SkippedFileWarning
from codec.train.metrics import psnr
from codec.train.state import STATE_JSON, STATE_NAME, load_train_state, read_checkpoint_meta, restore_model

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ImageCodecConfig(
    base_channels=8, max_channels=16, latent_dim=8, downsample=4, quantizer=QuantizerConfig(codebook_size=32)
)
AUDIO = AudioCodecConfig(
    sample_rate=8000,
    ratios=(2, 4),
    base_channels=8,
    dilations=(1, 3),
    latent_dim=8,
    quantizer=QuantizerConfig(codebook_size=32, num_quantizers=2),
)
SMALL = dict(batch_size=4, crop=32, segment_samples=1024, warmup=0, log_every=5, eval_items=2, sample_items=2)


def tiny(steps: int, **overrides) -> TrainConfig:
    return TrainConfig(**{"steps": steps, "eval_every": steps, "checkpoint_every": steps, **SMALL, **overrides})


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# ------------------------------------------------------------------------------------------ overfitting
def test_image_overfits_one_image(tmp_path):
    make_image(tmp_path / "data" / "a.png", size=(32, 32))  # crop = image: every item is this image (or flipped)
    with pytest.warns(UserWarning, match="no held-out files"):
        result = train("image", tmp_path / "data", tmp_path / "run", IMAGE, tiny(80, lr=3e-3, log_every=10))
    log = [r for r in rows(tmp_path / "run") if r["kind"] == "train"]
    assert log[-1]["loss"] < 0.4 * log[0]["loss"]
    assert log[-1]["psnr"] > log[0]["psnr"] + 6
    assert result["step"] == 80 and result["eval_psnr"] > 15 and result["eval_on"] == "train"
    assert (tmp_path / "run" / "samples" / "step0000080.png").is_file()
    # the exported model is the trained one: it holds the checkpoint's weights and reconstructs the image well
    model = load_model(tmp_path / "run", device="cpu")
    trained = Codec(IMAGE)
    restore_model(trained, load_train_state(tmp_path / "run")[1], "train_state")
    untrained = Codec(IMAGE).eval()
    assert model_hash(model) == model_hash(trained.eval()) != model_hash(untrained)
    x = read_image(tmp_path / "data" / "a.png").pixels[None]
    fresh = float(psnr(untrained.decode(untrained.encode(x), shape=x.shape[1:]), x)[0])
    ours = float(psnr(model.decode(model.encode(x), shape=x.shape[1:]), x)[0])
    assert ours > 15 and ours > fresh + 6 and ours == pytest.approx(result["eval_psnr"], abs=1.5)


def test_audio_overfits_one_segment(tmp_path):
    make_wav(tmp_path / "data" / "a.wav", seconds=1024 / 8000)  # one segment long
    with pytest.warns(UserWarning, match="no held-out files"):
        result = train("audio", tmp_path / "data", tmp_path / "run", AUDIO, tiny(60, lr=3e-3, log_every=10))
    log = [r for r in rows(tmp_path / "run") if r["kind"] == "train"]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert log[-1]["si_snr"] > log[0]["si_snr"] + 20 and log[-1]["si_snr"] > 5
    assert result["eval_si_snr"] > 5 and result["eval_mel_distance"] < 2.0
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert samples == ["step0000060_0_original.wav", "step0000060_0_reconstruction.wav"]


def test_audio_training_logs_the_frame_periodic_term(tmp_path, monkeypatch):
    """The frame-periodic loss is built with the model's hop as its period, and its term is logged."""
    import codec.train.losses as losses

    periods = []

    class Recording(losses.FramePeriodicLoss):
        def __init__(self, period: int):
            periods.append(period)
            super().__init__(period)

    monkeypatch.setattr(losses, "FramePeriodicLoss", Recording)
    make_wav(tmp_path / "data" / "a.wav", seconds=1024 / 8000)
    with pytest.warns(UserWarning, match="no held-out files"):
        train("audio", tmp_path / "data", tmp_path / "run", AUDIO, tiny(2, periodic_weight=1.0, log_every=1))
    assert periods and set(periods) == {Codec(AUDIO).downsample} and Codec(AUDIO).downsample == 8
    log = [r for r in rows(tmp_path / "run") if r["kind"] == "train"]
    assert len(log) == 2 and all(r["periodic"] > 0 and math.isfinite(r["loss"]) for r in log)


@pytest.mark.parametrize("on", [False, True])
def test_image_clamp_aware_reaches_the_loss(tmp_path, monkeypatch, on):
    """``image_clamp_aware`` in the train config makes every training step's image loss go through
    ``clamp_aware_output`` with the batch's targets; off, it is never called."""
    import codec.train.losses as losses

    calls, original = [], losses.clamp_aware_output

    def recording(x_hat, x):
        calls.append((tuple(x_hat.shape), float(x.min()), float(x.max())))
        return original(x_hat, x)

    monkeypatch.setattr(losses, "clamp_aware_output", recording)
    make_image(tmp_path / "data" / "a.png", size=(32, 32))
    with pytest.warns(UserWarning, match="no held-out files"):
        train("image", tmp_path / "data", tmp_path / "run", IMAGE, tiny(2, image_clamp_aware=on, log_every=1))
    if on:
        assert [shape for shape, _, _ in calls[:2]] == [(4, 3, 32, 32)] * 2  # the two training steps' batches
        assert all(shape[1:] == (3, 32, 32) and 0 <= lo <= hi <= 1 for shape, lo, hi in calls)  # then the held-out
    else:
        assert calls == []


# ----------------------------------------------------------------------------------- kill and resume
def _cli_train(run: Path, data: Path, config: Path, *extra: str) -> list[str]:
    args = ["--modality", "image", "--data", str(data), "--out", str(run), "--config", str(config)]
    return [sys.executable, "-m", "codec", "train", *args, *extra]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        make_image(data / f"{i}.png", seed=i)
    config = tmp_path / "config.json"
    train_section = {**SMALL, "steps": 24, "checkpoint_every": 4, "eval_every": 12, "log_every": 4}
    config.write_text(json.dumps({"codec": config_to_dict(IMAGE), "train": train_section}))
    killed, straight = tmp_path / "killed", tmp_path / "straight"

    proc = subprocess.Popen(
        _cli_train(killed, data, config), env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (killed / STATE_JSON).exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # The checkpoint left behind is complete, and restoring it restores the codebook EMA buffers exactly.
    meta, tensors = load_train_state(killed)
    assert 4 <= meta["step"] < 24 and meta["step"] % 4 == 0
    model = Codec(IMAGE)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    restore_model(model, tensors, "test")
    for name in ("embed", "embed_sum", "cluster_size", "initialized"):
        saved = tensors[f"model.quantizer.{name}"]
        assert torch.equal(model.quantizer.state_dict()[name], saved)
        assert not torch.equal(fresh[f"quantizer.{name}"], saved)  # k-means init and EMA really changed it

    resumed = subprocess.run(
        _cli_train(killed, data, config, "--resume"), env=_subprocess_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout.splitlines()[-1])["step"] == 24
    assert json.loads((killed / STATE_JSON).read_text())["step"] == 24
    logged = [r["step"] for r in rows(killed) if r["kind"] == "train"]
    assert logged == list(range(4, 25, 4))  # rows after the checkpoint were dropped, then logged again

    train("image", data, straight, IMAGE, TrainConfig(**train_section))  # the same run, never interrupted
    a, b = load_file(killed / "model.safetensors"), load_file(straight / "model.safetensors")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []  # same data stream, RNG, optimizer and codebooks
    assert rows(killed) == rows(straight)


# ------------------------------------------------------------------------------------- unreadable files
def test_unreadable_images_are_skipped_once_and_counted(tmp_path):
    data = tmp_path / "data"
    good = [make_image(data / f"good{i}.png", seed=i) for i in range(2)]
    broken = make_broken(data / "sub", ".png", good[0])
    (data / "notes.wav").write_bytes(b"not an image and not looked at")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train("image", data, tmp_path / "run", IMAGE, tiny(4, val_fraction=0.0))
    skipped = [str(w.message) for w in caught if issubclass(w.category, SkippedFileWarning)]
    assert len(skipped) == 3, skipped
    for path in broken:
        assert sum(str(path) in msg for msg in skipped) == 1
    assert result["step"] == 4 and result["skipped_files"] == 3
    state = json.loads((tmp_path / "run" / STATE_JSON).read_text())
    assert sorted(state["skipped_files"]) == ["sub/empty.png", "sub/noise.png", "sub/truncated.png"]


def test_unreadable_audio_is_skipped_with_dataloader_workers(tmp_path):
    data = tmp_path / "data"
    good = [make_wav(data / f"good{i}.wav", seconds=0.3, seed=i) for i in range(2)]
    make_broken(data, ".wav", good[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train("audio", data, tmp_path / "run", AUDIO, tiny(3, val_fraction=0.0, num_workers=1))
    skipped = [str(w.message) for w in caught if issubclass(w.category, SkippedFileWarning)]
    assert len(skipped) == 3, skipped  # found in the worker, warned once in the main process
    assert result["skipped_files"] == 3 and result["step"] == 3


def test_only_unreadable_files_is_a_clear_error(tmp_path, capsys):
    data = tmp_path / "data"
    good = make_image(tmp_path / "elsewhere.png")
    make_broken(data, ".png", good)
    argv = ["train", "--modality", "image", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2"]
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exit_info:
        warnings.simplefilter("ignore")
        cli_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("codec: error: ") and "could be read" in err


# ------------------------------------------------------------------------------------------------ seeds
def test_same_seed_same_weights(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        make_image(data / f"{i}.png", seed=i)
    hashes = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train("image", data, tmp_path / name, IMAGE, tiny(3, seed=seed))
        hashes.append(model_hash(load_model(tmp_path / name, device="cpu")))
    assert hashes[0] == hashes[1] != hashes[2]


# --------------------------------------------------------------------------------------- resume checks
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    for i in range(2):
        make_image(root / "data" / f"{i}.png", seed=i)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        train("image", root / "data", root / "run", IMAGE, tiny(2))
        torch.set_num_threads(n)
    return root


def test_resume_refuses_missing_or_mismatched_runs(finished_run, tmp_path):
    data, run = finished_run / "data", finished_run / "run"
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        train("image", data, tmp_path / "empty", resume=True)
    with pytest.raises(CheckpointError, match="already holds a training run"):
        train("image", data, run, IMAGE, tiny(2))
    with pytest.raises(ValueError, match="image codec; cannot resume it as audio"):
        train("audio", data, run, resume=True)
    other = ImageCodecConfig(**{**config_to_dict(IMAGE), "quantizer": QuantizerConfig(codebook_size=64)})
    with pytest.raises(ValueError, match=r"quantizer\.codebook_size \(32 -> 64\)"):
        train("image", data, run, other, resume=True)
    with pytest.raises(ValueError, match=r"lr \(0\.0003 -> 0\.01\)"):
        train("image", data, run, IMAGE, tiny(2, lr=1e-2), resume=True)


def test_resume_with_more_steps_continues(finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    result = train("image", finished_run / "data", run, IMAGE, tiny(4), resume=True)
    assert result["step"] == 4
    assert json.loads((run / STATE_JSON).read_text())["step"] == 4


def _as_saved_by_an_older_version(run: Path, train_key: str, codec_key: str) -> None:
    """Remove one setting from the train config and one from the codec config saved in both state files of a
    run, as if a version without them had written the checkpoint."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(run / STATE_NAME, framework="pt") as f:
        header = f.metadata()
    tensors = load_file(run / STATE_NAME)
    state = json.loads(header["state"])
    del state["train_config"][train_key], state["codec_config"][codec_key]
    save_file(tensors, run / STATE_NAME, metadata={**header, "state": json.dumps(state)})
    js = json.loads((run / STATE_JSON).read_text())
    del js["train_config"][train_key], js["codec_config"][codec_key]
    (run / STATE_JSON).write_text(json.dumps(js))


def test_resume_of_a_run_saved_before_a_setting_existed(finished_run, tmp_path):
    """A run checkpointed by an older version, whose saved configs lack settings added since (here
    ``periodic_weight`` and the image codec's ``tile_overlap``), resumes: they count at their defaults, which is
    how the run was trained. A real change is still refused."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    assert IMAGE.tile_overlap == ImageCodecConfig().tile_overlap
    _as_saved_by_an_older_version(run, "periodic_weight", "tile_overlap")
    with pytest.raises(ValueError, match=r"periodic_weight \(0\.0 -> 1\.0\)"):
        train("image", finished_run / "data", run, IMAGE, tiny(6, periodic_weight=1.0), resume=True)
    other = ImageCodecConfig(**{**config_to_dict(IMAGE), "tile_overlap": IMAGE.tile_overlap + 2})
    with pytest.raises(ValueError, match=r"tile_overlap \(6 -> 8\)"):
        train("image", finished_run / "data", run, other, tiny(4), resume=True)
    result = train("image", finished_run / "data", run, IMAGE, tiny(4), resume=True)
    assert result["step"] == 4


def test_checkpoint_files_are_cross_checked(finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    state = json.loads((run / STATE_JSON).read_text())
    assert read_checkpoint_meta(run)["step"] == state["step"] == 2
    # Stopped between the two state writes: the JSON is older; the complete safetensors state is used.
    (run / STATE_JSON).write_text(json.dumps({**state, "step": 1}))
    with pytest.warns(UserWarning, match="stopped while checkpointing"):
        assert read_checkpoint_meta(run)["step"] == 2
    # A JSON newer than the state it describes cannot come from a normal run: refuse, naming the file.
    (run / STATE_JSON).write_text(json.dumps({**state, "step": 3}))
    with pytest.raises(CheckpointError, match=f"{STATE_NAME} is inconsistent"):
        read_checkpoint_meta(run)
    (run / STATE_NAME).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable training state"):
        read_checkpoint_meta(run)
    (run / STATE_NAME).unlink()
    with pytest.raises(CheckpointError, match="checkpoint is incomplete"):
        read_checkpoint_meta(run)


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad_config = tmp_path / "bad.json"
    bad_config.write_text('{"codec": {"base_channels": 8}, "optimizer": {}}')
    cases = [
        (["--data", str(tmp_path / "nowhere")], "does not exist"),
        (["--data", str(tmp_path), "--config", str(bad_config)], '"codec" and "train" sections'),
        (["--data", str(tmp_path), "--config", str(tmp_path / "missing.json")], "does not exist"),
        (["--data", str(tmp_path), "--resume"], "no checkpoint to resume from"),
        (["--data", str(tmp_path), "--batch-size", "0"], "batch_size must be >= 1"),
    ]
    for extra, message in cases:
        argv = ["train", "--modality", "image", "--out", str(tmp_path / "run"), *extra]
        with pytest.raises(SystemExit) as exit_info:
            cli_main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1, err
        assert err[0].startswith("codec: error: ") and message in err[0], err


def test_training_off_a_terminal_prints_plain_lines_and_quiet_prints_nothing(tmp_path, capsys):
    data = tmp_path / "data"
    for i in range(3):
        make_image(data / f"{i}.png", seed=i)
    config = tmp_path / "tiny.json"
    train_section = dict(SMALL, steps=4, log_every=2, eval_every=4, checkpoint_every=4, val_fraction=0.0)
    config.write_text(json.dumps({"codec": config_to_dict(IMAGE), "train": train_section}))
    argv = ["train", "--modality", "image", "--data", str(data), "--config", str(config)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no held-out files: evaluated on training files
        assert cli_main([*argv, "--out", str(tmp_path / "a")]) == 0
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert "\r" not in err and "|" not in err  # no bar: stderr is not a terminal here
        assert [ln.split(":")[0] for ln in lines] == ["codec step 2/4", "codec step 4/4", "codec step 4 held-out"]
        assert "loss" in lines[0] and "psnr" in lines[0] and "psnr" in lines[2]
        assert json.loads(out)["step"] == 4  # the summary line on stdout
        assert cli_main([*argv, "--out", str(tmp_path / "b"), "--quiet"]) == 0
        assert capsys.readouterr() == ("", "")


# ----------------------------------------------------------------------------------------- distributed
def test_two_cpu_processes_keep_identical_weights_and_codebooks(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        make_image(data / f"{i}.png", seed=i)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"codec": config_to_dict(IMAGE), "train": {**SMALL, "grad_accum": 2}}))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "codec.cli", "train", "--modality", "image", "--data", str(data), "--out", str(tmp_path / "run")]
    cmd += ["--config", str(config), "--steps", "4"]
    env = {**_subprocess_env(), "VQCODEC_RANK_DUMP": str(dumps)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rank0, rank1 = load_file(dumps / "rank0.safetensors"), load_file(dumps / "rank1.safetensors")
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert rank0.keys() == rank1.keys() == saved.keys()
    assert [k for k in rank0 if not torch.equal(rank0[k], rank1[k])] == []
    assert [k for k in rank0 if not torch.equal(rank0[k], saved[k])] == []
    assert rank0["quantizer.initialized"].item()
    state = json.loads((tmp_path / "run" / STATE_JSON).read_text())
    assert state["world_size"] == 2 and state["step"] == 4
    assert state["stream_position"] == 4 * 2 * 2 * 4  # steps * grad_accum * processes * batch
    rng = load_file(tmp_path / "run" / STATE_NAME)
    assert not torch.equal(rng["rng.0.torch"], rng["rng.1.torch"])  # each process's own RNG is saved


def test_a_dead_code_threshold_above_the_mean_code_count_is_warned():

    audio = AudioCodecConfig(quantizer=QuantizerConfig(codebook_size=1024, dead_code_threshold=2.0))
    cfg = TrainConfig(batch_size=8, segment_samples=24000)  # 8 x 75 frames = 600 vectors: 0.59 per code
    with pytest.warns(UserWarning, match="600 vectors per update and 1024 codes"):
        check_dead_code_threshold(audio, cfg, processes=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        audio.quantizer.dead_code_threshold = 0.1
        check_dead_code_threshold(audio, cfg, processes=1)
        image = ImageCodecConfig(quantizer=QuantizerConfig(codebook_size=1024, dead_code_threshold=2.0))
        check_dead_code_threshold(image, TrainConfig(batch_size=32, crop=128), processes=1)  # 8192: 8 per code
    with pytest.warns(UserWarning):
        check_dead_code_threshold(image, TrainConfig(batch_size=4, crop=128), processes=1)  # 1 per code
    # residual VQ with quantizer dropout: the top of 6 stages updates on (1 - 1) + 1/6 of the items under p = 1
    # (8192 / 6 = 1365 vectors, 1.33 per code), on (1 - 0.5) + 0.5/6 = 7/12 of them under p = 0.5 (4779, 4.67)
    rvq = dict(codebook_size=1024, dead_code_threshold=1.0, num_quantizers=6)
    with pytest.warns(UserWarning, match=r"1365 vectors per update \(the top of 6 levels under quantizer dropout 1\)"):
        check_dead_code_threshold(
            ImageCodecConfig(quantizer=QuantizerConfig(**rvq, quantizer_dropout=1.0)),
            TrainConfig(batch_size=32, crop=128),
            processes=1,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for p in (0.0, 0.5):  # 8 and 4.67 per code: a threshold of 1 is below half of either
            check_dead_code_threshold(
                ImageCodecConfig(quantizer=QuantizerConfig(**rvq, quantizer_dropout=p)),
                TrainConfig(batch_size=32, crop=128),
                processes=1,
            )
    with warnings.catch_warnings():  # frozen codebooks: no EMA counts, no resets, nothing to warn about
        warnings.simplefilter("error")
        for frozen in ("freeze_encoder", "freeze_decoder"):
            check_dead_code_threshold(image, TrainConfig(batch_size=4, crop=128, **{frozen: True}), processes=1)


# ------------------------------------------------------------------------------------------ fine-tuning
def test_init_starts_from_a_trained_models_weights(tmp_path):
    make_image(tmp_path / "data" / "a.png", size=(32, 32))
    torch.manual_seed(123)  # not the trainer's seed: a fresh run would start elsewhere
    config = dataclasses.replace(IMAGE, quantizer=QuantizerConfig(codebook_size=32, dead_code_threshold=0.0))
    start = Codec(config)  # no dead-code resets: every code moves only by its EMA step
    start(torch.rand(4, 3, 32, 32))  # k-means initialises the codebook
    save_model(tmp_path / "start", start.eval())
    with pytest.warns(UserWarning, match="no held-out files"):
        train("image", tmp_path / "data", tmp_path / "ft", None, tiny(1, lr=1e-7), init=tmp_path / "start")
        train("image", tmp_path / "data", tmp_path / "fresh", config, tiny(1, lr=1e-7))
    ft, fresh = load_model(tmp_path / "ft", device="cpu"), load_model(tmp_path / "fresh", device="cpu")
    assert ft.config == start.config
    s, f, n = start.state_dict(), fresh.state_dict(), ft.state_dict()
    conv = [k for k in s if k.endswith("weight") and "quantizer" not in k]
    for k in conv:  # the network is the start model's (one step at lr 1e-7 moves it by about 1e-7)
        assert (n[k] - s[k]).abs().max() < 1e-5, k
    assert max(float((f[k] - s[k]).abs().max()) for k in conv) > 0.05  # a fresh run starts elsewhere
    embed = "quantizer.embed"  # the codebook continues (EMA step), no new k-means
    assert (n[embed] - s[embed]).norm() < 0.1 * (f[embed] - s[embed]).norm()


def test_init_errors(tmp_path):
    make_image(tmp_path / "data" / "a.png", size=(32, 32))
    save_model(tmp_path / "start", Codec(IMAGE).eval())
    with pytest.raises(ValueError, match="resume"):
        train("image", tmp_path / "data", tmp_path / "a", None, tiny(1), resume=True, init=tmp_path / "start")
    with pytest.raises(ValueError, match="not audio"):
        train("audio", tmp_path / "data", tmp_path / "b", None, tiny(1), init=tmp_path / "start")
    other = ImageCodecConfig(base_channels=8, max_channels=16, latent_dim=4, downsample=4, quantizer=IMAGE.quantizer)
    with pytest.raises(ValueError, match="latent_dim"):  # weights would not fit
        train("image", tmp_path / "data", tmp_path / "c", other, tiny(1), init=tmp_path / "start")
    same_shapes = dataclasses.replace(IMAGE, norm_groups=IMAGE.norm_groups // 2)  # loads, but another network
    with pytest.raises(ValueError, match="norm_groups"):
        train("image", tmp_path / "data", tmp_path / "e", same_shapes, tiny(1), init=tmp_path / "start")
    knobs = dataclasses.replace(IMAGE, quantizer=QuantizerConfig(codebook_size=32, dead_code_threshold=0.5))
    with pytest.warns(UserWarning, match="no held-out files"):  # a training knob may change
        train("image", tmp_path / "data", tmp_path / "f", knobs, tiny(1), init=tmp_path / "start")
    with pytest.raises(CheckpointError):
        train("image", tmp_path / "data", tmp_path / "d", None, tiny(1), init=tmp_path / "missing")


def test_max_minutes_stops_at_a_log_step_with_a_checkpoint_and_a_decayed_rate(tmp_path):
    make_image(tmp_path / "data" / "a.png", size=(32, 32))
    cfg = tiny(10_000, max_minutes=1e-4, log_every=3, min_lr_ratio=0.1)  # 6 ms: over at the first log step
    with pytest.warns(UserWarning, match="no held-out files"):
        result = train("image", tmp_path / "data", tmp_path / "run", IMAGE, cfg)
    assert result["step"] == 3  # stopped at the first log step, long before 10_000
    assert read_checkpoint_meta(tmp_path / "run")["step"] == 3
    # the cosine followed the clock: at the end the rate is the floor, not the 3/10_000 point of the schedule
    assert rows(tmp_path / "run")[0]["lr"] == pytest.approx(cfg.lr * cfg.min_lr_ratio)


def _trained_start(tmp_path) -> tuple[Codec, Path]:
    make_image(tmp_path / "data" / "a.png", size=(32, 32))
    make_image(tmp_path / "data" / "b.png", size=(40, 36), seed=3)
    config = dataclasses.replace(IMAGE, quantizer=QuantizerConfig(codebook_size=32, num_quantizers=3))
    torch.manual_seed(5)
    start = Codec(config)
    start(torch.rand(4, 3, 32, 32))  # k-means initialises the codebooks
    save_model(tmp_path / "start", start.eval())
    return start, tmp_path / "start"


def _fine_tune(tmp_path, flag: str, trained: str, **settings) -> tuple[Codec, Codec]:
    """(start, fine-tuned) after 3 steps with ``flag``; every tensor outside ``trained`` ("decoder." or
    "encoder.") checked bit for bit against the start model's, and ``trained`` checked to have moved."""
    start, start_dir = _trained_start(tmp_path)
    cfg = tiny(3, lr=1e-2, **{flag: True}, **settings)
    train("image", tmp_path / "data", tmp_path / "ft", None, cfg, init=start_dir)
    ft = load_model(tmp_path / "ft", device="cpu")
    s, n = start.state_dict(), ft.state_dict()
    frozen = [k for k in s if not k.startswith(trained)]
    other = "encoder." if trained == "decoder." else "decoder."
    assert any(k.startswith("quantizer.") for k in frozen) and any(k.startswith(other) for k in frozen)
    for k in frozen:  # bit for bit: no gradient step, no EMA update, no dead-code reset
        assert torch.equal(n[k], s[k]), k
    assert max(float((n[k] - s[k]).abs().max()) for k in s if k.startswith(trained)) > 1e-3
    return start, ft


def test_a_frozen_encoder_keeps_the_start_models_tokens_and_trains_the_decoder(tmp_path):
    start, ft = _fine_tune(tmp_path, "freeze_encoder", "decoder.")
    x = read_image(tmp_path / "data" / "b.png").pixels[None]
    assert torch.equal(ft.encode(x), start.encode(x))
    assert model_hash(ft) != model_hash(start)


@pytest.mark.parametrize("train_encoder", [False, True])
def test_the_frozen_training_pass_equals_the_eval_forward(tmp_path, train_encoder):
    """Frozen codebooks: the eval forward's tokens and output; a frozen decoder (``train_encoder``) passes the
    gradient straight through to the encoder with the commitment term as its vq loss, a frozen encoder none."""
    from codec.train.codec_task import CodecTask

    start, _ = _trained_start(tmp_path)
    task = CodecTask(tmp_path / "data", start.config, tiny(1, freeze_decoder=train_encoder))
    start.quantizer.quantizer_dropout = 0.0  # every item keeps all levels: the eval forward is the reference
    x = torch.rand(2, 3, 32, 32)
    got = task._frozen_forward(start, x, train_encoder=train_encoder)
    with torch.no_grad():
        want = start.eval()(x)
        z = start.encoder(x)
        q = start.quantizer.decode_indices(want.tokens.movedim(1, -1)).movedim(-1, 1)
    assert torch.equal(got.tokens, want.tokens)
    # straight through, z + (q - z) rounds to q within a few ulps of the latents (about 1e-7)
    torch.testing.assert_close(got.x_hat, want.x_hat, rtol=0, atol=1e-5 if train_encoder else 1e-6)
    assert got.x_hat.requires_grad and got.vq.perplexity.shape == (3,)
    commitment = start.config.quantizer.commitment_weight * float((z - q).square().mean())
    want_vq = pytest.approx(commitment, rel=1e-5) if train_encoder else 0.0
    assert float(got.vq.loss.detach()) == want_vq and commitment > 0
    (got.x_hat.square().mean() + got.vq.loss).backward()
    grads = [p.grad for p in start.encoder.parameters()]
    if train_encoder:
        assert all(g is not None for g in grads) and max(float(g.abs().max()) for g in grads) > 0
    else:
        assert all(g is None for g in grads)
    start.quantizer.quantizer_dropout = 1.0  # each item a random number of levels: the decoder sees coarser latents
    torch.manual_seed(0)
    cut = [task._frozen_forward(start, x, train_encoder=train_encoder).x_hat for _ in range(8)]
    assert any(not torch.allclose(c, want.x_hat) for c in cut)


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_the_search_recodes_the_first_share_of_the_batch(tmp_path, modality):
    """``search_steps``: the first ``search_share`` of the items take tokens the encoder-side search found against
    the decoder, which renders them closer to the input than the plain tokens on the search's own objective (it
    keeps a change only where it is better; computed here from the decoder's output); the other items are exactly
    the plain pass's; the gradient reaches the decoder only, and the decoder is left in training mode."""
    from codec.core.refine import objective_by_cell
    from codec.train.codec_task import CodecTask

    if modality == "image":
        start, _ = _trained_start(tmp_path)
        x = torch.rand(4, 3, 32, 32)
    else:
        torch.manual_seed(5)
        start = Codec(AUDIO)
        start(torch.randn(4, 1, 1024) * 0.3)  # k-means initialises the codebooks
        x = torch.randn(4, 1, 1024) * 0.3
    start.quantizer.quantizer_dropout = 0.0  # every item keeps all levels
    config = start.config
    plain = CodecTask(tmp_path / "data", config, tiny(1, freeze_encoder=True))._frozen_forward(start, x)
    task = CodecTask(tmp_path / "data", config, tiny(1, freeze_encoder=True, search_steps=12, search_share=0.5))
    start.decoder.train()
    got = task._frozen_forward(start, x)
    assert start.decoder.training
    assert torch.equal(got.tokens[2:], plain.tokens[2:])
    torch.testing.assert_close(got.x_hat[2:], plain.x_hat[2:], rtol=0, atol=1e-6)
    changed = [not torch.equal(got.tokens[i], plain.tokens[i]) for i in range(2)]
    assert any(changed)

    def error(y):  # the search's objective per item: mask 1 everywhere
        mask = torch.ones_like(x[:2, :1])
        cells = objective_by_cell(y.detach()[:2], x[:2], mask, start.downsample, start.sample_rate)
        return cells.flatten(1).sum(1)

    searched, before = error(got.x_hat), error(plain.x_hat)
    for i in range(2):
        assert searched[i] < before[i] * (1 - 1e-4) if changed[i] else searched[i] == pytest.approx(float(before[i]))
    got.x_hat.square().mean().backward()
    assert all(p.grad is None for p in (*start.encoder.parameters(), *start.quantizer.parameters()))
    assert max(float(p.grad.abs().max()) for p in start.decoder.parameters()) > 0


def test_search_steps_settings():
    with pytest.raises(ValueError, match="needs freeze_encoder"):
        tiny(1, search_steps=2)
    with pytest.raises(ValueError, match="search_share"):
        tiny(1, freeze_encoder=True, search_steps=2, search_share=0.0)
    with pytest.raises(ValueError, match="search_steps"):
        tiny(1, freeze_encoder=True, search_steps=-1)


def test_a_searched_fine_tune_trains_the_decoder_only(tmp_path):
    start, ft = _fine_tune(tmp_path, "freeze_encoder", "decoder.", search_steps=3)
    x = read_image(tmp_path / "data" / "b.png").pixels[None]
    assert torch.equal(ft.encode(x), start.encode(x))


def test_a_frozen_decoder_keeps_the_codes_and_decoder_and_trains_the_encoder(tmp_path):
    start, ft = _fine_tune(tmp_path, "freeze_decoder", "encoder.")
    assert model_hash(ft) != model_hash(start)


def test_freeze_decoder_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing to train"):
        tiny(1, freeze_encoder=True, freeze_decoder=True)
    with pytest.raises(ValueError, match="give init"):
        train("image", tmp_path / "data", tmp_path / "a", IMAGE, tiny(1, freeze_decoder=True))


def test_freeze_encoder_errors(tmp_path):
    _, start_dir = _trained_start(tmp_path)
    with pytest.raises(ValueError, match="give init"):
        train("image", tmp_path / "data", tmp_path / "a", IMAGE, tiny(1, freeze_encoder=True))
    start = load_model(start_dir, device="cpu").config
    overlap = dataclasses.replace(start, tile_overlap=start.tile_overlap + 8)  # a fine-tune may, a frozen one not
    with pytest.raises(ValueError, match="tile_overlap"):
        train("image", tmp_path / "data", tmp_path / "b", overlap, tiny(1, freeze_encoder=True), init=start_dir)
