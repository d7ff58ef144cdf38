"""tools/recipes/device_train.sh, the one command a lent GPU machine runs, end to end on the CPU with 2 steps per
model: both codecs continue from the bundled ones, their priors and context models train on the new tokens, and
the packed archives unpack into models that code a file of the corpus and decode it back."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import codec
import codec.media
import prior
from codec.store.registry import model_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from synth_media import make_image, make_wav  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "tools" / "recipes"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None, reason="needs bash and tar")
def test_device_train_continues_both_models_and_packs_loadable_bundles(tmp_path):
    data = tmp_path / "corpus"
    for i in range(5):  # the layout make_device_corpus.py writes: images/ and audio/
        make_image(data / "images" / f"crop{i}.png", size=(176, 144), seed=i)
        make_wav(data / "audio" / f"clip{i}.wav", seconds=1.5, sample_rate=24000, seed=i)
    # The recipe's prior network (it continues the bundled prior, so its shape must stay), with small batches.
    recipe_prior = json.loads((RECIPES / "prior_device.json").read_text())
    small_prior = tmp_path / "prior.json"
    small_prior.write_text(json.dumps({"prior": recipe_prior["prior"], "train": {"batch_size": 2, "seq_len": 64,
                                                                                 "eval_batches": 1}}))
    env = dict(os.environ, DEVICE_STEPS="2", DEVICE_WORKERS="0", DEVICE_MINUTES="10", DEVICE_DATA=str(data),
               DEVICE_PRIOR_CONFIG=str(small_prior), OMP_NUM_THREADS="1")  # fmt: skip
    ck, pack = tmp_path / "ck", tmp_path / "pack"
    run = subprocess.run(["bash", str(RECIPES / "device_train.sh"), str(ck), str(pack)], env=env,
                         capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "device_train: done" in (ck / "log.txt").read_text()

    unpacked = tmp_path / "models"
    unpacked.mkdir()
    for name in ("image.tar", "image_context.tar", "audio_codec.tar", "audio_prior.tar", "audio_context.tar"):
        archive = pack / name
        assert archive.stat().st_size <= 16 * 2**20  # what the device tool brings back
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
    assert (pack / "logs.tgz").is_file()

    for modality, media in (("image", data / "images" / "crop0.png"), ("audio", data / "audio" / "clip0.wav")):
        run_dir, bundle = ck / modality, unpacked / modality
        assert json.loads((run_dir / "train_state.json").read_text())["step"] == 2
        start = load_file(model_dir(modality) / "model.safetensors")
        trained = load_file(run_dir / "model.safetensors")
        assert json.loads((run_dir / "config.json").read_text())["arch"] == json.loads(
            (model_dir(modality) / "config.json").read_text())["arch"]  # fmt: skip
        # Continued from the bundled weights: the network's tensors moved, by no more than two small steps do
        # (a fresh network would differ by its whole scale; the codebooks' EMA state and dead-code resets move
        # more on five tiny files, so they are left out).
        assert set(start) <= set(trained)
        network = [k for k in start if "quantizer" not in k]
        moved = [k for k in network if not torch.equal(start[k].float(), trained[k].float())]
        assert len(moved) > len(network) // 2
        assert max((trained[k].float() - start[k].float()).abs().max().item() for k in network) < 1e-2
        # The bundle holds the run's weights rounded to fp16 (what bundle_models.py ships).
        packed = load_file(bundle / "model.safetensors")
        assert any(v.dtype == torch.float16 for v in packed.values())
        for k, v in packed.items():
            assert torch.equal(v, trained[k].to(v.dtype)), k
        model = codec.load(bundle)
        # The prior and context model were re-paired with the rounded codec, so they load against it.
        prior.load(bundle / "prior", codec=model)
        coded = codec.decompress(codec.compress(media, model=model, prior=bundle / "context"), model=model,
                                 prior=bundle / "context")  # fmt: skip
        plain = codec.decompress(codec.compress(media, model=model, prior=None), model=model)
        assert coded.metadata.mode == "prior" and plain.metadata.mode == "packed"
        assert torch.equal(coded.tokens, plain.tokens)  # the context model codes the tokens losslessly
        assert torch.equal(coded.data, plain.data)
        if modality == "image":
            assert tuple(coded.data.shape) == (3, 144, 176)
            original = codec.decompress(codec.compress(media, model=modality, prior=None)).data
            target = codec.media.read_image(media).pixels
            psnr = [-10 * torch.log10((d - target).square().mean()).item() for d in (coded.data, original)]
            assert psnr[0] > psnr[1] - 1.0  # two steps on from the bundled codec, not a broken one
        else:
            assert tuple(coded.data.shape) == (1, 36000) and coded.sample_rate == 24000
