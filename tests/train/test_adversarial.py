"""The adversarial loss (codec.train.adversarial): discriminator shapes and spectrogram against numpy, the hinge and
feature-matching losses against hand-computed values, a discriminator that learns, and training that logs the
terms, keeps the discriminator out of the codec's gradient, and resumes bit for bit."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from synth_media import make_wav
from test_train import AUDIO

from codec.core.config import ImageCodecConfig
from codec.errors import CheckpointError
from codec.train.adversarial import (
    Adversary,
    SpectrogramDiscriminator,
    STFTDiscriminator,
    discriminator_loss,
    feature_loss,
    generator_loss,
)
from codec.train.codec_task import CodecTask, train
from codec.train.config import TrainConfig
from codec.train.state import STATE_NAME

GAN = dict(
    batch_size=2, segment_samples=1024, warmup=0, log_every=1, eval_items=2, sample_items=0, adversarial_weight=1.0,
    feature_weight=2.0, disc_channels=4, disc_samples=400,
)  # fmt: skip


@pytest.mark.parametrize("length", [1000, 1537])
def test_discriminator_output_shapes_on_odd_lengths(length):
    disc = SpectrogramDiscriminator(ffts=(64, 128, 2048), channels=3)  # 2048: longer than the signal
    out = disc(torch.randn(2, 1, length))
    assert len(out) == 3
    for (logits, feats), n_fft in zip(out, (64, 128, 2048), strict=True):
        frames = length // (n_fft // 4) + 1
        assert [tuple(f.shape) for f in feats] == [(2, 3, frames)] * 4
        assert logits.shape == (2, 1, frames)


def test_spectrogram_is_the_compressed_fft_of_hann_frames():
    torch.manual_seed(0)
    d = STFTDiscriminator(64, channels=2)
    x = torch.randn(1, 1, 700)
    spec = d.spectrogram(x)  # (1, 66, frames): 33 real parts, then 33 imaginary parts
    assert spec.shape == (1, 66, 700 // 16 + 1)
    sig = np.pad(x.double().numpy()[0, 0], 32)  # centred frames, zero padding
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(64) / 64)  # periodic Hann
    for frame in (0, 5, spec.shape[2] - 1):
        ref = np.fft.rfft(sig[frame * 16 : frame * 16 + 64] * window)
        ref = ref * np.abs(ref) ** (0.3 - 1)  # |X|^0.3 e^{i angle X}
        got = spec[0, :33, frame].double().numpy() + 1j * spec[0, 33:, frame].double().numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_hinge_and_feature_losses_against_hand_computed_values():
    real, fake = [torch.tensor([2.0, 0.5]), torch.tensor([0.0])], [torch.tensor([-2.0, 0.5]), torch.tensor([3.0])]
    # resolution 1: real relu(1-2)=0, relu(0.5)=0.5 -> 0.25; fake relu(-1)=0, relu(1.5)=1.5 -> 0.75; sum 1.0
    # resolution 2: real 1.0, fake 4.0 -> 5.0; mean over resolutions 3.0
    assert float(discriminator_loss(real, fake)) == pytest.approx(3.0)
    # generator: resolution 1 (3 + 0.5) / 2 = 1.75, resolution 2 relu(1-3) = 0 -> mean 0.875
    assert float(generator_loss(fake)) == pytest.approx(0.875)
    r = [[torch.tensor([1.0, -3.0]), torch.tensor([2.0])], [torch.tensor([4.0, 4.0])]]
    f = [[torch.tensor([2.0, -3.0]), torch.tensor([0.0])], [torch.tensor([4.0, 5.0])]]
    # layer terms: (0.5 / 2) = 0.25, (2 / 2) = 1.0, (0.5 / 4) = 0.125 -> mean 0.458333
    assert float(feature_loss(r, f)) == pytest.approx((0.25 + 1.0 + 0.125) / 3)
    assert float(feature_loss(r, r)) == 0.0


def test_the_discriminator_learns_and_the_generator_terms_leave_its_weights_alone():
    torch.manual_seed(0)
    t = torch.arange(2048) / 8000
    real = torch.sin(2 * math.pi * 440 * t).expand(4, 1, -1).clone() * 0.5
    fake = real + 0.3 * torch.randn_like(real)
    adv = Adversary("cpu", lr=5e-3, channels=4, ffts=(64, 256))
    first = float(adv.update(fake, real))
    for _ in range(40):
        last = float(adv.update(fake, real))
    assert first > 1.5 and last < 0.5 * first  # hinge near 2 untrained; it tells the two apart after training
    before = {k: v.clone() for k, v in adv.net.state_dict().items()}
    x_hat = fake.clone().requires_grad_(True)
    g, feat = adv.generator_terms(x_hat, real)
    (g + feat).backward()
    assert x_hat.grad is not None and float(x_hat.grad.abs().sum()) > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in adv.net.parameters())
    assert all(p.requires_grad for p in adv.net.parameters())
    assert all(torch.equal(v, adv.net.state_dict()[k]) for k, v in before.items())
    # a fake nearer the real one scores better with the trained discriminator
    assert float(adv.generator_terms(real + 0.01 * torch.randn_like(real), real)[1]) < float(feat.detach())


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_adversarial_training_logs_its_terms_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    for i in range(2):
        make_wav(tmp_path / "data" / f"{i}.wav", seconds=0.3, seed=i)
    cfg = TrainConfig(steps=6, eval_every=6, checkpoint_every=3, adversarial_start=2, **GAN)
    train("audio", tmp_path / "data", tmp_path / "straight", AUDIO, cfg)  # one of the two files is held out
    log = [r for r in _rows(tmp_path / "straight") if r["kind"] == "train"]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert all(r["adv"] == r["feat"] == r["disc"] == 0 for r in log[:2])  # before adversarial_start
    assert all(r["adv"] > 0 and r["feat"] > 0 and r["disc"] > 0 for r in log[2:])
    saved = load_file(tmp_path / "straight" / STATE_NAME)
    assert any(k.startswith("adversary.model.") for k in saved) and any(k.startswith("adversary.optim.") for k in saved)
    assert not any(k.startswith("model.") and "disc" in k for k in saved)  # the codec holds no discriminator
    assert not any("disc" in k for k in load_file(tmp_path / "straight" / "model.safetensors"))

    # a run that dies in step 5 (after the checkpoint at 3), then resumes, ends where the straight run ended
    original = CodecTask.loss

    def dies_in_step_5(self, model, batch):
        if self.step == 4:
            raise KeyboardInterrupt
        return original(self, model, batch)

    monkeypatch.setattr(CodecTask, "loss", dies_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        train("audio", tmp_path / "data", tmp_path / "broken", AUDIO, cfg)
    monkeypatch.setattr(CodecTask, "loss", original)
    train("audio", tmp_path / "data", tmp_path / "broken", resume=True)
    a, b = load_file(tmp_path / "broken" / STATE_NAME), load_file(tmp_path / "straight" / STATE_NAME)
    assert a.keys() == b.keys()
    assert [k for k in a if not k.startswith("rng.") and not torch.equal(a[k], b[k])] == []
    assert _rows(tmp_path / "broken") == _rows(tmp_path / "straight")


def test_resuming_an_adversarial_run_needs_the_discriminator_state(tmp_path):
    make_wav(tmp_path / "data" / "a.wav", seconds=0.3)
    cfg = TrainConfig(steps=2, eval_every=2, checkpoint_every=2, **GAN)
    with pytest.warns(UserWarning, match="no held-out files"):
        train("audio", tmp_path / "data", tmp_path / "run", AUDIO, cfg)
    state = tmp_path / "run" / STATE_NAME
    with safe_open(state, framework="pt") as f:
        header = f.metadata()
    kept = {k: v for k, v in load_file(state).items() if not k.startswith("adversary.model.")}
    save_file(kept, state, metadata=header)
    with pytest.warns(UserWarning, match="no held-out files"), pytest.raises(CheckpointError, match="discriminator"):
        train("audio", tmp_path / "data", tmp_path / "run", resume=True)


def test_adversarial_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="freeze_decoder"):
        TrainConfig(adversarial_weight=1.0, freeze_decoder=True)
    with pytest.raises(ValueError, match="must be >= 0"):
        TrainConfig(feature_weight=-1.0)
    with pytest.raises(ValueError, match="audio codecs only"):
        CodecTask(tmp_path, ImageCodecConfig(), TrainConfig(adversarial_weight=1.0))
    assert TrainConfig(feature_weight=0.5).adversarial and not TrainConfig().adversarial
